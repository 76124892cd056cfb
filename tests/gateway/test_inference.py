"""POST /v1/inference and GET /v1/inference/{id}: through the real marketplace (anvil,
our contracts, a real host process running the bundled model), and through an
OpenAI-compatible upstream; billed by reserve and settle, cached results free."""

import asyncio

import pytest
from asgiref.sync import sync_to_async
from django.test import AsyncClient

from accounts.models import Reservation, ReservationState
from accounts.selectors import ledger_invariant_violations
from accounts.services import account_set_tier, balance_adjust
from accounts.tiers import price_for
from gateway.models import GatewayRequest
from marketplace.models import Job, JobState
from tests.conftest import MODEL
from tests.gateway.conftest import nonce

pytestmark = pytest.mark.django_db(transaction=True)


async def infer(who, **body):
    return await AsyncClient().post("/v1/inference", headers=who.headers, data={
        "model": MODEL, "max_tokens": 8, "temperature": 0.0, **body},
        content_type="application/json")


async def account_of(who):
    return await sync_to_async(lambda: who.account)()


async def test_a_request_runs_on_the_marketplace_is_charged_once_and_then_cached(
        network, alice, bob):
    network.start_hosts({"host-1": 10**9})
    before = await account_of(alice)
    prompt = f"Name one colour. ({nonce()})"
    response = await infer(alice, prompt=prompt)
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["status"] == "done" and body["cached"] is False
    assert body["text"] and 0 < body["tokens"] <= 8
    charge = price_for("free", 10**9, body["tokens"]).charge_wei
    assert body["cost"] == str(charge)
    job = await Job.objects.aget(pk=body["job_id"])
    assert job.state == JobState.COMPLETED and job.tokens == body["tokens"]
    after = await account_of(alice)
    assert after.balance_wei == before.balance_wei - charge and after.held_wei == 0
    reservation = await Reservation.objects.aget()
    assert reservation.state == ReservationState.SETTLED
    # The host's share and the protocol fee add up to what escrow paid for the tokens.
    assert reservation.host_payout_wei + reservation.protocol_fee_wei == body["tokens"] * 10**9
    assert reservation.protocol_fee_wei == body["tokens"] * 10**9 * 250 // 10_000

    again = await infer(alice, prompt=prompt)
    assert again.status_code == 200
    hit = again.json()
    assert hit["cached"] is True and hit["cost"] == "0" and hit["text"] == body["text"]
    assert (await account_of(alice)).balance_wei == after.balance_wei

    # Polling: alice sees her request; bob gets a 404 for it.
    polled = await AsyncClient().get(f"/v1/inference/{body['id']}", headers=alice.headers)
    assert polled.status_code == 200
    assert polled.json()["text"] == body["text"] and polled.json()["cost"] == str(charge)
    hidden = await AsyncClient().get(f"/v1/inference/{body['id']}", headers=bob.headers)
    assert hidden.status_code == 404 and hidden.json()["error"]["code"] == "NOT_FOUND"

    records = [r async for r in GatewayRequest.objects.order_by("created_at")]
    assert [(r.cached, r.status, int(r.cost_wei)) for r in records] == [
        (False, "done", charge), (True, "done", 0)]
    assert records[0].api_key_id == alice.key.pk and records[0].tokens == body["tokens"]
    assert await sync_to_async(ledger_invariant_violations)() == []


async def test_another_account_asking_the_same_prompt_gets_no_cached_answer(
        network, alice, bob):
    """The attack: send a prompt someone else may have asked and look for "cached": true
    (and their answer). Each account has its own cache."""
    network.start_hosts({"host-1": 10**9})
    prompt = f"Name one colour. ({nonce()})"
    first = (await infer(alice, prompt=prompt)).json()
    assert first["cached"] is False
    theirs = await infer(bob, prompt=prompt)
    assert theirs.status_code == 200, theirs.content
    body = theirs.json()
    assert body["cached"] is False and int(body["cost"]) > 0  # run and paid for anew
    again = (await infer(bob, prompt=prompt)).json()
    assert again["cached"] is True and again["text"] == body["text"]  # bob's own result
    records = [r async for r in GatewayRequest.objects.order_by("created_at")]
    assert [(r.api_key_id, r.cached) for r in records] == [
        (alice.key.pk, False), (bob.key.pk, False), (bob.key.pk, True)]


async def test_a_slow_request_answers_202_and_is_polled_to_its_end(network, alice, settings):
    network.start_hosts({"host-1": 10**9})
    settings.GATEWAY_WAIT_S = 0
    await sync_to_async(account_set_tier)(await account_of(alice), tier="premium")
    response = await infer(alice, prompt=f"Name one fruit. ({nonce()})")
    assert response.status_code == 202
    accepted = response.json()
    assert accepted["status"] == "running"
    assert accepted["poll"] == f"/v1/inference/{accepted['id']}"
    for _ in range(300):
        polled = (await AsyncClient().get(accepted["poll"], headers=alice.headers)).json()
        if polled["status"] != "running":
            break
        await asyncio.sleep(0.2)
    assert polled["status"] == "done" and polled["tokens"] > 0 and polled["text"]
    assert polled["cost"] == str(price_for("premium", 10**9, polled["tokens"]).charge_wei)
    assert (await account_of(alice)).held_wei == 0


async def test_a_running_request_is_cancelled_and_billed_for_what_it_generated(
        network, alice, settings):
    network.start_hosts({"host-1": 10**9})
    settings.GATEWAY_WAIT_S = 0
    await sync_to_async(account_set_tier)(await account_of(alice), tier="premium")
    before = await account_of(alice)
    response = await infer(alice, prompt=f"Write a long story about a dragon. ({nonce()})",
                           max_tokens=400)
    assert response.status_code == 202
    poll = response.json()["poll"]
    await asyncio.sleep(2.0)  # long enough for the host to start writing
    cancelled = await AsyncClient().post(f"{poll}/cancel", headers=alice.headers)
    assert cancelled.status_code == 200
    for _ in range(300):
        polled = (await AsyncClient().get(poll, headers=alice.headers)).json()
        if polled["status"] != "running":
            break
        await asyncio.sleep(0.2)
    assert polled["status"] == "cancelled"
    assert 0 < polled["tokens"] < 400
    charge = price_for("premium", 10**9, polled["tokens"]).charge_wei
    assert polled["cost"] == str(charge)
    after = await account_of(alice)
    assert after.balance_wei == before.balance_wei - charge and after.held_wei == 0
    assert await sync_to_async(ledger_invariant_violations)() == []


async def test_no_host_serving_the_model_is_a_503_and_costs_nothing(network, alice,
                                                                    settings):
    settings.GATEWAY_MODELS = [MODEL, "tinyllama-1b"]  # listed, but no host serves it
    before = await account_of(alice)
    response = await infer(alice, model="tinyllama-1b", prompt="Hello")
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "NO_HOSTS_AVAILABLE"
    assert (await account_of(alice)).balance_wei == before.balance_wei
    assert not await Reservation.objects.aexists()


async def test_a_balance_short_of_the_worst_case_is_a_402_with_both_amounts(upstream, alice):
    account = await account_of(alice)
    await sync_to_async(balance_adjust)(account, amount_wei=-(account.balance_wei - 1000),
                                        memo="test: nearly empty")
    response = await infer(alice, prompt="Hello", max_tokens=100)
    assert response.status_code == 402
    error = response.json()["error"]
    worst = price_for("free", 10**9, 100).charge_wei
    assert error["code"] == "INSUFFICIENT_FUNDS"
    assert (error["required"], error["available"]) == (str(worst), "1000")
    assert not upstream.requests  # nothing was run
    record = await GatewayRequest.objects.aget()
    assert (record.status, record.error_code) == ("failed", "INSUFFICIENT_FUNDS")


async def test_the_upstream_mode_bills_the_tokens_at_its_price_with_no_protocol_fee(
        upstream, alice):
    before = await account_of(alice)
    response = await infer(alice, prompt=f"Hello {nonce()}", max_tokens=5, temperature=0.3)
    assert response.status_code == 200
    body = response.json()
    assert body["text"] == "w0 w1 w2 w3 w4 " and body["tokens"] == 5
    assert body["finish_reason"] == "length"
    assert upstream.requests[0]["max_tokens"] == 5
    assert upstream.requests[0]["temperature"] == 0.3
    charge = price_for("free", 10**9, 5)
    assert body["cost"] == str(charge.charge_wei)
    reservation = await Reservation.objects.aget()
    assert (reservation.host_payout_wei, reservation.protocol_fee_wei,
            reservation.platform_fee_wei) == (5 * 10**9, 0, charge.platform_fee_wei)
    assert (await account_of(alice)).balance_wei == before.balance_wei - charge.charge_wei


async def test_a_failing_upstream_is_a_502_and_releases_the_reservation(upstream, alice):
    before = await account_of(alice)
    response = await infer(alice, prompt="[fail] please")
    assert response.status_code == 502
    assert response.json()["error"]["code"] == "UPSTREAM_ERROR"
    reservation = await Reservation.objects.aget()
    assert reservation.state == ReservationState.RELEASED
    assert (await account_of(alice)).balance_wei == before.balance_wei
    assert await sync_to_async(ledger_invariant_violations)() == []
