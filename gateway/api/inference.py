"""POST /v1/inference, GET /v1/inference/{id}, POST /v1/inference/{id}/cancel."""

from __future__ import annotations

import asyncio
import uuid

from django.conf import settings
from django.http import HttpRequest
from ninja import Router, Status

from accounts.models import Scope
from gateway.api.auth import KEY_AUTH, require_scope
from gateway.api.errors import ApiError, error_responses
from gateway.api.schemas import InferenceIn, InferenceOut
from gateway.db import db
from gateway.inference import InferenceResult, inference_start, inference_validate
from gateway.models.requests import GatewayRequest
from marketplace.client.errors import shown_message

router = Router(tags=["inference"], auth=KEY_AUTH)

# Cancel events of the requests running in this process, by request id.
_cancels: dict[uuid.UUID, asyncio.Event] = {}

# What a billed run may answer besides its result: a bad request, too little money, no
# scope, a cancelled job, a failed job or upstream, no host for the model now.
RUN_ERRORS = error_responses(400, 402, 403, 409, 502, 503, body=True)


def result_out(result: InferenceResult) -> dict:
    return {"id": str(result.request_id), "status": "cancelled"
            if result.finish_reason == "cancelled" else "done", "model": result.model,
            "text": result.text, "tokens": result.tokens, "cost": str(result.cost_wei),
            "cached": result.cached, "finish_reason": result.finish_reason,
            "host": result.host, "job_id": result.job_id or None}


def record_out(record: GatewayRequest) -> dict:
    error = {"code": record.error_code,
             "message": shown_message(record.error_code, record.error_message)} \
        if record.error_code else None
    return {"id": str(record.id), "status": record.status, "model": record.model,
            "text": record.text, "tokens": record.tokens, "cost": str(record.cost_wei),
            "cached": record.cached, "finish_reason": record.finish_reason or None,
            "host": record.host or None, "job_id": record.job_id or None, "error": error}


async def start(request: HttpRequest, *, endpoint: str, model: str, prompt: str,
                max_tokens: int, temperature: float, on_token=None,
                max_price_per_token: int | str | None = None, **chat):
    """Validate, then run the request detached from this HTTP request (so a client that
    hangs up or a 202 never leaves money held); `chat`: a chat's messages and options
    (gateway.inference.inference_run). Returns (task, cancel, recorded, id)."""
    key = require_scope(request, Scope.INFERENCE)
    ceiling = inference_validate(model=model, prompt=prompt, max_tokens=max_tokens,
                                 temperature=temperature, max_price_per_token=max_price_per_token)
    request_id = uuid.uuid4()
    cancel, recorded = asyncio.Event(), asyncio.Event()
    task = inference_start(api_key=key, model=model, prompt=prompt, max_tokens=max_tokens,
                           temperature=temperature, reference=f"gateway:{request_id}",
                           on_token=on_token, cancel=cancel, endpoint=endpoint,
                           request_id=request_id, recorded=recorded,
                           max_price_per_token=ceiling,
                           timing=getattr(request, "timing", None), **chat)
    _cancels[request_id] = cancel
    task.add_done_callback(lambda _: _cancels.pop(request_id, None))
    return task, cancel, recorded, request_id


async def wait(task: asyncio.Task, cancel: asyncio.Event, seconds: float | None) -> bool:
    """Wait up to `seconds` (None: no limit) for the task; a client that hangs up cancels
    the job."""
    try:
        await asyncio.wait({task}, timeout=seconds)
    except asyncio.CancelledError:
        cancel.set()
        raise
    return task.done()


@router.post("/inference", response={200: InferenceOut, 202: InferenceOut, **RUN_ERRORS},
             summary="Generate text; waits up to GATEWAY_WAIT_S, else 202 and poll")
async def inference(request: HttpRequest, body: InferenceIn):
    task, cancel, recorded, request_id = await start(
        request, endpoint="inference", model=body.model, prompt=body.prompt,
        max_tokens=body.max_tokens, temperature=body.temperature,
        max_price_per_token=body.max_price_per_token)
    if not await wait(task, cancel, settings.GATEWAY_WAIT_S):
        # The record must exist before its id is handed out for polling.
        waiter = asyncio.ensure_future(recorded.wait())
        await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
    if task.done():
        return Status(200, result_out(task.result()))  # a GatewayError goes to its handler
    return Status(202, {"id": str(request_id), "status": "running", "model": body.model,
                 "poll": f"/v1/inference/{request_id}"})


@router.get("/inference/{request_id}",
            response={200: InferenceOut, **error_responses(400, 403, 404)},
            summary="A request's status and, once done, its result")
async def inference_get(request: HttpRequest, request_id: uuid.UUID):
    key = require_scope(request, Scope.INFERENCE)
    record = await db(lambda: GatewayRequest.objects.filter(
        pk=request_id, user_id=key.user_id).first())
    if record is None:
        raise ApiError(404, "NOT_FOUND", f"no request {request_id}")
    return record_out(record)


@router.post("/inference/{request_id}/cancel",
             response={200: InferenceOut,
                       **error_responses(400, 403, 404, 409, body=True)},
             summary="Stop a running request; only what was generated is billed")
async def inference_cancel(request: HttpRequest, request_id: uuid.UUID):
    key = require_scope(request, Scope.INFERENCE)
    record = await db(lambda: GatewayRequest.objects.filter(
        pk=request_id, user_id=key.user_id).first())
    if record is None:
        raise ApiError(404, "NOT_FOUND", f"no request {request_id}")
    cancel = _cancels.get(request_id)
    if cancel is None:
        if record.status != "running":
            return record_out(record)
        raise ApiError(409, "NOT_CANCELLABLE", "the request runs in another server process; "
                       "cancel it there or wait for it")
    cancel.set()
    return record_out(record)
