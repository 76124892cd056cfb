"""Celery tasks of the marketplace. Each takes ids, claims its row atomically and is safe
to run twice; the work itself lives in services (processor, webhooks, refunds).

Every task acks late and is requeued when its worker dies (the broker redelivers it), has
a time limit, and retries with backoff to a bound; what finally fails becomes a
DeadLetter that admin can replay. See docs/operations.md."""

from __future__ import annotations

import logging
from contextlib import contextmanager

from celery import Task, shared_task

from marketplace import processor, webhooks
from marketplace.client import loops
from marketplace.queue import enqueue
from observability.logging import job_id_var

log = logging.getLogger(__name__)


class OpsTask(Task):
    """Late acks, requeue on a lost worker, and a dead letter once retries run out."""

    acks_late = True
    reject_on_worker_lost = True
    max_retries = 8  # 10 s, 20 s, ... 10 min between tries: about half an hour in all

    def on_failure(self, exc, task_id, args, kwargs, einfo):
        from marketplace.models import DeadLetter

        DeadLetter.objects.create(task=self.name, args=list(args), kwargs=dict(kwargs),
                                  error=f"{type(exc).__name__}: {exc}"[:10000])
        log.error("task %s%r failed for good: %s", self.name, tuple(args), exc)


@shared_task(acks_late=True, reject_on_worker_lost=True, time_limit=60, soft_time_limit=45)
def deliver_webhook(delivery_id: str) -> str:
    state = webhooks.webhook_attempt(delivery_id=delivery_id)
    if state == "PENDING":
        delivery_retry_at = webhooks.WebhookDelivery.objects.get(pk=delivery_id).next_attempt_at
        deliver_webhook.apply_async((delivery_id,), eta=delivery_retry_at)
    return state


@shared_task(acks_late=True, time_limit=120, soft_time_limit=100)
def retry_due_webhooks() -> int:
    """Beat, every minute: resend what is due, whatever happened to its scheduled retry."""
    due = webhooks.webhooks_due()
    for delivery_id in due:
        deliver_webhook.delay(delivery_id)
    return len(due)


@shared_task(acks_late=True, time_limit=300, soft_time_limit=240)
def refund_abandoned_attempts() -> int:
    """Beat, every minute: refund (or dispute) on-chain jobs whose host let us down."""
    from marketplace.client.refunds import refund_abandoned
    from marketplace.wallet import platform_chain

    async def run() -> int:
        return await refund_abandoned(await platform_chain())

    return loops.run_async(run())


@shared_task(acks_late=True, time_limit=300, soft_time_limit=240)
def resolve_disputes() -> int:
    """Beat, every minute: the arbitrator ends our open disputes on the verifier's evidence
    and slashes the hosts of channel jobs that failed it (marketplace.arbitration), with
    its own key."""
    from marketplace.arbitration import channel_slashes, disputes_resolve
    from marketplace.wallet import arbitrator_chain

    async def run() -> int:
        arbitrator = await arbitrator_chain()
        return await disputes_resolve(arbitrator) + await channel_slashes(arbitrator)

    return loops.run_async(run())


@shared_task(acks_late=True, time_limit=300, soft_time_limit=240)
def channels_maintain() -> dict[str, int]:
    """Beat, every minute: our payment channels' top-ups, exits, closes and books
    (marketplace.channels). The wallet's key is opened only when a channel is live."""
    from marketplace.channels import channels_maintain as maintain
    from marketplace.models import PaymentChannel, PaymentChannelState
    from marketplace.wallet import platform_chain

    if not PaymentChannel.objects.exclude(
            state__in=[PaymentChannelState.CLOSED, PaymentChannelState.FAILED]).exists():
        return {}

    async def run() -> dict[str, int]:
        return await maintain(await platform_chain())

    return loops.run_async(run())


# ---- the job processor -------------------------------------------------------------------


@contextmanager
def _logging_job(job_id: str):
    """Every log line of the task names its job (observability.logging)."""
    token = job_id_var.set(job_id)
    try:
        yield
    finally:
        job_id_var.reset(token)



@shared_task(base=OpsTask, bind=True, time_limit=300, soft_time_limit=240)
def process_job(self, job_id: str) -> str:
    """After a job ends: settle what is open on chain, count it, send its webhooks."""
    with _logging_job(job_id):
        return _process_job(self, job_id)


def _process_job(self, job_id: str) -> str:
    try:
        return processor.job_process(job_id=job_id)
    except processor.ProcessingDeferred as exc:
        if self.request.retries >= self.max_retries:
            processor.job_processing_fail(job_id=job_id, error=str(exc))
            raise
        raise self.retry(exc=exc, countdown=min(600, 10 * 2 ** self.request.retries)) from exc
    except Exception as exc:
        if self.request.retries >= self.max_retries:
            processor.job_processing_fail(job_id=job_id, error=f"{type(exc).__name__}: {exc}")
            raise
        processor.job_processing_defer(job_id=job_id, error=f"{type(exc).__name__}: {exc}")
        raise self.retry(exc=exc, countdown=min(600, 10 * 2 ** self.request.retries)) from exc


@shared_task(base=OpsTask, bind=True, time_limit=300, soft_time_limit=240)
def recover_job(self, job_id: str) -> str:
    """Close a job whose process died, from what the chain says (see processor)."""
    with _logging_job(job_id):
        return _recover_job(self, job_id)


def _recover_job(self, job_id: str) -> str:
    try:
        return processor.job_recover(job_id=job_id)
    except processor.ProcessingDeferred as exc:
        # The claim touched the job; it is orphaned again after OPS_ORPHAN_AFTER_S and the
        # watcher re-sends it then, so a lost retry message loses nothing.
        if self.request.retries >= self.max_retries:
            raise
        raise self.retry(exc=exc, countdown=min(600, 10 * 2 ** self.request.retries)) from exc


@shared_task(acks_late=True, time_limit=120, soft_time_limit=100)
def sweep_processing() -> int:
    """Beat, every minute: the retry queue. Send every processing row that is due, whatever
    happened to its message (lost with the broker, retried, or held by a dead worker)."""
    due = processor.processing_due()
    for job_id in due:
        enqueue(process_job.name, job_id)
    return len(due)


@shared_task(acks_late=True, time_limit=120, soft_time_limit=100)
def watch_orphaned_jobs() -> int:
    """Beat, every minute: jobs whose process died are recovered by a worker."""
    orphans = processor.jobs_orphaned()
    for job_id in orphans:
        enqueue(recover_job.name, job_id)
    return len(orphans)


@shared_task(acks_late=True, time_limit=60, soft_time_limit=45)
def health_probe() -> dict[str, bool]:
    """Beat, every OPS_HEALTH_PROBE_INTERVAL_S: probe the chain and the hosts and store the
    result that /health and /metrics read (they never probe themselves)."""
    from marketplace.health import health_probes_run

    return {name: row["ok"] for name, row in health_probes_run().items()}


@shared_task(acks_late=True, time_limit=300, soft_time_limit=240)
def release_stale_reservations() -> int:
    """Beat, every ten minutes: money held for a job that never ended goes back."""
    return processor.reservations_release_stale()


@shared_task(acks_late=True, reject_on_worker_lost=True, time_limit=120, soft_time_limit=100)
def verify_attempt(record_id: int) -> str:
    """The `verify` queue: re-score one attempt on this worker's verifier thread."""
    from marketplace.verifier.service import pinned_weights, verification_run

    return verification_run(record_id,
                            lambda model: loops.run_async(pinned_weights(model))).state


# ---- money in and out (marketplace.funds) -------------------------------------------------


@shared_task(acks_late=True, time_limit=120, soft_time_limit=100)
def watch_deposits() -> int:
    """Beat, every FUNDS_WATCH_INTERVAL_S: credit the deposits that have enough
    confirmations. Safe to run twice at once: each deposit is recorded once. Reads only:
    no key is decrypted."""
    from marketplace.funds import deposits_scan, reader

    async def run() -> int:
        async with reader() as chain:
            return await deposits_scan(chain)

    return loops.run_async(run())


@shared_task(acks_late=True, time_limit=300, soft_time_limit=240)
def send_payouts() -> dict[str, int]:
    """Beat, every FUNDS_WATCH_INTERVAL_S, and after each withdrawal: send the queued
    withdrawals and refunds; a payout that could not be sent stays queued for the next
    run. The platform wallet's key is opened only when something is due."""
    from marketplace.funds import payouts_due, payouts_send_due
    from marketplace.wallet import platform_chain

    due = payouts_due()
    if not due:
        return {}

    async def run() -> dict[str, int]:
        return await payouts_send_due(await platform_chain(), due)

    return loops.run_async(run())
