"""POST /v1/batch and GET /v1/batch/{id}: thin edges over gateway.batch."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Literal

from django.conf import settings
from django.http import HttpRequest
from ninja import Router, Schema, Status
from pydantic import Field

from accounts.models import Scope
from gateway import batch as batch_services
from gateway.api.auth import KEY_AUTH, require_scope
from gateway.api.errors import ApiError, error_responses
from gateway.api.schemas import ErrorDetail, InferenceIn, Text, Wei, published
from gateway.db import db
from gateway.models import Batch, BatchItem, BatchState, ItemState
from marketplace.client.errors import shown_message

router = Router(tags=["batch"], auth=KEY_AUTH)


class BatchIn(Schema):
    requests: list[InferenceIn] = Field(
        ..., json_schema_extra=published(minItems=1, maxItems=lambda: settings.BATCH_MAX_ITEMS),
        description="At most 100 requests (settings.BATCH_MAX_ITEMS), each like the "
        "body of POST /v1/inference; none is a 400 BATCH_EMPTY, more a 400 BATCH_TOO_LARGE, "
        "an invalid one the code POST /v1/inference answers, with its `index`")
    webhook_url: str = Field("", json_schema_extra=published(
        # (?!\n): Python's $ (schemathesis, many generators) would match before a final
        # newline, which ECMA's $ and the server's full match never do.
        pattern=f"^(?:{batch_services.WEBHOOK_URL})?(?!\\n)$",
        maxLength=batch_services.WEBHOOK_URL_MAX_CHARS), description="An http(s) URL, "
        "POSTed to once, when the last request ends; anything else is a 400 "
        "INVALID_WEBHOOK_URL")
    webhook_secret: Text = Field("", max_length=128, description=(
        "HMAC-SHA256 key of the webhook's signature; one is made (and shown once) when "
        "empty"))


class CountsOut(Schema):
    total: int
    queued: int
    running: int
    succeeded: int
    failed: int


class BatchCreatedOut(Schema):
    id: uuid.UUID
    object: Literal["batch"] = "batch"
    state: BatchState
    counts: CountsOut
    created: datetime
    webhook_url: str | None = None
    webhook_secret: str | None = Field(None, description="Shown once, here")


class ItemOut(Schema):
    index: int
    state: ItemState
    model: str
    text: str | None
    tokens: int
    cost: Wei
    cached: bool
    finish_reason: Literal["stop", "length", "cancelled"] | None
    attempts: int
    job_id: str | None
    error: ErrorDetail | None


class BatchOut(Schema):
    id: uuid.UUID
    object: Literal["batch"] = "batch"
    state: BatchState
    counts: CountsOut
    cost: Wei = Field(description="charged for the batch so far")
    created: datetime
    started_at: datetime | None
    finished_at: datetime | None
    webhook_url: str | None
    items: list[ItemOut]


def _item(item: BatchItem) -> dict:
    failed = item.state == ItemState.FAILED
    return {
        "index": item.index, "state": item.state, "model": item.model,
        "text": item.text if item.state == ItemState.SUCCEEDED else None,
        "tokens": item.tokens, "cost": str(item.cost_wei), "cached": item.cached,
        "finish_reason": item.finish_reason or None, "attempts": item.attempts,
        "job_id": str(item.job_id) if item.job_id else None,
        # A queued item may carry the error of an attempt that will be retried; only a
        # failed one reports it.
        "error": {"code": item.error_code,
                  "message": shown_message(item.error_code, item.error_message)}
        if failed else None,
    }


def _status(*, user_id: int, batch_id: uuid.UUID) -> dict:
    batch = batch_services.batch_get_for_user(user_id=user_id, batch_id=batch_id)
    items = [_item(item) for item in batch.items.order_by("index")]
    # Counted from the items just read, so the counts and the list always agree.
    counts = {"total": batch.total, **{state: 0 for state in ItemState.values}}
    for item in items:
        counts[item["state"]] += 1
    return {"id": batch.pk, "state": batch.state, "counts": counts,
            "cost": str(batch.cost_wei), "created": batch.created,
            "started_at": batch.started_at, "finished_at": batch.finished_at,
            "webhook_url": batch.webhook_url or None, "items": items}


def _create(*, api_key, payload: BatchIn) -> dict:
    created = batch_services.batch_create(
        api_key=api_key,
        requests=[batch_services.ItemRequest(model=r.model, prompt=r.prompt,
                                             max_tokens=r.max_tokens,
                                             temperature=r.temperature,
                                             max_price_per_token=r.max_price_per_token)
                  for r in payload.requests],
        webhook_url=payload.webhook_url, webhook_secret=payload.webhook_secret)
    batch = created.batch
    return {"id": batch.pk, "state": batch.state,
            "counts": {"total": batch.total, "queued": batch.total, "running": 0,
                       "succeeded": 0, "failed": 0},
            "created": batch.created, "webhook_url": batch.webhook_url or None,
            "webhook_secret": created.webhook_secret or None}


@router.post("", response={202: BatchCreatedOut, **error_responses(400, 403, body=True)},
             summary="Submit up to 100 inference requests to run in the background")
async def batch_submit(request: HttpRequest, payload: BatchIn):
    key = require_scope(request, Scope.BATCH)
    try:
        return Status(202, await db(_create, api_key=key, payload=payload))
    except batch_services.BatchError as exc:
        raise ApiError(exc.status, exc.code, exc.message, **exc.extra) from None


@router.get("/{batch_id}", response={200: BatchOut, **error_responses(403, 404)},
            summary="A batch's state and each request's result")
async def batch_status(request: HttpRequest, batch_id: str):
    key = require_scope(request, Scope.BATCH)
    try:
        return await db(_status, user_id=key.user_id, batch_id=uuid.UUID(batch_id))
    except (ValueError, Batch.DoesNotExist):
        raise ApiError(404, "NOT_FOUND", f"no batch {batch_id}") from None


def _cancel(*, user_id: int, batch_id: uuid.UUID) -> dict:
    batch_services.batch_cancel(user_id=user_id, batch_id=batch_id)
    return _status(user_id=user_id, batch_id=batch_id)


@router.post("/{batch_id}/cancel",
             response={200: BatchOut, **error_responses(403, 404, 409, body=True)},
             summary="Cancel a batch: queued requests fail with CANCELLED, uncharged")
async def batch_cancel(request: HttpRequest, batch_id: str):
    """Requests still queued end at once, failed with CANCELLED and never charged; those
    already running finish and are billed for what they deliver, and the batch then ends
    as `cancelled` (its webhook is sent). Cancelling it again changes nothing; a batch
    that has completed answers 409 BATCH_FINISHED."""
    key = require_scope(request, Scope.BATCH)
    try:
        return await db(_cancel, user_id=key.user_id, batch_id=uuid.UUID(batch_id))
    except (ValueError, Batch.DoesNotExist):
        raise ApiError(404, "NOT_FOUND", f"no batch {batch_id}") from None
    except batch_services.BatchError as exc:
        raise ApiError(exc.status, exc.code, exc.message, **exc.extra) from None
