"""The job processor: what happens after a marketplace job, away from the process that ran it.

When a job ends, `job_finished` writes a JobProcessing row and enqueues `process_job` once
the transaction commits. Processing settles whatever the runner left open on chain
(verify a submitted result and accept or dispute it), adds the job to its owner's
statistics exactly once, and sends the owner's webhooks. The row is the durable queue: a
message lost with Redis, or a worker killed mid-task, leaves it due, and the beat's sweep
enqueues it again.

A job whose process died before it ended (no write for `OPS_ORPHAN_AFTER_S`) is
recovered by the chain watcher: its attempts are settled from what the chain says, and
the job is closed (COMPLETED when its last result verifies against the text we hold,
else FAILED) and then processed like any other.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal

import aiohttp
from django.conf import settings
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from marketplace import jobs as job_services
from marketplace import webhooks
from marketplace.chain.contracts import Chain, JobStatus
from marketplace.client import loops
from marketplace.client.verify import job_result_key, verify_result
from marketplace.models import (
    TERMINAL_STATES,
    AttemptState,
    DeadLetter,
    Job,
    JobAttempt,
    JobProcessing,
    JobState,
    ProcessingState,
    UsageStats,
    VerificationRecord,
    VerificationState,
    WebhookEndpoint,
)
from marketplace.queue import DELIVER_WEBHOOK, PROCESS_JOB, enqueue

log = logging.getLogger(__name__)

# Runs of one job's processing before it is a dead letter whatever happened to them (the
# task's own retries stop at 8; this bounds runs that died without counting).
MAX_CLAIMS = 12
# Attempts the runner finished with on chain; anything else may still need settling.
SETTLED_ATTEMPTS = frozenset({AttemptState.ACCEPTED, AttemptState.DISPUTED,
                              AttemptState.REFUNDED, AttemptState.FAILED})


class ProcessingDeferred(Exception):
    """Something the job needs is not possible yet (the chain is down, a deadline has not
    passed); the task retries later. Not a failure of the job."""


# ---- entry points -----------------------------------------------------------------------


def job_finished(*, job_id: uuid.UUID | str) -> None:
    """Queue a finished job's after-work: the row now, the task once this commits."""
    _, created = JobProcessing.objects.get_or_create(
        job_id=job_id, defaults={"next_attempt_at": timezone.now()})
    if not created:  # a recovered job comes back here: due now, not after its backoff
        JobProcessing.objects.filter(job_id=job_id, state=ProcessingState.PENDING).update(
            next_attempt_at=timezone.now())
    transaction.on_commit(lambda: enqueue(PROCESS_JOB, str(job_id)))


def processing_due(*, limit: int = 500) -> list[str]:
    """Rows whose task is due: never sent, lost, retried, or held by a dead worker."""
    now = timezone.now()
    return [str(pk) for pk in JobProcessing.objects.filter(
        state__in=[ProcessingState.PENDING, ProcessingState.RUNNING],
        next_attempt_at__lte=now,
    ).values_list("pk", flat=True)[:limit]]


def jobs_orphaned(*, limit: int = 200) -> list[str]:
    """Jobs not finished and not written to for OPS_ORPHAN_AFTER_S: their process is gone."""
    cutoff = timezone.now() - timedelta(seconds=settings.OPS_ORPHAN_AFTER_S)
    return [str(pk) for pk in Job.objects.exclude(state__in=TERMINAL_STATES)
            .filter(updated__lt=cutoff).values_list("pk", flat=True)[:limit]]


# ---- processing a finished job -------------------------------------------------------------


def _claim(job_id: str) -> JobProcessing | None:
    """Take the row if it is due (PENDING) or its holder's lease ran out (RUNNING)."""
    now = timezone.now()
    claimed = JobProcessing.objects.filter(
        Q(state=ProcessingState.PENDING) | Q(state=ProcessingState.RUNNING),
        pk=job_id, next_attempt_at__lte=now,
    ).update(state=ProcessingState.RUNNING, attempts=F("attempts") + 1,
             next_attempt_at=now + timedelta(seconds=settings.OPS_LEASE_S))
    return JobProcessing.objects.get(pk=job_id) if claimed else None


def job_process(*, job_id: str) -> str:
    """Process one finished job; returns the row's state afterwards ("not-due" when
    another worker holds it or it is done). Raises ProcessingDeferred to be retried."""
    processing = _claim(job_id)
    if processing is None:
        return "not-due"
    if processing.attempts > MAX_CLAIMS:
        # Only a run that never got to record its failure (killed at its hard time limit,
        # its worker lost each time) gets here: stop, and leave it to a person.
        error = f"gave up after {processing.attempts - 1} runs: {processing.last_error}"
        job_processing_fail(job_id=job_id, error=error)
        DeadLetter.objects.create(task=PROCESS_JOB, args=[job_id],
                                  error=error)
        return ProcessingState.FAILED
    job = Job.objects.get(pk=job_id)
    if job.state not in TERMINAL_STATES:
        # Its runner could not close it; the watcher will, and then queues it again.
        job_processing_defer(job_id=job_id, error=f"job is still {job.state}",
                             delay_s=settings.OPS_ORPHAN_AFTER_S)
        return ProcessingState.PENDING
    _channel_attempts_abandon(job)
    try:
        _settle_open_attempts(job)
    except ProcessingDeferred as exc:
        job_processing_defer(job_id=job_id, error=str(exc))
        raise
    job = _with_paid(job)
    _count(job)
    _notify(job)
    JobProcessing.objects.filter(pk=job_id).update(
        state=ProcessingState.DONE, processed_at=timezone.now(), next_attempt_at=None,
        last_error="")
    log.info("job processed", extra={"state": job.state, "tokens": job.tokens,
                                     "paid_wei": str(int(job.paid_wei))})
    return ProcessingState.DONE


def job_processing_defer(*, job_id: str, error: str, delay_s: float | None = None) -> None:
    """Hand the row back: due again after `delay_s` (the beat finds it if the task's own
    retry message is lost)."""
    processing = JobProcessing.objects.get(pk=job_id)
    delay = delay_s if delay_s is not None else min(600, 10 * 2 ** max(processing.attempts - 1, 0))
    JobProcessing.objects.filter(pk=job_id, state=ProcessingState.RUNNING).update(
        state=ProcessingState.PENDING, next_attempt_at=timezone.now() + timedelta(seconds=delay),
        last_error=error[:2000])


def job_processing_fail(*, job_id: str, error: str) -> None:
    JobProcessing.objects.filter(pk=job_id).exclude(state=ProcessingState.DONE).update(
        state=ProcessingState.FAILED, next_attempt_at=None, last_error=error[:2000])


def _with_paid(job: Job) -> Job:
    """The job with what its accepted attempts were paid, settled late or not."""
    paid = sum(int(a.paid_wei) for a in job.attempts.filter(state=AttemptState.ACCEPTED))
    if paid > int(job.paid_wei):  # only a late settlement adds; nothing takes away
        Job.objects.filter(pk=job.pk).update(paid_wei=paid)
        job.paid_wei = Decimal(paid)
    return job


@transaction.atomic
def _count(job: Job) -> None:
    """Add the job to its owner's totals. The flag flips in the same transaction as the
    increment, so a retry or a second worker can never count it twice."""
    if not JobProcessing.objects.filter(pk=job.pk, counted=False).update(counted=True):
        return
    if job.owner_id is None:
        return
    failed = job.state != JobState.COMPLETED
    UsageStats.objects.get_or_create(user_id=job.owner_id)
    UsageStats.objects.filter(user_id=job.owner_id).update(
        jobs=F("jobs") + 1, tokens=F("tokens") + job.tokens,
        cost_wei=F("cost_wei") + Decimal(job.paid_wei),
        failures=F("failures") + (1 if failed else 0), updated=timezone.now())


def _notify(job: Job) -> None:
    """One delivery per endpoint and event; the key is fixed by the job, so a second run
    finds the delivery it made the first time instead of sending another."""
    if job.owner_id is None:
        return
    event = "job.completed" if job.state == JobState.COMPLETED else "job.failed"
    payload = {
        "event": event, "job_id": str(job.pk), "state": job.state, "model": job.model,
        "tokens": job.tokens, "cost_wei": str(int(job.paid_wei)),
        "error_code": job.error_code or None,
        "finished_at": job.finished_at.isoformat() if job.finished_at else None,
    }
    for endpoint in WebhookEndpoint.objects.filter(owner_id=job.owner_id, active=True):
        with transaction.atomic():
            webhooks.webhook_enqueue(url=endpoint.url, event=event, payload=payload,
                                     secret=endpoint.secret, owner_id=job.owner_id,
                                     idempotency_key=f"{event}:{job.pk}:{endpoint.pk}")


# ---- settling attempts on chain ------------------------------------------------------------


@dataclass(frozen=True)
class _Open:
    attempt_id: int
    chain_job_id: int
    state: str
    start_index: int
    max_tokens: int


def _open_attempts(job: Job) -> list[_Open]:
    return [
        _Open(a.pk, a.chain_job_id, a.state, a.start_index, job.max_tokens - a.start_index)
        for a in job.attempts.exclude(state__in=SETTLED_ATTEMPTS).filter(
            chain_job_id__isnull=False).order_by("number")
    ]


async def _settle(chain: Chain, item: _Open) -> dict:
    """Bring one attempt to rest from what the chain says; returns the attempt's fields."""
    on_chain = await chain.get_job(item.chain_job_id)
    status = on_chain.status
    if status in (JobStatus.COMPLETED, JobStatus.RESOLVED):
        paid = on_chain.tokens_used * on_chain.price_per_token_wei
        return {"state": AttemptState.ACCEPTED, "paid_wei": paid,
                "refund_wei": on_chain.escrow_wei - paid, "tokens_billed": on_chain.tokens_used}
    if status in (JobStatus.REFUNDED, JobStatus.CANCELLED):
        return {"state": AttemptState.REFUNDED, "refund_wei": on_chain.escrow_wei}
    if status == JobStatus.DISPUTED:
        return {"state": AttemptState.DISPUTED}
    if status == JobStatus.SUBMITTED:
        submitted = await chain.submitted_result(item.chain_job_id, chain.deployment.block)
        if submitted is None:
            raise ProcessingDeferred(f"job {item.chain_job_id} is submitted but its event is "
                                     "not visible yet")
        record = await VerificationRecord.objects.filter(attempt_id=item.attempt_id).afirst()
        if record is not None:
            return await _settle_delivered(chain, item, submitted, record)
        # No record of the attempt's request (it is written before a byte is streamed):
        # without its secret the result's keyed commitment cannot be checked, so we cannot
        # vouch for it; the arbitrator decides, as for a result that fails verification.
        tx = await chain.dispute(item.chain_job_id, "the attempt's request was not recorded: "
                                 "its result cannot be checked")
        return {"tokens_billed": submitted.tokens_used, "result_hash": submitted.result_hash,
                "result_cid": submitted.cid, "state": AttemptState.DISPUTED,
                "tx": {"dispute": tx}}
    # POSTED or CLAIMED: the host never delivered. Past the deadline the escrow comes back.
    if await chain.block_time() > on_chain.deadline:
        tx = await chain.refund_expired(item.chain_job_id)
        return {"state": AttemptState.REFUNDED, "refund_wei": on_chain.escrow_wei,
                "tx": {"refund": tx}}
    return {"state": AttemptState.ABANDONED}  # the watcher refunds it after the deadline


async def _settle_delivered(chain: Chain, item: _Open, submitted, record) -> dict:
    """Settle a submitted result on what the host delivered, whatever happened to the
    process that ran the job: the result is asked of the host again (it keeps a finished
    stream for a while, marketplace.host.sessions.RETAIN_S), checked against its hash and
    bill, re-scored by the verifier, and accepted or disputed on that alone."""
    from marketplace.client import runner, stream
    from marketplace.client.errors import ClientError
    from marketplace.protocol import GenerationRequest

    request = GenerationRequest.model_validate(record.request)
    attempt = await JobAttempt.objects.aget(pk=item.attempt_id)
    pieces: list[str] = []

    async def on_token(piece: str) -> None:
        pieces.append(piece)

    fields = {"tokens_billed": submitted.tokens_used, "result_hash": submitted.result_hash,
              "result_cid": submitted.cid}
    try:
        end = await stream.stream_job(attempt.host_url, chain_job_id=item.chain_job_id,
                                      chain_id=chain.deployment.chain_id,
                                      node_id=attempt.host_address, request=request,
                                      signer=runner.signer(chain), on_token=on_token)
    except ClientError as exc:
        reason = f"the host did not deliver its result when asked again: {exc.code}"
        tx = await chain.dispute(item.chain_job_id, reason)
        return {**fields, "state": AttemptState.DISPUTED, "error_code": exc.code,
                "tx": {"dispute": tx}}
    key = job_result_key(request.seed, chain.deployment.chain_id, item.chain_job_id)
    verdict = verify_result(text=end.text, result_hash=submitted.result_hash, key=key,
                            tokens=submitted.tokens_used, max_tokens=item.max_tokens)
    gates = verdict.checks["hash"] == 1.0 and submitted.tokens_used == len(pieces)
    checked = await runner.result_check(record.pk, attempt.host_address, end, pieces,
                                        request, gates=gates)
    fields.update(quality=verdict.score, tokens=len(pieces))
    passed = checked.state == VerificationState.PASSED if checked is not None \
        else verdict.accepted
    if gates and passed:
        settled = await chain.accept_result(item.chain_job_id)
        return {**fields, "state": AttemptState.ACCEPTED, "paid_wei": settled.paid_wei,
                "refund_wei": settled.refund, "tx": {"accept": settled.tx_hash},
                "text": request.prefix + end.text}
    reason = ("the result is not what the host committed to or billed" if not gates
              else f"verification failed: {checked.reason}" if checked is not None
              else f"quality {verdict.score:.2f}: {verdict.checks}")
    tx = await chain.dispute(item.chain_job_id, reason[:500])
    return {**fields, "state": AttemptState.DISPUTED, "tx": {"dispute": tx}}


async def _settle_all(items: list[_Open]) -> dict[int, str]:
    """Settle each attempt; returns the whole text of the job up to each attempt whose
    result was fetched again from its host and accepted."""
    from asgiref.sync import sync_to_async

    from marketplace.chain.errors import ChainError
    from marketplace.wallet import platform_chain

    try:
        chain = await platform_chain()
    except ChainError as exc:
        if exc.permanent:
            raise
        raise ProcessingDeferred(f"chain unavailable: {exc.message}") from exc
    texts: dict[int, str] = {}
    for item in items:
        try:
            fields = await _settle(chain, item)
        except ChainError as exc:
            if exc.permanent:
                raise
            raise ProcessingDeferred(f"chain unavailable: {exc.message}") from exc
        except (OSError, TimeoutError, aiohttp.ClientConnectionError) as exc:
            raise ProcessingDeferred(f"chain unreachable: {exc}") from exc
        # Written right after each transaction: a crash here is repaired by the next run,
        # which reads the same outcome back from the chain.
        recovered = fields.pop("text", None)
        if recovered is not None:
            texts[item.attempt_id] = recovered
        await sync_to_async(job_services.attempt_update)(attempt_id=item.attempt_id, **fields)
    return texts


def _channel_attempts_abandon(job: Job) -> int:
    """Attempts paid through a payment channel have nothing to settle on chain: the
    vouchers paid the host as it streamed. One its process left unfinished is ABANDONED:
    the user is not charged for it, and what its vouchers paid (voucher_wei) stays on it
    as the platform's cost."""
    return job.attempts.filter(
        chain_job_id__isnull=True, channel__isnull=False,
        state__in=[AttemptState.POSTED, AttemptState.CLAIMED, AttemptState.STREAMING,
                   AttemptState.SUBMITTED],
    ).update(state=AttemptState.ABANDONED, finished_at=timezone.now())


def _settle_open_attempts(job: Job) -> None:
    items = [i for i in _open_attempts(job) if i.state != AttemptState.ABANDONED]
    if items:
        loops.run_async(_settle_all(items))


# ---- recovering a job whose process died ----------------------------------------------------


def job_recover(*, job_id: str) -> str:
    """Close an orphaned job from what the chain says; returns its state afterwards."""
    cutoff = timezone.now() - timedelta(seconds=settings.OPS_ORPHAN_AFTER_S)
    # The claim: touch `updated` only if it is still stale, so one worker wins and a
    # job that came back to life (its runner wrote again) is left alone.
    if not Job.objects.exclude(state__in=TERMINAL_STATES).filter(
            pk=job_id, updated__lt=cutoff).update(updated=timezone.now()):
        return "not-orphaned"
    job = Job.objects.get(pk=job_id)
    _channel_attempts_abandon(job)
    items = _open_attempts(job)
    texts = loops.run_async(_settle_all(items)) if items else {}
    last = job.attempts.order_by("-number").first()
    paid = sum(int(a.paid_wei) for a in job.attempts.filter(state=AttemptState.ACCEPTED))
    try:
        if (last is not None and last.state == AttemptState.ACCEPTED
                and job.state == JobState.STREAMING):
            # The host's whole result, fetched again and verified, where we have it.
            whole = ({"text": texts[last.pk], "tokens": last.start_index + last.tokens}
                     if last.pk in texts else {})
            job_services.job_transition(job_id=job.pk, to=JobState.COMPLETED, paid_wei=paid,
                                        quality=last.quality, **whole)
        else:
            job_services.job_transition(
                job_id=job.pk, to=JobState.FAILED, paid_wei=paid, error_code="INTERRUPTED",
                error_message="the process running this job stopped; the chain watcher "
                              "settled it")
    except job_services.IllegalTransition:
        pass  # its runner finished it after all
    with transaction.atomic():
        job_finished(job_id=job.pk)
    return Job.objects.values_list("state", flat=True).get(pk=job_id)


def reservations_release_stale() -> int:
    """Release money held for jobs whose process died before settling them."""
    from accounts.errors import ReservationClosed
    from accounts.selectors import reservations_held_before
    from accounts.services import reservation_release

    cutoff = timezone.now() - timedelta(seconds=settings.OPS_RESERVATION_MAX_AGE_S)
    released = 0
    for reservation in reservations_held_before(cutoff=cutoff)[:500]:
        try:
            reservation_release(reservation, reason="released by the sweep: its job never "
                                                    "ended")
        except ReservationClosed:
            continue  # settled by its job in the meantime
        released += 1
    return released


# ---- dead letters -------------------------------------------------------------------------


def dead_letter_replay(*, dead_letter_id: int) -> bool:
    """Send a dead letter's task again, from a clean start; False if already replayed."""
    from celery import current_app

    from marketplace.models import DeadLetter, DeliveryState, WebhookDelivery

    with transaction.atomic():
        letter = DeadLetter.objects.select_for_update().get(pk=dead_letter_id)
        if letter.resolved:
            return False
        first = str(letter.args[0]) if letter.args else None
        # The task's own row decides whether it runs: make it due again.
        if letter.task == PROCESS_JOB and first:
            JobProcessing.objects.filter(pk=first).exclude(state=ProcessingState.DONE).update(
                state=ProcessingState.PENDING, next_attempt_at=timezone.now(), attempts=0)
        elif letter.task == DELIVER_WEBHOOK and first:
            WebhookDelivery.objects.filter(pk=first, state=DeliveryState.FAILED).update(
                state=DeliveryState.PENDING, next_attempt_at=timezone.now())
        letter.resolved = True
        letter.save(update_fields=["resolved"])
        task, args, kwargs = letter.task, list(letter.args), dict(letter.kwargs)
        transaction.on_commit(lambda: current_app.send_task(task, args=args, kwargs=kwargs))
    return True
