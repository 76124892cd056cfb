import json
from datetime import timedelta

import pytest
from django.utils import timezone

from marketplace import webhooks
from marketplace.models import DeadLetter, DeliveryState, WebhookDelivery
from tests.marketplace.receiver import Receiver

pytestmark = pytest.mark.django_db


@pytest.fixture
def receiver_factory():
    made = []

    def make(failures=0):
        made.append(Receiver(failures))
        return made[-1]

    yield make
    for receiver in made:
        receiver.close()


def make_due(delivery):
    WebhookDelivery.objects.filter(pk=delivery.pk).update(next_attempt_at=timezone.now())


def test_a_delivery_is_signed_so_the_receiver_can_verify_it(receiver_factory):
    receiver = receiver_factory()
    delivery = webhooks.webhook_enqueue(url=receiver.url, event="batch.completed",
                                        payload={"batch": "b1", "items": 3}, secret="s3cret")
    assert webhooks.webhook_attempt(delivery_id=str(delivery.id)) == DeliveryState.DELIVERED
    (headers, body), = receiver.requests
    assert json.loads(body) == {"batch": "b1", "items": 3}
    assert webhooks.webhook_verify(secret="s3cret", header=headers["X-Inkmarket-Signature"],
                                   body=body)
    assert not webhooks.webhook_verify(secret="wrong", header=headers["X-Inkmarket-Signature"],
                                       body=body)
    assert not webhooks.webhook_verify(secret="s3cret", header=headers["X-Inkmarket-Signature"],
                                       body=body + b" ")
    assert headers["X-Inkmarket-Idempotency-Key"] == delivery.idempotency_key


def test_an_old_signature_is_refused():
    body = b"{}"
    header = webhooks.webhook_signature(secret="k", timestamp=1_000_000, body=body)
    assert webhooks.webhook_verify(secret="k", header=header, body=body, now=1_000_100)
    assert not webhooks.webhook_verify(secret="k", header=header, body=body, now=1_000_400)


def test_a_failed_delivery_is_retried_with_backoff_and_logged(receiver_factory):
    receiver = receiver_factory(failures=2)
    delivery = webhooks.webhook_enqueue(url=receiver.url, event="e", payload={}, secret="k")
    assert webhooks.webhook_attempt(delivery_id=str(delivery.id)) == DeliveryState.PENDING
    delivery.refresh_from_db()
    wait = delivery.next_attempt_at - timezone.now()
    assert timedelta(seconds=8) < wait <= timedelta(seconds=10)
    assert webhooks.webhook_attempt(delivery_id=str(delivery.id)) == "not-due"
    make_due(delivery)
    assert webhooks.webhook_attempt(delivery_id=str(delivery.id)) == DeliveryState.PENDING
    delivery.refresh_from_db()
    assert timedelta(seconds=18) < delivery.next_attempt_at - timezone.now() <= timedelta(
        seconds=20)
    make_due(delivery)
    assert webhooks.webhook_attempt(delivery_id=str(delivery.id)) == DeliveryState.DELIVERED
    assert [(a.number, a.status) for a in delivery.log.all()] == [(1, 503), (2, 503), (3, 204)]
    keys = {headers["X-Inkmarket-Idempotency-Key"] for headers, _ in receiver.requests}
    assert keys == {delivery.idempotency_key}


def test_a_delivery_that_never_succeeds_ends_in_the_dead_letters(receiver_factory):
    receiver = receiver_factory(failures=100)
    delivery = webhooks.webhook_enqueue(url=receiver.url, event="e", payload={}, secret="k")
    for _ in range(webhooks.MAX_ATTEMPTS):
        make_due(delivery)
        webhooks.webhook_attempt(delivery_id=str(delivery.id))
    delivery.refresh_from_db()
    assert delivery.state == DeliveryState.FAILED
    assert len(receiver.requests) == webhooks.MAX_ATTEMPTS
    (dead,) = DeadLetter.objects.all()
    assert dead.args == [str(delivery.id)]
    assert "503" in dead.error


def test_an_unreachable_receiver_is_logged_as_an_error(unused_port):
    url = f"http://127.0.0.1:{unused_port}/hook"
    delivery = webhooks.webhook_enqueue(url=url, event="e", payload={}, secret="k")
    assert webhooks.webhook_attempt(delivery_id=str(delivery.id)) == DeliveryState.PENDING
    (attempt,) = delivery.log.all()
    assert attempt.status is None
    assert "ConnectError" in attempt.error


def test_the_same_idempotency_key_makes_one_delivery():
    first = webhooks.webhook_enqueue(url="http://127.0.0.1:9/h", event="e", payload={},
                                     secret="k", idempotency_key="batch:1:done")
    second = webhooks.webhook_enqueue(url="http://127.0.0.1:9/h", event="e", payload={},
                                      secret="k", idempotency_key="batch:1:done")
    assert first.pk == second.pk
    assert WebhookDelivery.objects.count() == 1


def test_a_sender_that_died_mid_send_is_picked_up_again(receiver_factory):
    receiver = receiver_factory()
    delivery = webhooks.webhook_enqueue(url=receiver.url, event="e", payload={}, secret="k")
    WebhookDelivery.objects.filter(pk=delivery.pk).update(
        state=DeliveryState.SENDING, next_attempt_at=timezone.now() - timedelta(seconds=1))
    assert str(delivery.id) in webhooks.webhooks_due()
    assert webhooks.webhook_attempt(delivery_id=str(delivery.id)) == DeliveryState.DELIVERED
