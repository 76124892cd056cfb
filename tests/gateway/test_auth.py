"""API keys on /v1: missing, wrong, revoked and expired keys get a 401; a key without
the scope a 403; both header forms work. A billed request's key may be one the process
read a moment ago; the reservation still refuses it once revoked, and moves no money."""

from datetime import timedelta

import pytest
from asgiref.sync import sync_to_async
from django.test import AsyncClient
from django.utils import timezone

from accounts.models import Account, ApiKey, LedgerEntry, Reservation
from accounts.services import api_key_create, api_key_revoke
from gateway.keys import api_key_lookup
from gateway.models.requests import GatewayRequest
from tests.gateway.conftest import MODEL, nonce

pytestmark = pytest.mark.django_db(transaction=True)


def error(response) -> dict:
    assert response["Content-Type"].startswith("application/json")
    return response.json()["error"]


async def test_a_request_without_a_key_is_a_401_in_the_one_shape(alice):
    response = await AsyncClient().get("/v1/usage")
    assert response.status_code == 401
    assert error(response)["code"] == "UNAUTHENTICATED"
    assert "X-API-Key" in error(response)["message"]


async def test_a_wrong_or_malformed_key_is_a_401(alice):
    wrong = "sk_" + "0" * 64
    for raw in (wrong, "sk_short", alice.raw[:-1] + ("0" if alice.raw[-1] != "0" else "1")):
        response = await AsyncClient().get("/v1/usage", headers={"X-API-Key": raw})
        assert response.status_code == 401, raw
        assert error(response)["code"] == "UNAUTHENTICATED"


async def test_the_key_works_as_x_api_key_and_as_a_bearer_token(alice):
    by_header = await AsyncClient().get("/v1/usage", headers=alice.headers)
    by_bearer = await AsyncClient().get("/v1/usage",
                                        headers={"Authorization": f"Bearer {alice.raw}"})
    assert by_header.status_code == by_bearer.status_code == 200
    assert by_header.json()["object"] == "usage"


async def test_a_key_lacking_the_scope_is_a_403(alice):
    made = await sync_to_async(api_key_create)(user=alice.user, name="models only",
                                               scopes=["models:read"])
    headers = {"X-API-Key": made.raw}
    response = await AsyncClient().get("/v1/usage", headers=headers)
    assert response.status_code == 403
    assert error(response)["code"] == "FORBIDDEN"
    assert "usage:read" in error(response)["message"]
    response = await AsyncClient().post("/v1/inference", headers=headers, data={
        "model": "x", "prompt": "hi"}, content_type="application/json")
    assert response.status_code == 403


async def test_a_key_is_created_used_revoked_and_then_refused(alice):
    made = await sync_to_async(api_key_create)(user=alice.user, name="short-lived")
    headers = {"X-API-Key": made.raw}
    assert (await AsyncClient().get("/v1/usage", headers=headers)).status_code == 200
    key = await ApiKey.objects.aget(pk=made.key.pk)
    assert key.last_used_at is not None  # the use was recorded
    await sync_to_async(api_key_revoke)(key)
    response = await AsyncClient().get("/v1/usage", headers=headers)
    assert response.status_code == 401
    # Alice's other key is untouched.
    assert (await AsyncClient().get("/v1/usage", headers=alice.headers)).status_code == 200


async def test_an_expired_key_is_refused(alice):
    made = await sync_to_async(api_key_create)(
        user=alice.user, name="expiring", expires_at=timezone.now() + timedelta(hours=1))
    headers = {"X-API-Key": made.raw}
    assert (await AsyncClient().get("/v1/usage", headers=headers)).status_code == 200
    await ApiKey.objects.filter(pk=made.key.pk).aupdate(
        expires_at=timezone.now() - timedelta(seconds=1))
    response = await AsyncClient().get("/v1/usage", headers=headers)
    assert response.status_code == 401
    assert error(response)["code"] == "UNAUTHENTICATED"


async def test_the_key_of_an_inactive_user_is_refused(alice):
    alice.user.is_active = False
    await alice.user.asave(update_fields=["is_active"])
    assert (await AsyncClient().get("/v1/usage", headers=alice.headers)).status_code == 401


async def test_a_billed_request_reuses_the_key_it_read_a_moment_ago(alice, settings):
    settings.GATEWAY_KEY_REUSE_MS = 60_000
    first = await api_key_lookup(alice.raw, reuse=True)
    # Changed behind the gateway's back: a kept key is served as it was read ...
    await ApiKey.objects.filter(pk=alice.key.pk).aupdate(name="renamed")
    assert (await api_key_lookup(alice.raw, reuse=True)) is first
    # ... only to billed requests, and only for its moment.
    assert (await api_key_lookup(alice.raw)).name == "renamed"
    settings.GATEWAY_KEY_REUSE_MS = 0
    assert (await api_key_lookup(alice.raw, reuse=True)).name == "renamed"


@pytest.mark.parametrize("how", ["revoked", "expired", "user disabled"])
async def test_a_kept_key_gone_bad_gets_a_401_and_moves_no_money(alice, upstream, settings,
                                                                  how):
    settings.GATEWAY_KEY_REUSE_MS = 60_000
    body = {"model": MODEL, "prompt": f"Tides {nonce()}", "max_tokens": 4}
    client = AsyncClient()
    answer = await client.post("/v1/inference", body, content_type="application/json",
                               headers=alice.headers)
    assert answer.status_code == 200
    account = await Account.objects.aget(user=alice.user)
    reservations = await Reservation.objects.acount()
    entries = await LedgerEntry.objects.acount()
    # Changed by SQL, as an operator might: no signal, nothing told the gateway.
    if how == "revoked":
        await ApiKey.objects.filter(pk=alice.key.pk).aupdate(revoked_at=timezone.now())
    elif how == "expired":
        await ApiKey.objects.filter(pk=alice.key.pk).aupdate(
            expires_at=timezone.now() - timedelta(seconds=1))
    else:
        await type(alice.user).objects.filter(pk=alice.user.pk).aupdate(is_active=False)
    for path, payload in (("/v1/inference", {**body, "prompt": f"Moons {nonce()}"}),
                          ("/v1/chat/completions", {
                              "model": MODEL, "max_tokens": 4,
                              "messages": [{"role": "user", "content": f"Hi {nonce()}"}]})):
        refused = await client.post(path, payload, content_type="application/json",
                                    headers=alice.headers)
        assert refused.status_code == 401, refused.content
        assert error(refused)["code"] == "UNAUTHENTICATED"
    after = await Account.objects.aget(pk=account.pk)
    assert (after.balance_wei, after.held_wei) == (account.balance_wei, account.held_wei)
    assert await Reservation.objects.acount() == reservations
    assert await LedgerEntry.objects.acount() == entries
    assert len(upstream.requests) == 1  # no job for the refused requests
    # The first was refused where its money would have moved, and is on record; that
    # dropped the kept key, so the second was refused at the door, as any request now is.
    refused_records = GatewayRequest.objects.filter(user=alice.user,
                                                     error_code="UNAUTHENTICATED")
    assert [r.endpoint async for r in refused_records] == ["inference"]
    assert (await client.get("/v1/usage", headers=alice.headers)).status_code == 401
