"""POST /v1/inference when the first host the client tries is hostile: the caller gets the
honest host's answer, is charged for the honest host's tokens alone, and only that answer
is cached. Real host processes (one started with `runhost --behaviour malformed`), anvil,
our contracts, the gateway's real books."""

import pytest
from asgiref.sync import sync_to_async
from django.test import AsyncClient

from accounts.selectors import ledger_invariant_violations
from accounts.tiers import price_for
from marketplace.models import AttemptState, Job
from tests.conftest import MODEL
from tests.gateway.conftest import nonce

pytestmark = pytest.mark.django_db(transaction=True)

HOSTILE_PRICE = 10**9  # the cheaper, so the client tries it first
HONEST_PRICE = 2 * 10**9


async def infer(who, **body):
    return await AsyncClient().post("/v1/inference", headers=who.headers, data={
        "model": MODEL, "max_tokens": 16, "temperature": 0.0, **body},
        content_type="application/json")


async def test_a_caller_pays_for_the_honest_hosts_tokens_alone_and_gets_its_answer(
        network, alice):
    hostile, honest = network.start_hosts({"host-1": HOSTILE_PRICE, "host-2": HONEST_PRICE},
                                          args={"host-1": ["--behaviour", "malformed"]})
    before = await sync_to_async(lambda: alice.account)()
    prompt = f"Name one fruit. ({nonce()})"
    response = await infer(alice, prompt=prompt)
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["status"] == "done" and body["host"] == honest.address
    job = await Job.objects.aget(pk=body["job_id"])
    bad, good = [a async for a in job.attempts.order_by("number")]
    assert (bad.host_address, bad.state, bad.error_code) == (
        hostile.address, AttemptState.ABANDONED, "HOST_MALFORMED")
    assert bad.tokens == 2  # sent, then taken back
    assert body["text"] == job.text and body["tokens"] == good.tokens == job.tokens
    charge = price_for("free", HONEST_PRICE, body["tokens"]).charge_wei
    assert body["cost"] == str(charge)
    after = await sync_to_async(lambda: alice.account)()
    assert after.balance_wei == before.balance_wei - charge and after.held_wei == 0
    assert await sync_to_async(ledger_invariant_violations)() == []

    again = await infer(alice, prompt=prompt)
    hit = again.json()
    assert hit["cached"] is True and hit["text"] == body["text"] and hit["cost"] == "0"
