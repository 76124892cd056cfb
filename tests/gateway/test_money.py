"""The money invariant after a few hundred randomized requests against a real server
process: successes, failures, cache hits, streams, streams cut off by the client, and
refusals for want of funds. Ledger charges = host payouts + protocol fees + platform fees
+ refunds, to the wei.

The requests go to an OpenAI-compatible upstream of the test's own that answers at once
(hundreds of runs of the real model would not fit in the suite's time); the gateway,
its server process, PostgreSQL and Redis are the real ones."""

import asyncio
import random

import httpx
import pytest
from asgiref.sync import sync_to_async

from accounts.models import EntryKind, LedgerEntry, Reservation, ReservationState
from accounts.selectors import ledger_invariant_violations
from accounts.services import account_set_tier, balance_adjust
from accounts.tiers import price_for
from gateway.models import GatewayRequest
from tests.conftest import MODEL
from tests.gateway.conftest import _named, nonce

pytestmark = pytest.mark.django_db(transaction=True)
REQUESTS = 300


def users():
    made = [_named(name) for name in ("dora", "emil", "fern")]
    for who in made:
        account_set_tier(who.account, tier="premium")
    # Fern can afford only a few requests: some of hers are refused with a 402.
    fern = made[2].account
    balance_adjust(fern, amount_wei=-(fern.balance_wei - 40 * price_for(
        "premium", 10**9, 8).charge_wei), memo="test: a small balance")
    return made


async def test_the_ledger_adds_up_to_the_wei_after_hundreds_of_random_requests(
        upstream, servers):
    url = servers.start({"GATEWAY_UPSTREAM_URL": upstream.url,
                         "GATEWAY_UPSTREAM_PRICE_WEI": str(10**9)})
    people = await sync_to_async(users)()
    rng = random.Random(7)
    tag = nonce()
    sent: list[tuple] = []  # earlier (who, body) pairs, to repeat for cache hits
    outcomes: dict[str, int] = {}

    async def one(http: httpx.AsyncClient, number: int) -> None:
        who = rng.choice(people)
        kind = rng.choices(["inference", "repeat", "fail", "stream", "drop", "chat"],
                           weights=[30, 15, 10, 20, 10, 15])[0]
        tokens = rng.randint(1, 8)
        prompt = f"request {number} {tag}"
        if kind == "repeat" and sent:
            who, path, body = rng.choice(sent)
        elif kind in ("inference", "fail", "repeat"):
            path = "/v1/inference"
            body = {"model": MODEL, "prompt": ("[fail] " if kind == "fail" else "") + prompt,
                    "max_tokens": tokens, "temperature": 0}
        else:
            path = "/v1/chat/completions"
            content = ("[slow] " if kind == "drop" else "") + prompt
            body = {"model": MODEL, "max_tokens": 64 if kind == "drop" else tokens,
                    "temperature": 0, "stream": kind != "chat",
                    "messages": [{"role": "user", "content": content}]}
        if kind == "drop":
            cut = rng.randint(1, 6)
            async with http.stream("POST", path, json=body, headers=who.headers) as answer:
                seen = 0
                async for line in answer.aiter_lines():
                    seen += '"content": "w' in line
                    if seen >= cut:
                        break
            status = answer.status_code
        else:
            answer = await http.post(path, json=body, headers=who.headers)
            status = answer.status_code
            if status == 200 and kind != "fail":
                sent.append((who, path, {**body, "stream": False} if "stream" in body
                             else body))
        outcomes[f"{kind} {status}"] = outcomes.get(f"{kind} {status}", 0) + 1

    async with httpx.AsyncClient(base_url=url, timeout=60) as http:
        for start in range(0, REQUESTS, 10):
            await asyncio.gather(*(one(http, n) for n in range(start, start + 10)))

    # Streams cut off by the client settle a moment later, in the server.
    for _ in range(100):
        if not await Reservation.objects.filter(state=ReservationState.HELD).aexists():
            break
        await asyncio.sleep(0.1)
    assert not await Reservation.objects.filter(state=ReservationState.HELD).aexists()

    kinds = {key.split()[0] for key in outcomes}
    assert {"inference", "repeat", "fail", "stream", "drop", "chat"} <= kinds, outcomes
    assert any(key.endswith(" 402") for key in outcomes), outcomes  # fern ran short
    records = [r async for r in GatewayRequest.objects.all()]
    assert sum(r.cached for r in records) >= 10
    assert sum(r.status == "cancelled" for r in records) >= 5
    assert sum(r.error_code == "UPSTREAM_ERROR" for r in records) >= 10

    assert await sync_to_async(ledger_invariant_violations)() == []
    entries = [e async for e in LedgerEntry.objects.all()]

    def total(kind, field="amount_wei"):
        return sum(getattr(e, field) or 0 for e in entries if e.kind == kind)

    reserved, charged, refunded = (total(EntryKind.RESERVE), total(EntryKind.SETTLE),
                                   total(EntryKind.REFUND))
    host, protocol, platform = (total(EntryKind.SETTLE, "host_payout_wei"),
                                total(EntryKind.SETTLE, "protocol_fee_wei"),
                                total(EntryKind.SETTLE, "platform_fee_wei"))
    assert reserved == host + protocol + platform + refunded
    assert charged == host + protocol + platform and protocol == 0  # upstream: no fee
    # What the requests say they cost is what the ledger charged, request by request.
    assert sum(int(r.cost_wei) for r in records) == charged
    settled = {r.reference: r async for r in Reservation.objects.filter(
        state=ReservationState.SETTLED)}
    for record in records:
        if record.reference in settled:
            reservation = settled[record.reference]
            assert int(reservation.charged_wei) == int(record.cost_wei)
            assert int(reservation.host_payout_wei) == record.tokens * 10**9
    # Cut-off streams were billed for what they got: more than nothing, less than all.
    dropped = [r for r in records if r.status == "cancelled"]
    assert all(0 < r.tokens < 64 and int(r.cost_wei) > 0 for r in dropped)
