"""The gateway's two ways to the ledger write the same rows: one SQL statement per step
on PostgreSQL (SqlBooks) and accounts.services through the ORM (OrmBooks). Each case
runs through both and checks the same figures, entry by entry."""

import time
import uuid

import pytest
from asgiref.sync import sync_to_async

from accounts.errors import ReservationClosed
from accounts.models import Account, LedgerEntry, Reservation, User
from accounts.selectors import ledger_invariant_violations
from accounts.services import api_key_create, reservation_release
from accounts.tiers import price_for, settlement_for
from gateway.books import OrmBooks, SqlBooks
from gateway.conn import pg_pool
from gateway.errors import GatewayError
from gateway.keys import api_key_lookup
from gateway.models import GatewayRequest
from tests.gateway.conftest import CREDIT

pytestmark = pytest.mark.django_db(transaction=True)
PRICE = 10**9
MAX_TOKENS = 10


@pytest.fixture(params=["sql", "orm"])
async def books(request):
    if request.param == "orm":
        return OrmBooks()
    pool = pg_pool()
    assert pool is not None, "the tests run on PostgreSQL"
    return SqlBooks(pool)


def opening(key, **extra):
    return {"api_key": key, "request_id": uuid.uuid4(), "endpoint": "inference",
            "model": "m", "max_tokens": MAX_TOKENS, "stream": False,
            "started": time.perf_counter(), "price_wei": PRICE,
            "reference": f"gateway:{uuid.uuid4()}", **extra}


def entries(reference: str) -> list[tuple]:
    return [(e.kind, e.amount_wei, e.balance_after_wei, e.held_after_wei, e.host_payout_wei,
             e.protocol_fee_wei, e.platform_fee_wei)
            for e in LedgerEntry.objects.filter(reference=reference).order_by("id")]


async def test_reserve_then_settle_writes_the_reservation_entries_and_record(books, alice):
    key = await api_key_lookup(alice.raw)
    worst = price_for("free", PRICE, MAX_TOKENS).charge_wei
    split = settlement_for("free", PRICE, 4, protocol_fee_bps=250)
    opened = opening(key)
    held = await books.open(**opened)
    assert held.amount_wei == worst and held.tier == "free"
    record = await GatewayRequest.objects.aget(pk=opened["request_id"])
    assert record.status == "running" and record.reference == opened["reference"]

    charged = await books.close(held, request_id=opened["request_id"], price_wei=PRICE,
                                tokens=4, fee_bps=250,
                                fields={"status": "done", "text": "w0 w1 w2 w3",
                                        "host": "h", "finish_reason": "stop"})
    assert charged == split.charged_wei
    assert await sync_to_async(entries)(opened["reference"]) == [
        ("reserve", worst, CREDIT - worst, worst, None, None, None),
        ("settle", split.charged_wei, CREDIT - worst, worst - split.charged_wei,
         split.host_payout_wei, split.protocol_fee_wei, split.platform_fee_wei),
        ("refund", worst - split.charged_wei, CREDIT - split.charged_wei, 0, None, None,
         None)]
    reservation = await Reservation.objects.aget(reference=opened["reference"])
    assert (reservation.state, reservation.charged_wei, reservation.refunded_wei) == (
        "settled", split.charged_wei, worst - split.charged_wei)
    assert (reservation.host_payout_wei, reservation.protocol_fee_wei,
            reservation.platform_fee_wei) == split[1:]
    account = await Account.objects.aget(user=alice.user)
    assert (account.balance_wei, account.held_wei) == (CREDIT - split.charged_wei, 0)
    record = await GatewayRequest.objects.aget(pk=opened["request_id"])
    assert (record.status, record.tokens, record.cost_wei, record.text) == (
        "done", 4, split.charged_wei, "w0 w1 w2 w3")
    assert record.finished_at is not None
    assert await sync_to_async(ledger_invariant_violations)() == []


async def test_no_tokens_releases_everything(books, alice):
    key = await api_key_lookup(alice.raw)
    opened = opening(key)
    held = await books.open(**opened)
    charged = await books.close(held, request_id=opened["request_id"], price_wei=PRICE,
                                tokens=0, fee_bps=0,
                                fields={"status": "failed", "error_code": "UPSTREAM_ERROR",
                                        "error_message": "HTTP 500"})
    assert charged == 0
    worst = held.amount_wei
    assert await sync_to_async(entries)(opened["reference"]) == [
        ("reserve", worst, CREDIT - worst, worst, None, None, None),
        ("refund", worst, CREDIT, 0, None, None, None)]
    reservation = await Reservation.objects.aget(reference=opened["reference"])
    assert (reservation.state, reservation.refunded_wei, reservation.reason) == (
        "released", worst, "UPSTREAM_ERROR")
    record = await GatewayRequest.objects.aget(pk=opened["request_id"])
    assert (record.status, record.error_code, record.cost_wei) == ("failed",
                                                                  "UPSTREAM_ERROR", 0)


async def test_short_of_money_is_a_402_with_the_figures_and_moves_nothing(books, alice):
    key = await api_key_lookup(alice.raw)
    opened = opening(key, max_tokens=10**6)  # far more than the credit covers
    with pytest.raises(GatewayError) as refused:
        await books.open(**opened)
    worst = price_for("free", PRICE, 10**6).charge_wei
    assert refused.value.code == "INSUFFICIENT_FUNDS"
    assert refused.value.extra == {"required": str(worst), "available": str(CREDIT)}
    assert await LedgerEntry.objects.filter(reference=opened["reference"]).acount() == 0
    record = await GatewayRequest.objects.aget(pk=opened["request_id"])
    assert (record.status, record.error_code) == ("failed", "INSUFFICIENT_FUNDS")
    account = await Account.objects.aget(user=alice.user)
    assert (account.balance_wei, account.held_wei) == (CREDIT, 0)


async def test_a_reservation_closed_meanwhile_is_not_closed_twice(books, alice):
    key = await api_key_lookup(alice.raw)
    opened = opening(key)
    held = await books.open(**opened)
    reservation = await Reservation.objects.aget(pk=held.id)
    await sync_to_async(reservation_release)(reservation, reason="swept")  # a sweep
    with pytest.raises(ReservationClosed):
        await books.close(held, request_id=opened["request_id"], price_wei=PRICE,
                          tokens=3, fee_bps=0, fields={"status": "done"})
    assert [kind for kind, *_ in await sync_to_async(entries)(opened["reference"])] == [
        "reserve", "refund"]
    assert await sync_to_async(ledger_invariant_violations)() == []


async def test_settling_again_with_the_same_figures_charges_once(books, alice):
    key = await api_key_lookup(alice.raw)
    opened = opening(key)
    held = await books.open(**opened)
    closing = {"request_id": opened["request_id"], "price_wei": PRICE, "tokens": 3,
               "fee_bps": 0, "fields": {"status": "done"}}
    first = await books.close(held, **closing)
    assert await books.close(held, **closing) == first
    assert [kind for kind, *_ in await sync_to_async(entries)(opened["reference"])] == [
        "reserve", "settle", "refund"]


async def test_a_user_without_an_account_gets_one_with_the_credit_first(books,
                                                                       transactional_db):
    def made():  # as createsuperuser makes users: no account yet
        user = User.objects.create_user(username="carol", password="a-long-password-c")
        return user, api_key_create(user=user, name="carol's key").raw

    user, raw = await sync_to_async(made)()
    key = await api_key_lookup(raw)
    assert key.gateway_account is None
    opened = opening(key)
    held = await books.open(**opened)
    account = await Account.objects.aget(user=user)
    assert (account.balance_wei, account.held_wei) == (CREDIT - held.amount_wei,
                                                       held.amount_wei)


@pytest.mark.parametrize("synchronous", [False, True])
async def test_the_gateways_commits_wait_for_the_disk_only_when_configured(
        synchronous, settings):
    settings.GATEWAY_SYNCHRONOUS_COMMIT = synchronous
    from gateway.conn import gateway_connections_close

    await gateway_connections_close()  # a pool made under the setting
    async with pg_pool().connection() as conn:
        cursor = await conn.execute("SHOW synchronous_commit")
        assert (await cursor.fetchone())[0] == ("on" if synchronous else "off")
    await gateway_connections_close()
