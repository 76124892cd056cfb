"""Webhooks: signed with HMAC-SHA256 over the timestamp and the body, retried with
exponential backoff, every attempt logged.

A receiver checks `X-Inkmarket-Signature: t=<unix time>,v1=<hex>` where the hex is
HMAC-SHA256(secret, "<t>.<raw body>"), rejects old timestamps, and uses
`X-Inkmarket-Idempotency-Key` to drop a repeat of an event it already handled.

Every attempt goes through `outbound`: a URL that points at no public internet address
(now, whatever it resolved to when it was given) fails for good with URL_NOT_ALLOWED and
nothing is sent; a redirect is not followed.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import uuid
from datetime import timedelta
from typing import Any

from django.db import transaction
from django.utils import timezone

from marketplace.models import DeadLetter, DeliveryState, WebhookAttempt, WebhookDelivery
from marketplace.queue import DELIVER_WEBHOOK, send
from outbound.errors import OutboundError
from outbound.http import request_send

MAX_ATTEMPTS = 6
BASE_DELAY_S = 10
TIMEOUT_S = 10.0


def _stuck_after() -> timedelta:
    """How long a sender holds a delivery; past it, a sender that died mid-send is presumed
    dead and the delivery is due again (the receiver may see the same key twice)."""
    from django.conf import settings

    return timedelta(seconds=settings.WEBHOOK_STUCK_AFTER_S)


def webhook_signature(*, secret: str, timestamp: int, body: bytes) -> str:
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={mac.hexdigest()}"


def webhook_verify(*, secret: str, header: str, body: bytes, tolerance_s: int = 300,
                   now: int | None = None) -> bool:
    """What a receiver does; used by our tests and documented for integrators."""
    try:
        parts = dict(item.split("=", 1) for item in header.split(","))
        timestamp = int(parts["t"])
    except (ValueError, KeyError):
        return False
    if abs((now or int(time.time())) - timestamp) > tolerance_s:
        return False
    expected = webhook_signature(secret=secret, timestamp=timestamp, body=body)
    return hmac.compare_digest(expected, header)


def backoff_delay(attempt: int) -> timedelta:
    """10 s, 20 s, 40 s, ... after the 1st, 2nd, 3rd failed attempt."""
    return timedelta(seconds=BASE_DELAY_S * 2 ** max(attempt - 1, 0))


def webhook_enqueue(*, url: str, event: str, payload: dict[str, Any], secret: str,
                    idempotency_key: str | None = None, owner_id: int | None = None
                    ) -> WebhookDelivery:
    """Record the delivery and send it once the surrounding transaction commits."""
    delivery, created = WebhookDelivery.objects.get_or_create(
        idempotency_key=idempotency_key or f"{event}:{uuid.uuid4()}",
        defaults={"url": url, "event": event, "payload": payload, "secret": secret,
                  "owner_id": owner_id, "next_attempt_at": timezone.now()},
    )
    if created:
        transaction.on_commit(lambda: send(DELIVER_WEBHOOK, str(delivery.id)))
    return delivery


def _claim(delivery_id: str) -> WebhookDelivery | None:
    """Take the delivery if it is due and nobody else holds it (or its holder died)."""
    now = timezone.now()
    claimed = WebhookDelivery.objects.filter(
        pk=delivery_id, state=DeliveryState.PENDING, next_attempt_at__lte=now,
    ).update(state=DeliveryState.SENDING, next_attempt_at=now + _stuck_after())
    if not claimed:
        claimed = WebhookDelivery.objects.filter(
            pk=delivery_id, state=DeliveryState.SENDING, next_attempt_at__lte=now,
        ).update(next_attempt_at=now + _stuck_after())
    return WebhookDelivery.objects.get(pk=delivery_id) if claimed else None


def webhook_attempt(*, delivery_id: str) -> str:
    """Make one attempt at a delivery; returns its state afterwards."""
    delivery = _claim(delivery_id)
    if delivery is None:
        return "not-due"
    body = json.dumps(delivery.payload, separators=(",", ":"), sort_keys=True).encode()
    timestamp = int(time.time())
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "inkmarket-webhooks/1",
        "X-Inkmarket-Event": delivery.event,
        "X-Inkmarket-Timestamp": str(timestamp),
        "X-Inkmarket-Idempotency-Key": delivery.idempotency_key,
        "X-Inkmarket-Signature": webhook_signature(secret=delivery.secret,
                                                   timestamp=timestamp, body=body),
    }
    number = delivery.attempts + 1
    started = time.perf_counter()
    status, error, permanent = None, "", False
    try:
        response = request_send(method="POST", url=delivery.url, content=body,
                                headers=headers, timeout_s=TIMEOUT_S)
        status = response.status_code
        if not 200 <= status < 300:
            error = f"HTTP {status}: {response.text[:200]}"
    except OutboundError as exc:
        error, permanent = f"{exc.code}: {exc.message}", exc.permanent
    ms = (time.perf_counter() - started) * 1000

    with transaction.atomic():
        WebhookAttempt.objects.create(delivery=delivery, number=number, status=status,
                                      error=error, ms=round(ms, 1))
        fields: dict[str, Any] = {"attempts": number, "last_status": status, "last_error": error}
        if not error:
            fields.update(state=DeliveryState.DELIVERED, delivered_at=timezone.now(),
                          next_attempt_at=None)
        elif permanent:  # refused by the policy: no retry would be sent either
            fields.update(state=DeliveryState.FAILED, next_attempt_at=None)
        elif number >= MAX_ATTEMPTS:
            fields.update(state=DeliveryState.FAILED, next_attempt_at=None)
            DeadLetter.objects.create(
                task=DELIVER_WEBHOOK, args=[str(delivery.id)],
                error=f"gave up after {number} attempts: {error}",
            )
        else:
            fields.update(state=DeliveryState.PENDING,
                          next_attempt_at=timezone.now() + backoff_delay(number))
        WebhookDelivery.objects.filter(pk=delivery.id).update(**fields)
    return fields["state"]


def webhooks_due() -> list[str]:
    """Deliveries whose next attempt is due, including any whose sender died mid-send."""
    now = timezone.now()
    return [
        str(pk) for pk in WebhookDelivery.objects.filter(
            state__in=[DeliveryState.PENDING, DeliveryState.SENDING], next_attempt_at__lte=now,
        ).values_list("pk", flat=True)[:500]
    ]
