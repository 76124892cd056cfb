"""The till (gateway.till, accounts.till): a request's money on a mirror in Redis, the
ledger's rows written behind it. Exact to the wei in Lua, taken back by every other
change of the account's money, and a stale mirror never moves PostgreSQL's money."""

import asyncio
import random

import httpx
import pytest
import redis
from asgiref.sync import sync_to_async
from django.conf import settings as django_settings
from django.test import AsyncClient
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from accounts import till as mirror
from accounts.models import Account, Reservation, ReservationState
from accounts.selectors import ledger_invariant_violations
from accounts.services import account_set_tier, balance_adjust
from accounts.tiers import price_for
from gateway.models import GatewayRequest
from observability.metrics import till_counts
from tests.conftest import MODEL
from tests.gateway.conftest import _named, nonce

pytestmark = pytest.mark.django_db(transaction=True)
MAX_TOKENS = 4


@pytest.fixture(autouse=True)
def till_on(settings):
    """The till is off by default (docs/gateway.md says why): these tests turn it on, here
    and in the server processes they start."""
    settings.GATEWAY_TILL = True
PRICE = 10**9


def _redis():
    return redis.Redis.from_url(django_settings.REDIS_URL)


def _mirror(account_id: int) -> dict:
    return {k.decode(): v.decode() for k, v in _redis().hgetall(mirror.key(account_id)).items()}


def _counts() -> dict:
    till_counts.flush()
    return till_counts.read()


# ---- The scripts' arithmetic ----------------------------------------------------------

WEI = st.integers(min_value=0, max_value=10**45)


@hypothesis_settings(max_examples=60, deadline=None)
@given(start=WEI, steps=st.lists(st.tuples(st.booleans(), WEI), max_size=12))
def test_the_scripts_count_wei_exactly_far_beyond_a_double(start, steps):
    client = _redis()
    name = "inkmarket:till:test-arithmetic"
    client.eval(mirror.INSTALL, 1, name, "g", str(start), "", "0")
    balance = start
    for is_reserve, amount in steps:
        if is_reserve:
            answer = client.eval(mirror.RESERVE, 1, name, str(amount), "1")
            if amount <= balance:
                balance -= amount
                assert answer[0] == b"ok" and int(answer[2]) == balance
            else:
                assert answer == [b"short", str(balance).encode()]
        else:
            assert client.eval(mirror.REFUND, 1, name, "g", str(amount), "1") == 1
            balance += amount
        assert int(client.hget(name, "bal")) == balance
    client.delete(name)


def test_a_mirror_of_another_generation_takes_no_refund_and_is_replaced():
    client = _redis()
    name = "inkmarket:till:test-generation"
    assert client.eval(mirror.INSTALL, 1, name, "g1", "100", "", "0") == 1
    assert client.eval(mirror.REFUND, 1, name, "g0", "5", "1") == 0
    # The generation PostgreSQL names is kept; any other is replaced.
    assert client.eval(mirror.INSTALL, 1, name, "g2", "7", "g1", "0") == 0
    assert client.eval(mirror.INSTALL, 1, name, "g3", "7", "gX", "0") == 1
    assert client.hget(name, "bal") == b"7" and client.hget(name, "gen") == b"g3"
    assert client.eval(mirror.CLOSE, 1, name, "g3") == 0
    assert client.eval(mirror.RESERVE, 1, name, "1", "1") == [b"closed"]
    assert client.eval(mirror.DROP, 1, name, "g3") == 1
    assert client.eval(mirror.RESERVE, 1, name, "1", "1") == [b"miss"]


# ---- Requests on the till -------------------------------------------------------------


async def _ask(who, prompt: str, **extra):
    return await AsyncClient().post("/v1/inference", headers=who.headers, data={
        "model": MODEL, "prompt": prompt, "max_tokens": MAX_TOKENS, "temperature": 0.0,
        **extra}, content_type="application/json")


async def test_a_request_reserves_on_the_mirror_and_its_rows_are_written_before_its_answer(
        upstream, alice):
    account = await sync_to_async(lambda: alice.account)()
    before = account.balance_wei
    answer = await _ask(alice, f"one {nonce()}")
    assert answer.status_code == 200, answer.content
    cost = int(answer.json()["cost"])
    assert cost > 0
    await account.arefresh_from_db()
    # The rows are there the moment the answer is: settled, the balance down by the cost.
    assert account.balance_wei == before - cost and account.held_wei == 0
    reservation = await Reservation.objects.aget(account=account)
    assert reservation.state == ReservationState.SETTLED
    assert reservation.charged_wei == cost
    record = await GatewayRequest.objects.aget(pk=answer.json()["id"])
    assert record.cost_wei == cost and record.status == "done"
    # The mirror PostgreSQL names holds the same balance, nothing unwritten.
    held = _mirror(account.pk)
    assert account.till and held["gen"] == account.till
    assert int(held["bal"]) == account.balance_wei
    # Its steps are told to the mirror as written with the next script, or soon after.
    for _ in range(100):
        if _mirror(account.pk)["n"] == "0":
            break
        await asyncio.sleep(0.01)
    assert _mirror(account.pk)["n"] == "0"
    assert await sync_to_async(ledger_invariant_violations)() == []


async def test_any_other_change_of_the_money_takes_it_back_from_the_till(upstream, alice):
    account = await sync_to_async(lambda: alice.account)()
    assert (await _ask(alice, f"first {nonce()}")).status_code == 200
    await account.arefresh_from_db()
    first = account.till
    assert first and _mirror(account.pk)
    await sync_to_async(balance_adjust)(account, amount_wei=12345, memo="test: a gift")
    await account.arefresh_from_db()
    assert account.till == "" and _mirror(account.pk) == {}
    # The next request mirrors the balance afresh, the gift included.
    assert (await _ask(alice, f"second {nonce()}")).status_code == 200
    await account.arefresh_from_db()
    held = _mirror(account.pk)
    assert account.till not in ("", first) and held["gen"] == account.till
    assert int(held["bal"]) == account.balance_wei
    assert await sync_to_async(ledger_invariant_violations)() == []


async def test_a_stale_mirror_moves_no_money_and_the_platform_bears_the_request(
        upstream, alice):
    """A mirror whose generation PostgreSQL no longer names (taken back while a step of
    it was unwritten, or left by a Redis that lost its data and came back): what it
    admits is served, never charged, and recorded so."""
    account = await sync_to_async(lambda: alice.account)()
    assert (await _ask(alice, f"first {nonce()}")).status_code == 200
    await account.arefresh_from_db()
    await Account.objects.filter(pk=account.pk).aupdate(till="taken-back")
    before = await Account.objects.aget(pk=account.pk)
    written_off = _counts().get("written_off", 0)
    answer = await _ask(alice, f"stale {nonce()}")
    assert answer.status_code == 200, answer.content
    assert answer.json()["cost"] == "0" and answer.json()["tokens"] == MAX_TOKENS
    after = await Account.objects.aget(pk=account.pk)
    assert (after.balance_wei, after.held_wei) == (before.balance_wei, before.held_wei)
    record = await GatewayRequest.objects.aget(pk=answer.json()["id"])
    assert record.error_code == "NOT_BILLED" and record.cost_wei == 0
    assert record.user_id == alice.user.pk
    assert _counts().get("written_off", 0) == written_off + 1
    assert await sync_to_async(ledger_invariant_violations)() == []


async def test_the_reconcile_resets_a_mirror_left_with_steps_a_dead_process_never_wrote(
        upstream, alice):
    account = await sync_to_async(lambda: alice.account)()
    assert (await _ask(alice, f"first {nonce()}")).status_code == 200
    await account.arefresh_from_db()
    # A process reserved on the mirror and died before writing: the mirror holds the
    # reservation, PostgreSQL never heard of it.
    worst = price_for(account.tier, PRICE, MAX_TOKENS).charge_wei
    _redis().eval(mirror.RESERVE, 1, mirror.key(account.pk), str(worst), "0")
    counts = await sync_to_async(mirror.till_reconcile)(stuck_s=0)
    assert counts["stuck"] == 1
    await account.arefresh_from_db()
    assert account.till == "" and _mirror(account.pk) == {}
    # The user was not charged for it, and the next mirror starts from PostgreSQL's figure.
    assert (await _ask(alice, f"after {nonce()}")).status_code == 200
    await account.arefresh_from_db()
    assert int(_mirror(account.pk)["bal"]) == account.balance_wei
    assert (await sync_to_async(mirror.till_reconcile)())["drift"] == 0


# ---- Processes and faults -------------------------------------------------------------


def _poor(name: str, requests: int):
    who = _named(name)
    account_set_tier(who.account, tier="premium")
    worst = price_for("premium", PRICE, MAX_TOKENS).charge_wei
    account = who.account
    balance_adjust(account, amount_wei=requests * worst + worst - 1 - account.balance_wei,
                   memo="test: a balance for a few")
    return who, worst


async def _burst(urls: list[str], who, count: int, prompt: str) -> list[httpx.Response]:
    async with httpx.AsyncClient(timeout=60) as http:
        return await asyncio.gather(*(http.post(
            f"{urls[n % len(urls)]}/v1/inference", headers=who.headers,
            json={"model": MODEL, "prompt": f"{prompt} {n}", "max_tokens": MAX_TOKENS,
                  "temperature": 0.0}) for n in range(count)))


async def test_two_server_processes_on_one_mirror_spend_a_balance_exactly_once(
        upstream, servers):
    env = {"GATEWAY_UPSTREAM_URL": upstream.url, "GATEWAY_UPSTREAM_PRICE_WEI": str(PRICE),
           "GATEWAY_TILL": "1"}
    urls = [servers.start(env), servers.start(env)]
    who, worst = await sync_to_async(_poor)("gina", 12)
    answers = await _burst(urls, who, 60, f"split {nonce()}")
    statuses = sorted(a.status_code for a in answers)
    assert statuses == [200] * 12 + [402] * 48, statuses
    charged = sum(int(a.json()["cost"]) for a in answers if a.status_code == 200)
    account = await Account.objects.aget(user=who.user)
    assert account.balance_wei == 12 * worst + worst - 1 - charged and account.held_wei == 0
    assert int(_mirror(account.pk)["bal"]) == account.balance_wei
    assert await sync_to_async(ledger_invariant_violations)() == []


async def test_a_worker_killed_mid_request_costs_its_user_nothing_and_is_reconciled(
        upstream, servers, settings):
    """SIGKILL while requests run: what they reserved is given back (by the reconcile of
    the mirror and the sweep of reservations), nobody is charged for an answer they never
    got, and the books add up."""
    env = {"GATEWAY_UPSTREAM_URL": upstream.url, "GATEWAY_UPSTREAM_PRICE_WEI": str(PRICE),
           "GATEWAY_TILL": "1"}
    url = servers.start(env)
    who, worst = await sync_to_async(_poor)("hugo", 400)
    account = await Account.objects.aget(user=who.user)
    start = account.balance_wei
    async with httpx.AsyncClient(timeout=30) as http:
        done = await http.post(f"{url}/v1/inference", headers=who.headers, json={
            "model": MODEL, "prompt": f"before {nonce()}", "max_tokens": MAX_TOKENS})
        assert done.status_code == 200
        async def slow(n: int) -> None:
            async with http.stream("POST", f"{url}/v1/chat/completions", headers=who.headers,
                                   json={"model": MODEL, "max_tokens": 60, "stream": True,
                                         "messages": [{"role": "user",
                                                       "content": f"[slow] {n} {nonce()}"}]}
                                   ) as answer:
                assert answer.status_code == 200
                async for _ in answer.aiter_lines():
                    pass

        streams = [asyncio.ensure_future(slow(n)) for n in range(5)]
        await asyncio.sleep(1.0)
        servers.procs[0].kill()
        for stream in streams:
            with pytest.raises(httpx.HTTPError):
                await stream
    from marketplace.processor import reservations_release_stale

    settings.OPS_RESERVATION_MAX_AGE_S = 0
    await sync_to_async(mirror.till_reconcile)(stuck_s=0)
    await sync_to_async(reservations_release_stale)()
    account = await Account.objects.aget(user=who.user)
    assert account.held_wei == 0
    assert not await Reservation.objects.filter(account=account,
                                                state=ReservationState.HELD).aexists()
    assert account.balance_wei == start - int(done.json()["cost"])
    assert await sync_to_async(ledger_invariant_violations)() == []
    # A new process serves the account from PostgreSQL's figure.
    url = servers.start(env)
    answers = await _burst([url], who, 40, f"after {nonce()}")
    paid = sum(int(a.json()["cost"]) for a in answers if a.status_code == 200)
    assert {a.status_code for a in answers} == {200}
    account = await Account.objects.aget(user=who.user)
    assert account.balance_wei == start - int(done.json()["cost"]) - paid >= 0
    assert await sync_to_async(ledger_invariant_violations)() == []


async def test_redis_losing_its_data_under_load_loses_no_money(upstream, servers):
    """Every mirror gone at once (a Redis restarted without its data) while requests run:
    the requests finish, the next ones mirror PostgreSQL afresh, the balance never goes
    below zero, and what the lost mirrors admitted is either billed or borne by the
    platform, never both and never twice."""
    env = {"GATEWAY_UPSTREAM_URL": upstream.url, "GATEWAY_UPSTREAM_PRICE_WEI": str(PRICE),
           "GATEWAY_TILL": "1"}
    urls = [servers.start(env), servers.start(env)]
    who, worst = await sync_to_async(_poor)("ines", 40)
    rng = random.Random(3)

    async def flusher():
        for _ in range(6):
            await asyncio.sleep(rng.uniform(0.05, 0.2))
            for name in _redis().scan_iter(match=mirror.PATTERN):
                _redis().delete(name)

    answers, _ = await asyncio.gather(_burst(urls, who, 120, f"loss {nonce()}"), flusher())
    assert {a.status_code for a in answers} <= {200, 402}
    served = {a.json()["id"]: int(a.json()["cost"]) for a in answers if a.status_code == 200}
    start = 40 * worst + worst - 1
    # The rows follow the answers (each waits for its own at most GATEWAY_TILL_WAIT_MS).
    for _ in range(200):
        account = await Account.objects.aget(user=who.user)
        records = {str(r.id): r async for r in GatewayRequest.objects.filter(
            user=who.user, status="done")}
        if account.held_wei == 0 and set(served) <= set(records):
            break
        await asyncio.sleep(0.05)
    assert account.held_wei == 0 and account.balance_wei >= 0
    charged = start - account.balance_wei
    assert charged == sum(r.cost_wei for r in records.values())
    # Each request served was billed what its answer said, or, admitted by a mirror
    # that was lost before its reservation was written, not at all (the platform's).
    for request_id, cost in served.items():
        record = records[request_id]
        assert record.cost_wei == cost or (record.error_code == "NOT_BILLED"
                                           and record.cost_wei == 0), (record, cost)
    assert await sync_to_async(ledger_invariant_violations)() == []
    # What the losses left off PostgreSQL's figure is taken back; then all agree.
    await sync_to_async(mirror.till_reconcile)()
    assert (await sync_to_async(mirror.till_reconcile)())["drift"] == 0


async def test_postgresql_connections_cut_under_load_delay_the_rows_but_lose_none(
        upstream, servers):
    env = {"GATEWAY_UPSTREAM_URL": upstream.url, "GATEWAY_UPSTREAM_PRICE_WEI": str(PRICE),
           "GATEWAY_TILL": "1"}
    url = servers.start(env)
    who, worst = await sync_to_async(_poor)("jude", 1000)
    database = django_settings.DATABASES["default"]["NAME"]

    def cut() -> int:
        from django.db import connection

        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                           "WHERE datname = %s AND application_name = 'inkmarket-gateway'",
                           [database])
            return len(cursor.fetchall())

    async def cutter() -> int:
        cuts = 0
        for _ in range(4):
            await asyncio.sleep(0.15)
            cuts += await sync_to_async(cut)()
        return cuts

    answers, cuts = await asyncio.gather(_burst([url], who, 80, f"cut {nonce()}"), cutter())
    assert cuts >= 4  # the gateway's connections, cut while it worked
    served = [a for a in answers if a.status_code == 200]
    assert len(served) >= 40, sorted(a.status_code for a in answers)
    # A request whose key was being read on a connection as it was cut fails (500), with
    # nothing reserved; every other is served.
    assert all(a.status_code in (200, 500) for a in answers)
    billed = sum(int(a.json()["cost"]) for a in served)
    # An answer waits for its rows at most GATEWAY_TILL_WAIT_MS; the rest follow as soon
    # as PostgreSQL takes them.
    expected = 1000 * worst + worst - 1 - billed
    for _ in range(200):
        account = await Account.objects.aget(user=who.user)
        if (account.balance_wei, account.held_wei) == (expected, 0):
            break
        await asyncio.sleep(0.05)
    assert (account.balance_wei, account.held_wei) == (expected, 0)
    assert await sync_to_async(ledger_invariant_violations)() == []
