"""Celery tasks of the marketplace. Each takes ids, claims its row atomically and is safe
to run twice; the work itself lives in services."""

from __future__ import annotations

from celery import shared_task

from marketplace import webhooks
from marketplace.gateway.tasks import batch_items_run, batch_items_sweep  # noqa: F401


@shared_task(acks_late=True, reject_on_worker_lost=True, time_limit=60, soft_time_limit=45)
def deliver_webhook(delivery_id: str) -> str:
    state = webhooks.webhook_attempt(delivery_id=delivery_id)
    if state == "PENDING":
        delivery_retry_at = webhooks.WebhookDelivery.objects.get(pk=delivery_id).next_attempt_at
        deliver_webhook.apply_async((delivery_id,), eta=delivery_retry_at)
    return state


@shared_task(acks_late=True, time_limit=120)
def retry_due_webhooks() -> int:
    """Beat, every minute: resend what is due, whatever happened to its scheduled retry."""
    due = webhooks.webhooks_due()
    for delivery_id in due:
        deliver_webhook.delay(delivery_id)
    return len(due)


@shared_task(acks_late=True, time_limit=300)
def refund_abandoned_attempts() -> int:
    """Beat, every minute: refund (or dispute) on-chain jobs whose host let us down."""
    import asyncio

    from marketplace.client.refunds import refund_abandoned
    from marketplace.wallet import platform_chain

    async def run() -> int:
        chain = await platform_chain()
        try:
            return await refund_abandoned(chain)
        finally:
            await chain.close()

    from marketplace import wallet

    wallet._handles.clear()
    return asyncio.run(run())
