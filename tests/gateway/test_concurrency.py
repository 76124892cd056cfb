"""Fifty requests at once against a balance that covers ten: the account's row lock in
PostgreSQL lets exactly ten reserve their worst case; the rest get a 402, and the balance
never goes below zero. Real hosts run the ten."""

import asyncio

import pytest
from asgiref.sync import sync_to_async
from django.test import AsyncClient

from accounts.models import EntryKind, LedgerEntry, Reservation, ReservationState
from accounts.selectors import ledger_invariant_violations
from accounts.services import account_set_tier, balance_adjust
from accounts.tiers import price_for
from tests.conftest import MODEL
from tests.gateway.conftest import nonce

pytestmark = pytest.mark.django_db(transaction=True)
MAX_TOKENS = 4


async def test_fifty_parallel_requests_on_a_balance_for_ten_give_ten_successes(network,
                                                                              alice):
    network.start_hosts({"host-1": 10**9, "host-2": 10**9})
    account = await sync_to_async(lambda: alice.account)()
    await sync_to_async(account_set_tier)(account, tier="premium")  # 1000 a minute
    worst = price_for("premium", 10**9, MAX_TOKENS).charge_wei
    start = 10 * worst + worst - 1  # ten worst cases, and not quite an eleventh
    await sync_to_async(balance_adjust)(account, amount_wei=start - account.balance_wei,
                                        memo="test: a balance for ten")
    tag = nonce()

    async def one(number: int):
        return await AsyncClient().post("/v1/inference", headers=alice.headers, data={
            "model": MODEL, "prompt": f"Count to {number} ({tag}).",
            "max_tokens": MAX_TOKENS, "temperature": 0.0}, content_type="application/json")

    answers = await asyncio.gather(*(one(n) for n in range(50)))
    statuses = sorted(a.status_code for a in answers)
    assert statuses == [200] * 10 + [402] * 40
    for refused in (a for a in answers if a.status_code == 402):
        error = refused.json()["error"]
        assert error["code"] == "INSUFFICIENT_FUNDS" and error["required"] == str(worst)
        assert int(error["available"]) < worst
    charged = sum(int(a.json()["cost"]) for a in answers if a.status_code == 200)
    assert all(a.json()["tokens"] > 0 for a in answers if a.status_code == 200)
    await account.arefresh_from_db()
    assert account.balance_wei == start - charged and account.held_wei == 0
    assert await Reservation.objects.filter(state=ReservationState.SETTLED).acount() == 10
    # Never below zero at any point: every entry's balance after it, in order.
    lowest = min([e.balance_after_wei async for e in LedgerEntry.objects.filter(
        account=account, kind=EntryKind.RESERVE)])
    assert 0 <= lowest < worst
    assert await sync_to_async(ledger_invariant_violations)() == []
