"""Each request is recorded (who, which key, endpoint, model, tokens, cost, cached,
status, error, timings) and shown read-only in Django admin."""

import pytest
from django.test import AsyncClient

from accounts.models import User
from gateway.models import GatewayRequest
from tests.conftest import MODEL
from tests.gateway.conftest import nonce

pytestmark = pytest.mark.django_db(transaction=True)


async def test_a_request_is_recorded_with_its_figures(upstream, alice):
    response = await AsyncClient().post("/v1/inference", headers=alice.headers, data={
        "model": MODEL, "prompt": f"Hi {nonce()}", "max_tokens": 3},
        content_type="application/json")
    body = response.json()
    record = await GatewayRequest.objects.aget(pk=body["id"])
    assert (record.user_id, record.api_key_id, record.endpoint, record.model) == (
        alice.user.pk, alice.key.pk, "inference", MODEL)
    assert (record.status, record.tokens, str(record.cost_wei), record.cached) == (
        "done", 3, body["cost"], False)
    assert record.reference == f"gateway:{record.id}"
    assert record.finished_at is not None and record.duration_ms > 0
    assert record.text == body["text"] and record.finish_reason == "length"


def test_admin_lists_requests_read_only(upstream, alice, client):
    GatewayRequest.objects.create(user=alice.user, api_key=alice.key, endpoint="chat",
                                  model=MODEL, tokens=5, cost_wei=1234, status="done")
    admin = User.objects.create_superuser(username="root", password="a-long-password-0")
    client.force_login(admin)
    listing = client.get("/admin/gateway/gatewayrequest/")
    assert listing.status_code == 200 and b"1234" in listing.content
    record = GatewayRequest.objects.get()
    page = client.get(f"/admin/gateway/gatewayrequest/{record.pk}/change/")
    assert page.status_code == 200 and b'name="tokens"' not in page.content  # read-only
    assert client.get("/admin/gateway/gatewayrequest/add/").status_code == 403
