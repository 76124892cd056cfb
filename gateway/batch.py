"""Batches: many inference requests submitted at once, each run and billed on its own.

`batch_create` validates every request, writes the batch and its items in one transaction
and queues the items once it commits. A worker runs `batch_item_process` for each item:
it claims the row with a conditional UPDATE (so two workers never run the same item), runs
it through `inference_run` with the item's own billing reference (so a retried item is
charged at most once), and records the result. The item that ends last finishes the batch
under the batch row's lock, exactly once, and enqueues its webhook.
"""

from __future__ import annotations

import asyncio
import logging
import re
import secrets
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import close_old_connections, transaction
from django.db.models import Count, F, Q
from django.utils import timezone

from accounts.errors import BillingError, ReservationClosed
from accounts.models import ApiKey, Reservation, ReservationState
from accounts.services import reservation_release
from gateway.db import db
from gateway.errors import GatewayError
from gateway.models import Batch, BatchItem, BatchState, GatewayRequest, ItemState, RequestStatus
from marketplace import webhooks
from marketplace.client.errors import ClientError
from marketplace.models import DeadLetter
from marketplace.queue import send
from outbound.errors import UnsafeURL
from outbound.policy import url_check

log = logging.getLogger(__name__)

WEBHOOK_EVENT = "batch.completed"
REQUEUE_WAITS_S = (1, 2, 4, 8, 16)
ITEM_TASK = "marketplace.gateway.tasks.batch_items_run"
DONE_STATES = (BatchState.COMPLETED, BatchState.CANCELLED)


class BatchError(Exception):
    """A batch request that cannot be accepted. `status` is the HTTP status it maps to."""

    def __init__(self, code: str, message: str, *, status: int = 400, **extra: Any):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.status = status
        self.extra = extra


# ---- Creating a batch ---------------------------------------------------------------


@dataclass(frozen=True)
class ItemRequest:
    model: str
    prompt: str
    max_tokens: int
    temperature: float
    max_price_per_token: int | str | None = None


def _validate_like_inference(request: ItemRequest) -> None:
    """The checks POST /v1/inference makes, with its codes: the gateway's own validator,
    so the two never drift apart. Raises GatewayError."""
    from gateway.inference import inference_validate

    inference_validate(model=request.model, prompt=request.prompt,
                       max_tokens=request.max_tokens, temperature=request.temperature,
                       max_price_per_token=request.max_price_per_token)


# A webhook URL, as one pattern that the API's schema publishes as it is: http(s), an
# optional user:password@, a host name or address (ASCII: a name in punycode) or an
# [IPv6] address, an optional port, then any visible ASCII.
WEBHOOK_URL = (r"https?://(?:[A-Za-z0-9._~%!$&'()*+,;=:-]*@)?"
               r"(?:[A-Za-z0-9._~%!$&'()*+,;=-]+|\[[0-9A-Fa-f:.]+\])"
               r"(?::[0-9]{1,5})?(?:[/?#][!-~]*)?")
WEBHOOK_URL_MAX_CHARS = 500


def webhook_url_check_syntax(url: str) -> None:
    """The URL's form, as the API's schema publishes it (WEBHOOK_URL)."""
    if not re.fullmatch(WEBHOOK_URL, url):
        raise BatchError("INVALID_WEBHOOK_URL", f"{url!r} is not an http(s) URL")
    if len(url) > WEBHOOK_URL_MAX_CHARS:
        raise BatchError("INVALID_WEBHOOK_URL", f"the webhook URL is longer than "
                         f"{WEBHOOK_URL_MAX_CHARS} characters")


def _check_webhook_url(url: str) -> None:
    """The form, then where it leads (outbound's policy: no address of our own network),
    which no schema can say: a valid-looking URL may still be a 400 URL_*."""
    webhook_url_check_syntax(url)
    try:
        url_check(url)  # checked again at every delivery: what a name resolves to changes
    except UnsafeURL as exc:
        raise BatchError(exc.code, exc.message) from None


@dataclass(frozen=True)
class NewBatch:
    batch: Batch
    webhook_secret: str  # shown once to the caller; "" when there is no webhook


def batch_create(*, api_key: ApiKey, requests: list[ItemRequest], webhook_url: str = "",
                 webhook_secret: str = "") -> NewBatch:
    """Validate every request, write the batch and its items, queue them on commit.

    Raises BatchError (400): BATCH_EMPTY, BATCH_TOO_LARGE (more than
    settings.BATCH_MAX_ITEMS), INVALID_WEBHOOK_URL, a URL code of outbound.policy
    (URL_NOT_ALLOWED for one that points at no public address), or the inference code of
    the first invalid item with its `index`. Nothing is written unless every item is valid.
    """
    limit = settings.BATCH_MAX_ITEMS
    if not requests:
        raise BatchError("BATCH_EMPTY", "a batch needs at least one request")
    if len(requests) > limit:
        raise BatchError("BATCH_TOO_LARGE", f"a batch holds at most {limit} requests, got "
                         f"{len(requests)}", limit=limit, count=len(requests))
    for index, request in enumerate(requests):
        try:
            _validate_like_inference(request)
        except GatewayError as exc:
            raise BatchError(exc.code, f"requests[{index}]: {exc.message}", index=index,
                             **exc.extra) from exc
    if webhook_url:
        _check_webhook_url(webhook_url)
        webhook_secret = webhook_secret or "whsec_" + secrets.token_hex(32)
    else:
        webhook_secret = ""
    with transaction.atomic():
        batch = Batch.objects.create(owner_id=api_key.user_id, api_key=api_key,
                                     total=len(requests), webhook_url=webhook_url,
                                     webhook_secret=webhook_secret)
        items = BatchItem.objects.bulk_create(
            BatchItem(batch=batch, index=index, model=r.model, prompt=r.prompt,
                      params={"max_tokens": r.max_tokens, "temperature": r.temperature,
                              # Wei as text: JSON numbers lose precision past 2^53.
                              **({"max_price_per_token": str(r.max_price_per_token)}
                                 if r.max_price_per_token is not None else {})})
            for index, r in enumerate(requests))
        ids = [item.pk for item in items]
        transaction.on_commit(lambda: batch_items_enqueue(item_ids=ids))
    return NewBatch(batch=batch, webhook_secret=webhook_secret)


def batch_items_enqueue(*, item_ids: list[int], countdown: float = 0) -> None:
    """Send the items to the workers, a few to a task (settings.BATCH_ITEMS_PER_TASK): a
    worker runs one task's items together on its event loop, as a host decodes several
    jobs together."""
    size = max(1, settings.BATCH_ITEMS_PER_TASK)
    for start in range(0, len(item_ids), size):
        chunk = item_ids[start:start + size]
        if countdown:
            send(ITEM_TASK, chunk, countdown=countdown)
        else:
            send(ITEM_TASK, chunk)


# ---- Running an item ----------------------------------------------------------------


def retry_delay(attempt: int) -> timedelta:
    """BATCH_RETRY_BASE_S, twice that, four times ... after the 1st, 2nd, 3rd failure."""
    return timedelta(seconds=settings.BATCH_RETRY_BASE_S * 2 ** max(attempt - 1, 0))


def lease() -> timedelta:
    # Longer than an item may run (the task cancels it at BATCH_ITEM_TIMEOUT_S), so a
    # live worker never loses its claim; a dead one's claim expires a little later.
    return timedelta(seconds=settings.BATCH_ITEM_TIMEOUT_S + settings.BATCH_LEASE_GRACE_S)


def batch_item_claim(*, item_id: int) -> BatchItem | None:
    """Take the item if it is queued and due, or if its holder's lease ran out (the
    worker died). The conditional UPDATE is the lock: of two workers, one gets the row."""
    now = timezone.now()
    claimed = BatchItem.objects.filter(
        Q(state=ItemState.QUEUED, not_before__isnull=True)
        | Q(state=ItemState.QUEUED, not_before__lte=now)
        | Q(state=ItemState.RUNNING, lease_until__lt=now),
        pk=item_id, attempts__lt=settings.BATCH_ITEM_MAX_ATTEMPTS,
    ).update(state=ItemState.RUNNING, attempts=F("attempts") + 1,
             lease_until=now + lease(), started_at=now)
    if not claimed:
        return None
    item = BatchItem.objects.select_related(
        "batch", "batch__api_key", "batch__api_key__user", "batch__api_key__user__account",
    ).get(pk=item_id)
    if item.batch.state == BatchState.QUEUED:
        Batch.objects.filter(pk=item.batch_id, state=BatchState.QUEUED).update(
            state=BatchState.RUNNING, started_at=now)
    return item


def _finish(*, item_id: int, state: str, **fields: Any) -> bool:
    """Record an item's end; the item that ends last finishes the batch. False when the
    item was not running (another worker already recorded it)."""
    with transaction.atomic():
        batch_id = BatchItem.objects.values_list("batch_id", flat=True).get(pk=item_id)
        # The batch row's lock orders every item end of this batch: the counts never
        # miss one, and exactly one of them sees the last item and finishes the batch.
        batch = Batch.objects.select_for_update().get(pk=batch_id)
        now = timezone.now()
        updated = BatchItem.objects.filter(pk=item_id, state=ItemState.RUNNING).update(
            state=state, finished_at=now, lease_until=None, **fields)
        if not updated:
            return False
        if state == ItemState.SUCCEEDED:
            batch.succeeded += 1
            batch.cost_wei += int(fields.get("cost_wei", 0))
        else:
            batch.failed += 1
        changed = ["succeeded", "failed", "cost_wei"] + _close_if_done(batch, now=now)
        batch.save(update_fields=changed)
    return True


def _close_if_done(batch: Batch, *, now) -> list[str]:
    """End the batch (row locked by the caller) once every item has ended: completed, or
    cancelled if it was; its webhook is queued then. The fields changed."""
    if batch.finished_count < batch.total or batch.state in DONE_STATES:
        return []
    batch.state = BatchState.CANCELLED if batch.cancelled_at else BatchState.COMPLETED
    batch.finished_at = now
    changed = ["state", "finished_at"]
    if batch.webhook_url:
        batch.webhook = webhooks.webhook_enqueue(
            url=batch.webhook_url, event=WEBHOOK_EVENT,
            payload=batch_webhook_payload(batch=batch), secret=batch.webhook_secret,
            idempotency_key=f"{WEBHOOK_EVENT}:{batch.pk}", owner_id=batch.owner_id)
        changed.append("webhook")
    return changed


def batch_cancel(*, user_id: int, batch_id) -> Batch:
    """Cancel a batch: its queued items fail at once with CANCELLED and are never charged
    (a queued item holds no reservation); items already running finish and are billed
    for what they deliver, and the batch ends, as cancelled, with the last of them.
    Cancelling a cancelled batch changes nothing; a completed one raises BatchError."""
    with transaction.atomic():
        batch = Batch.objects.select_for_update().get(pk=batch_id, owner_id=user_id)
        if batch.state == BatchState.COMPLETED:
            raise BatchError("BATCH_FINISHED", "the batch has already completed", status=409)
        if batch.cancelled_at is not None:
            return batch
        now = timezone.now()
        stopped = BatchItem.objects.filter(batch=batch, state=ItemState.QUEUED).update(
            state=ItemState.FAILED, error_code="CANCELLED",
            error_message="the batch was cancelled", finished_at=now, lease_until=None)
        batch.failed += stopped
        batch.cancelled_at = now
        changed = ["failed", "cancelled_at"] + _close_if_done(batch, now=now)
        batch.save(update_fields=changed)
    return batch


def batch_item_succeed(*, item_id: int, result: Any) -> bool:
    return _finish(item_id=item_id, state=ItemState.SUCCEEDED, text=result.text,
                   tokens=int(result.tokens), cost_wei=int(result.cost_wei),
                   cached=bool(getattr(result, "cached", False)),
                   finish_reason=str(getattr(result, "finish_reason", "") or "")[:20],
                   host=str(getattr(result, "host", "") or "")[:300],
                   job_id=_uuid_or_none(getattr(result, "job_id", None)),
                   error_code="", error_message="")


def batch_item_fail(*, item_id: int, code: str, message: str, dead_letter: bool = False
                    ) -> bool:
    """The item failed for good: recorded on the item, and when it used up its retries
    (not when the request itself was refused), as a dead letter for a person to see."""
    with transaction.atomic():
        recorded = _finish(item_id=item_id, state=ItemState.FAILED, error_code=code[:40],
                           error_message=message)
        if recorded and dead_letter:
            DeadLetter.objects.create(task=ITEM_TASK, args=[[item_id]],
                                      error=f"{code}: {message}")
    return recorded


def batch_item_requeue(*, item_id: int, code: str, message: str) -> timedelta | None:
    """Put a running item back in the queue after a failure that may pass; returns how
    long it waits, or None when it used up its attempts (then it is failed for good)."""
    item = BatchItem.objects.only("attempts").get(pk=item_id)
    if item.attempts >= settings.BATCH_ITEM_MAX_ATTEMPTS:
        batch_item_fail(item_id=item_id, code=code,
                        message=f"gave up after {item.attempts} attempts: {message}",
                        dead_letter=True)
        return None
    delay = retry_delay(item.attempts)
    BatchItem.objects.filter(pk=item_id, state=ItemState.RUNNING).update(
        state=ItemState.QUEUED, not_before=timezone.now() + delay, lease_until=None,
        error_code=code[:40], error_message=message)
    return delay


def _uuid_or_none(value: Any):
    import uuid

    if value is None or value == "":
        return None
    try:
        return uuid.UUID(str(value))
    except ValueError:
        return None


def _error_fields(exc: BaseException) -> tuple[str, str, bool]:
    """(code, message, retry) of a failed run. The gateway's errors say whether they are
    permanent; for a batch, which nobody is waiting on, a network with no free host or an
    unreachable chain is worth waiting out, within the bounded retries."""
    code = str(getattr(exc, "code", "") or type(exc).__name__.upper())
    message = str(getattr(exc, "message", "") or exc)
    permanent = getattr(exc, "permanent", None)
    if code in settings.BATCH_RETRY_CODES:
        return code, message, True
    if permanent is None:
        permanent = code in settings.BATCH_PERMANENT_CODES
    return code, message, not permanent


def item_reference(item_id: int, attempt: int) -> str:
    """The billing reference of one attempt at an item: batch:<id> for the first, then
    batch:<id>:<n>. A reservation's reference is used once (a released one cannot be
    reserved again), so each attempt has its own, and batch_item_reconcile makes sure at
    most one of them is ever settled."""
    return f"batch:{item_id}" if attempt <= 1 else f"batch:{item_id}:{attempt}"


def batch_item_reconcile(*, item: BatchItem) -> GatewayRequest | Reservation | None:
    """Before attempt n runs, close what attempts 1..n-1 left. One that was settled (its
    worker died after charging, before recording) means the item is done: its request
    record is returned (or its reservation, when even that record was not finished) and
    nothing runs again. One still held (its worker died mid-run) is released: released,
    it can never be settled, so the item is charged at most once whatever that worker
    does next."""
    references = [item_reference(item.pk, n) for n in range(1, item.attempts)]
    settled = None
    for reservation in Reservation.objects.filter(reference__in=references):
        if reservation.state == ReservationState.HELD:
            try:
                reservation = reservation_release(reservation, reason="batch item retried")
            except ReservationClosed:
                reservation.refresh_from_db()  # it was settled just now, by that worker
            else:
                GatewayRequest.objects.filter(
                    reference=reservation.reference, status=RequestStatus.RUNNING,
                ).update(status=RequestStatus.FAILED, error_code="WORKER_LOST",
                         error_message="the worker running it stopped; retried",
                         finished_at=timezone.now())
        if reservation.state == ReservationState.SETTLED:
            settled = reservation
    if settled is None:
        return None
    record = GatewayRequest.objects.filter(reference=settled.reference,
                                           status=RequestStatus.DONE).first()
    return record or settled


def _recover(*, item_id: int, found: GatewayRequest | Reservation) -> ItemOutcome:
    if isinstance(found, GatewayRequest):
        batch_item_succeed(item_id=item_id, result=found)
        return ItemOutcome(item_id, "succeeded")
    batch_item_fail(item_id=item_id, code="RESULT_LOST", message=(
        f"an earlier attempt was charged {found.charged_wei} wei ({found.reference}) but its "
        "result was not recorded"), dead_letter=True)
    return ItemOutcome(item_id, "failed")


def _held_for(*, item_id: int) -> float | None:
    """Seconds until the claim on a running item runs out; None if it is not running.
    A task redelivered after its worker died finds the dead worker's claim still held:
    it comes back when the claim has run out rather than leaving the item to the sweep."""
    lease_until = BatchItem.objects.filter(pk=item_id, state=ItemState.RUNNING).values_list(
        "lease_until", flat=True).first()
    if lease_until is None:
        return None
    return max((lease_until - timezone.now()).total_seconds(), 0.0) + 1.0


def _run_options(item: BatchItem) -> dict[str, Any]:
    return {"model": item.model, "prompt": item.prompt,
            "max_tokens": int(item.params.get("max_tokens", 64)),
            "temperature": float(item.params.get("temperature", 0.7)),
            "max_price_per_token": item.params.get("max_price_per_token")}


@dataclass(frozen=True)
class ItemOutcome:
    item_id: int
    status: str  # succeeded, failed, retry (after retry_in_s), held (by another worker,
    # whose claim runs out in retry_in_s), skipped (finished, or not due), stranded (could
    # not be put back: its lease runs out and the sweep sends it again)
    retry_in_s: float = 0.0


def _key_refusal(api_key: ApiKey | None) -> tuple[str, str] | None:
    """Why the batch's key may no longer run anything, if it may not."""
    if api_key is None:
        return "API_KEY_DELETED", "the batch's API key was deleted"
    if api_key.revoked_at is not None:
        return "API_KEY_REVOKED", "the batch's API key was revoked"
    if api_key.expires_at is not None and api_key.expires_at <= timezone.now():
        return "API_KEY_EXPIRED", "the batch's API key has expired"
    return None


async def batch_item_process(*, item_id: int) -> ItemOutcome:
    """Run one item to its end. Safe to call twice or from two workers: only the claim's
    winner runs it, and no attempt runs while an earlier one could still be charged."""
    from gateway.inference import inference_run

    item = await db(batch_item_claim, item_id=item_id)
    if item is None:
        held_for = await db(_held_for, item_id=item_id)
        if held_for is not None:
            return ItemOutcome(item_id, "held", held_for)
        return ItemOutcome(item_id, "skipped")
    if item.attempts > 1:
        found = await db(batch_item_reconcile, item=item)
        if found is not None:
            return await db(_recover, item_id=item_id, found=found)
    api_key = item.batch.api_key
    refusal = _key_refusal(api_key)
    if refusal is not None:  # the key went after the batch was submitted: nothing runs
        await db(batch_item_fail, item_id=item_id, code=refusal[0], message=refusal[1])
        return ItemOutcome(item_id, "failed")
    try:
        result = await asyncio.wait_for(
            inference_run(api_key=api_key, reference=item_reference(item.pk, item.attempts),
                          endpoint="batch", **_run_options(item)),
            timeout=settings.BATCH_ITEM_TIMEOUT_S)
    except (GatewayError, BillingError, ClientError) as exc:
        code, message, retry = _error_fields(exc)
    except TimeoutError:
        code, message, retry = ("TIMEOUT", f"no answer within {settings.BATCH_ITEM_TIMEOUT_S} s",
                                True)
    else:
        await db(batch_item_succeed, item_id=item_id, result=result)
        return ItemOutcome(item_id, "succeeded")
    if retry:
        delay = await db(batch_item_requeue, item_id=item_id, code=code, message=message)
        if delay is not None:
            log.info("batch item %s: %s, retrying in %s", item_id, code, delay)
            return ItemOutcome(item_id, "retry", delay.total_seconds())
        return ItemOutcome(item_id, "failed")
    await db(batch_item_fail, item_id=item_id, code=code, message=message)
    return ItemOutcome(item_id, "failed")


async def batch_items_process(*, item_ids: list[int]) -> list[ItemOutcome]:
    """Run several items together. An item that raises something unexpected goes back
    to the queue (or, if even that fails, waits for its lease to run out)."""
    # The marketplace client's own database calls go to asgiref's one thread for code
    # outside a request; its connection is checked here, as a request would.
    await sync_to_async(close_old_connections)()
    outcomes = await asyncio.gather(*(batch_item_process(item_id=i) for i in item_ids),
                                    return_exceptions=True)
    done: list[ItemOutcome] = []
    for item_id, outcome in zip(item_ids, outcomes, strict=True):
        if isinstance(outcome, ItemOutcome):
            done.append(outcome)
            continue
        if not isinstance(outcome, Exception):
            raise outcome  # CancelledError, KeyboardInterrupt: not ours to swallow
        log.error("batch item %s failed unexpectedly", item_id, exc_info=outcome)
        message = f"{type(outcome).__name__}: {outcome}"[:500]
        delay: timedelta | None = None
        status = "failed"
        # What failed is often the database itself (a restart, no free connection):
        # putting the item back is tried a few times before leaving it to its lease.
        for wait in REQUEUE_WAITS_S:
            try:
                delay = await db(batch_item_requeue, item_id=item_id, code="INTERNAL_ERROR",
                                 message=message)
            except Exception:
                log.warning("batch item %s could not be put back yet", item_id,
                            exc_info=True)
                status = "stranded"
                await asyncio.sleep(wait)
            else:
                status = "retry" if delay is not None else "failed"
                break
        if status == "stranded":
            log.error("batch item %s left to its lease and the sweep", item_id)
        done.append(ItemOutcome(item_id, status, delay.total_seconds() if delay else 0.0))
    return done


def batch_items_stuck(*, limit: int = 1000, queued_too: bool = True) -> list[int]:
    """Items nobody is working on although they should be: held by a worker whose lease
    ran out, and (with queued_too) queued and due for a while, their task lost with a
    broker that lost its messages."""
    now = timezone.now()
    grace = timedelta(seconds=settings.BATCH_STUCK_AFTER_S)
    stuck = Q(state=ItemState.RUNNING, lease_until__lt=now)
    if queued_too:
        stuck |= (Q(state=ItemState.QUEUED, created__lt=now - grace, not_before__isnull=True)
                  | Q(state=ItemState.QUEUED, not_before__lt=now - grace))
    return list(BatchItem.objects.filter(stuck).order_by("pk")
                .values_list("pk", flat=True)[:limit])


def batch_items_exhausted() -> int:
    """Items whose worker died on every attempt: failed for good, each a dead letter."""
    now = timezone.now()
    ids = BatchItem.objects.filter(
        state=ItemState.RUNNING, lease_until__lt=now,
        attempts__gte=settings.BATCH_ITEM_MAX_ATTEMPTS,
    ).values_list("pk", flat=True)
    count = 0
    for item_id in list(ids):
        count += batch_item_fail(item_id=item_id, code="WORKER_LOST",
                                 message="the worker running the item stopped on every attempt",
                                 dead_letter=True)
    return count


def batch_items_reopen(*, item_ids: list[int], now=None) -> int:
    """Staff replay of failed items: queued again with fresh attempts, their batches
    running again. The billing reference is unchanged, so nothing is charged twice; the
    batch's webhook keeps its idempotency key and is not sent a second time."""
    now = now or timezone.now()
    reopened = 0
    with transaction.atomic():
        batch_ids = set(BatchItem.objects.filter(pk__in=item_ids, state=ItemState.FAILED)
                        .values_list("batch_id", flat=True))
        for batch in Batch.objects.select_for_update().filter(pk__in=batch_ids):
            ids = list(batch.items.filter(pk__in=item_ids, state=ItemState.FAILED)
                       .values_list("pk", flat=True))
            BatchItem.objects.filter(pk__in=ids).update(
                state=ItemState.QUEUED, attempts=0, not_before=None, lease_until=None,
                finished_at=None, error_code="", error_message="")
            batch.failed -= len(ids)
            batch.state, batch.finished_at = BatchState.RUNNING, None
            batch.save(update_fields=["failed", "state", "finished_at"])
            reopened += len(ids)
            transaction.on_commit(lambda ids=ids: batch_items_enqueue(item_ids=ids))
    return reopened


# ---- Reading a batch ----------------------------------------------------------------


def batch_get_for_user(*, user_id: int, batch_id) -> Batch:
    """The batch if `user_id` owns it; Batch.DoesNotExist otherwise (another user's batch
    and a batch that does not exist look the same)."""
    return Batch.objects.get(pk=batch_id, owner_id=user_id)


def batch_counts(*, batch: Batch) -> dict[str, int]:
    found = dict(batch.items.values_list("state").annotate(n=Count("id")).order_by())
    return {"total": batch.total, **{state: found.get(state, 0) for state in ItemState.values}}


def batch_webhook_payload(*, batch: Batch) -> dict[str, Any]:
    return {
        "event": WEBHOOK_EVENT,
        "batch": {
            "id": str(batch.pk), "state": batch.state,
            "counts": {"total": batch.total, "succeeded": batch.succeeded,
                       "failed": batch.failed},
            "cost_wei": str(batch.cost_wei),
            "created": batch.created.isoformat(),
            "finished_at": batch.finished_at.isoformat() if batch.finished_at else None,
        },
    }
