"""POST /v1/chat/completions with the official `openai` package as the client, against a
real server process: through the real marketplace (a host process running the bundled
model) and through an OpenAI-compatible upstream; streamed usage is billed like the rest."""

import asyncio

import httpx
import openai
import pytest
from asgiref.sync import sync_to_async

from accounts.models import Reservation, ReservationState
from accounts.selectors import ledger_invariant_violations
from accounts.tiers import price_for
from gateway.chat import messages_to_prompt
from gateway.models import GatewayRequest
from tests.conftest import MODEL
from tests.gateway.conftest import network_env, nonce

pytestmark = pytest.mark.django_db(transaction=True)


def balance(who) -> int:
    return who.account.balance_wei


def test_a_conversation_becomes_one_prompt_ending_with_the_users_turn():
    assert messages_to_prompt([{"role": "user", "content": "Hi"}]) == "Hi"
    prompt = messages_to_prompt([
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": [{"type": "text", "text": "Name a bird."}]},
        {"role": "assistant", "content": "Owl."},
        {"role": "user", "content": "Another?"}])
    assert prompt == ("Be brief.\n\nUser: Name a bird.\n\nAssistant: Owl.\n\n"
                      "User: Another?\n\nAssistant:")


def test_the_openai_client_chats_and_streams_through_the_marketplace(network, servers, alice):
    network.start_hosts({"host-1": 10**9})
    url = servers.start(network_env(network))
    client = openai.OpenAI(base_url=f"{url}/v1", api_key=alice.raw, max_retries=0)
    start = balance(alice)

    listed = client.models.list()
    [model] = listed.data
    assert model.id == MODEL and model.object == "model"
    assert model.model_extra["nodes"] == 1 and model.model_extra["available"] is True
    assert model.model_extra["min_price_per_token"] == str(10**9)

    answer = client.chat.completions.create(
        model=MODEL, max_tokens=8, temperature=0,
        messages=[{"role": "user", "content": f"Name one colour. ({nonce()})"}])
    text = answer.choices[0].message.content
    assert text and answer.choices[0].message.role == "assistant"
    assert 0 < answer.usage.completion_tokens <= 8
    charge = price_for("free", 10**9, answer.usage.completion_tokens).charge_wei
    assert balance(alice) == start - charge

    pieces, usage = [], None
    stream = client.chat.completions.create(
        model=MODEL, max_tokens=8, temperature=0, stream=True,
        messages=[{"role": "user", "content": f"Name one animal. ({nonce()})"}])
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            pieces.append(chunk.choices[0].delta.content)
        if chunk.usage is not None:
            usage = chunk.usage
    assert pieces and usage is not None
    # Streamed usage is the real token count, and it is what was billed.
    assert usage.completion_tokens == len(pieces) > 0
    streamed = price_for("free", 10**9, usage.completion_tokens).charge_wei
    assert balance(alice) == start - charge - streamed
    records = list(GatewayRequest.objects.filter(endpoint="chat").order_by("created_at"))
    assert [(r.stream, r.tokens, int(r.cost_wei)) for r in records] == [
        (False, answer.usage.completion_tokens, charge), (True, len(pieces), streamed)]
    assert records[1].text == "".join(pieces)
    assert ledger_invariant_violations() == []


def test_refusals_come_as_openai_errors_before_any_stream(upstream, servers, alice):
    url = servers.start({"GATEWAY_UPSTREAM_URL": upstream.url,
                         "GATEWAY_UPSTREAM_PRICE_WEI": str(10**12)})
    client = openai.OpenAI(base_url=f"{url}/v1", api_key=alice.raw, max_retries=0)
    with pytest.raises(openai.BadRequestError) as bad:
        client.chat.completions.create(model="gpt-4", messages=[{"role": "user",
                                                                  "content": "hi"}])
    assert bad.value.body["code"] == "UNKNOWN_MODEL"
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=f"{url}/v1", api_key="sk_" + "1" * 64,
                      max_retries=0).models.list()
    with pytest.raises(openai.APIStatusError) as poor:
        client.chat.completions.create(model=MODEL, max_tokens=4000, stream=True,
                                       messages=[{"role": "user", "content": nonce()}])
    assert poor.value.status_code == 402
    assert poor.value.body["code"] == "INSUFFICIENT_FUNDS"
    assert int(poor.value.body["required"]) == price_for("free", 10**12, 4000).charge_wei
    assert poor.value.body["available"] == str(10**15)
    assert not upstream.requests


async def test_a_stream_the_client_drops_is_billed_for_what_it_got(upstream, servers, alice):
    url = servers.start({"GATEWAY_UPSTREAM_URL": upstream.url})
    start = await sync_to_async(balance)(alice)
    received = 0
    async with httpx.AsyncClient(base_url=url, headers=alice.headers, timeout=30) as http:
        async with http.stream("POST", "/v1/chat/completions", json={
                "model": MODEL, "max_tokens": 64, "stream": True,
                "messages": [{"role": "user", "content": f"[slow] {nonce()}"}]}) as response:
            assert response.status_code == 200
            async for line in response.aiter_lines():
                if '"content": "w' in line:
                    received += 1
                if received == 5:
                    break  # hang up mid-stream
    for _ in range(100):
        reservation = await Reservation.objects.afirst()
        if reservation is not None and reservation.state != ReservationState.HELD:
            break
        await asyncio.sleep(0.1)
    record = await GatewayRequest.objects.aget()
    assert record.status == "cancelled"
    assert 5 <= record.tokens < 64  # what arrived before the hang-up, not zero, not all
    assert reservation.state == ReservationState.SETTLED
    charge = price_for("free", 10**9, record.tokens).charge_wei
    assert int(reservation.charged_wei) == int(record.cost_wei) == charge
    assert await sync_to_async(balance)(alice) == start - charge
    assert await sync_to_async(ledger_invariant_violations)() == []
