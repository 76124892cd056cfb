"""Server-side request forgery, attempted the way a user would: through POST /v1/batch,
through a webhook endpoint, and through a receiver that redirects. The targets are real
servers listening on loopback that count every connection they accept: a refusal must
leave them at zero. The allow-list is production's, empty, unless a test says otherwise."""

from __future__ import annotations

import pytest
from django.test import AsyncClient

from accounts.services import account_get_or_create, account_set_tier
from gateway.models import Batch
from marketplace import processor, webhooks
from marketplace.models import (
    DeadLetter,
    DeliveryState,
    ProcessingState,
    WebhookDelivery,
    WebhookEndpoint,
)
from marketplace.tasks import deliver_webhook
from tests.conftest import MODEL
from tests.gateway.batchkit import nonce, purge_broker
from tests.gateway.conftest import (  # noqa: F401 - the gateway tests' own
    _named,
    close_gateway_connections,
    fresh_rate_limits,
    gateway_settings,
)
from tests.ops.test_processor import finished_job
from tests.outbound.servers import Server

pytestmark = pytest.mark.django_db(transaction=True)

LOOPBACK = ["localhost", "127.0.0.0/8", "::1"]


@pytest.fixture
def alice(transactional_db):
    """A user with an API key and some credit, on a tier that may try many times a
    minute."""
    named = _named("alice")
    account_set_tier(account_get_or_create(named.user), tier="premium")
    return named


@pytest.fixture(autouse=True)
def no_allow_list(settings):
    settings.OUTBOUND_ALLOWED_HOSTS = []
    return settings


@pytest.fixture(autouse=True)
def no_queued_tasks():
    yield
    purge_broker()


@pytest.fixture
def target():
    """What an attacker wants to reach: a service on our own loopback."""
    server = Server(status=200, body=b"internal")
    yield server
    server.close()


async def submit(key, webhook_url: str):
    body = {"requests": [{"model": MODEL, "prompt": f"Say hi ({nonce()}).", "max_tokens": 4}],
            "webhook_url": webhook_url}
    return await AsyncClient().post("/v1/batch", data=body, content_type="application/json",
                                    headers=key.headers)


async def test_a_batch_whose_webhook_points_into_our_network_is_refused_with_400(
        alice, target, settings):
    for url in (f"http://127.0.0.1:{target.port}/", f"http://localhost:{target.port}/hook",
                f"http://2130706433:{target.port}/", f"http://0x7f.1:{target.port}/",
                f"http://[::ffff:127.0.0.1]:{target.port}/",
                "http://169.254.169.254/latest/meta-data/iam/security-credentials/",
                "http://10.0.0.5:6379/", "http://100.100.100.200/"):
        response = await submit(alice, url)
        assert response.status_code == 400, url
        error = response.json()["error"]
        assert error["code"] == "URL_NOT_ALLOWED", url
        assert "not a public internet address" in error["message"]
    for url, code in ((f"http://example.com@127.0.0.1:{target.port}/", "URL_NOT_ALLOWED"),
                      ("http://8.8.8.8:25/", "URL_NOT_ALLOWED"),
                      ("https://nothing-here.invalid/", "URL_UNRESOLVABLE")):
        response = await submit(alice, url)
        assert (response.status_code, response.json()["error"]["code"]) == (400, code), url
    assert not await Batch.objects.aexists()
    assert target.connections == 0

    # The same request is taken once the operator lets loopback through (as dev does).
    settings.OUTBOUND_ALLOWED_HOSTS = LOOPBACK
    assert (await submit(alice, f"http://127.0.0.1:{target.port}/")).status_code == 202
    assert target.connections == 0  # nothing is sent before the batch ends


def test_a_delivery_whose_target_became_unsafe_fails_for_good_and_connects_nowhere(
        target, settings):
    # Taken while the address was allowed; by the time the batch ends it is not (a DNS
    # answer that changed, or an allow-list that did).
    settings.OUTBOUND_ALLOWED_HOSTS = LOOPBACK
    delivery = webhooks.webhook_enqueue(url=target.url("localhost"), event="batch.completed",
                                        payload={"batch": "b1"}, secret="k")
    settings.OUTBOUND_ALLOWED_HOSTS = []

    assert webhooks.webhook_attempt(delivery_id=str(delivery.id)) == DeliveryState.FAILED
    delivery.refresh_from_db()
    assert delivery.last_error.startswith("URL_NOT_ALLOWED: ")
    assert "127.0.0.1" not in delivery.last_error
    assert (delivery.attempts, delivery.last_status, delivery.next_attempt_at) == (1, None, None)
    (attempt,) = delivery.log.all()
    assert attempt.error == delivery.last_error
    assert str(delivery.id) not in webhooks.webhooks_due()  # never tried again
    assert not DeadLetter.objects.exists()
    assert target.connections == 0


def test_a_users_job_webhook_endpoint_is_checked_at_delivery_too(alice, target, settings):
    settings.OUTBOUND_ALLOWED_HOSTS = LOOPBACK
    WebhookEndpoint.objects.create(owner=alice.user, url=target.url())
    job = finished_job(alice.user)
    processor.job_finished(job_id=job.id)
    assert processor.job_process(job_id=str(job.id)) == ProcessingState.DONE
    (delivery,) = WebhookDelivery.objects.all()
    settings.OUTBOUND_ALLOWED_HOSTS = []

    assert deliver_webhook(str(delivery.id)) == DeliveryState.FAILED
    assert target.connections == 0


def test_a_receiver_that_redirects_into_our_network_is_not_followed(target, settings):
    # The receiver is public as far as the policy knows (the allow-list names it alone);
    # it answers 302 with a Location on our loopback.
    redirecting = Server(status=302, headers={"Location": target.url(path="/admin")})
    try:
        settings.OUTBOUND_ALLOWED_HOSTS = ["127.0.0.1/32"]
        delivery = webhooks.webhook_enqueue(url=redirecting.url(), event="e", payload={},
                                            secret="k")
        assert webhooks.webhook_attempt(delivery_id=str(delivery.id)) == DeliveryState.PENDING
        delivery.refresh_from_db()
        assert (delivery.last_status, delivery.last_error) == (302, "HTTP 302: ")
        assert (redirecting.connections, target.connections) == (1, 0)
    finally:
        redirecting.close()


def test_staff_cannot_register_a_webhook_endpoint_into_our_network(admin_client, alice):
    page = "/admin/marketplace/webhookendpoint/add/"
    for url in ("http://169.254.169.254/latest/", "http://127.0.0.1:8000/", "gopher://x/"):
        response = admin_client.post(page, {"owner": alice.user.pk, "url": url,
                                            "secret": "s", "active": "on"})
        assert response.status_code == 200, url  # the form again, with the error
        assert response.context["adminform"].form.errors["url"], url
    assert not WebhookEndpoint.objects.exists()
    response = admin_client.post(page, {"owner": alice.user.pk, "url": "https://8.8.8.8/h",
                                        "secret": "s", "active": "on"})
    assert response.status_code == 302
    assert WebhookEndpoint.objects.get().url == "https://8.8.8.8/h"
