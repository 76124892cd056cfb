"""Our side of the payment channels (marketplace.channels) on a real anvil chain and
PostgreSQL: leases, vouchers durable before they are sent and consistent under
concurrent streams, one open per host however many callers ask at once, and the beat's
top-ups, exits, closes and books."""

from __future__ import annotations

import asyncio
import random
import threading
from datetime import timedelta

import pytest
from asgiref.sync import sync_to_async
from django.db import connections
from django.utils import timezone

from marketplace.chain.channels import Channels, ChannelState, Voucher, VoucherSigner
from marketplace.channels import (
    ChannelError,
    channel_ensure,
    channel_lease,
    channel_pay,
    channel_release,
    channels_chain_violations,
    channels_maintain,
    channels_reconcile,
)
from marketplace.jobs import attempt_create, job_create
from marketplace.models import JobAttempt, PaymentChannel, PaymentChannelState
from tests.conftest import MODEL

pytestmark = pytest.mark.django_db(transaction=True)

PRICE = 10**9
DEPOSIT = 10**16


@pytest.fixture
def channel_settings(settings):
    settings.MARKETPLACE_CHANNEL_DEPOSIT_WEI = DEPOSIT
    settings.MARKETPLACE_CHANNEL_TOP_UP_WEI = DEPOSIT
    settings.MARKETPLACE_CHANNEL_LOW_WATER_WEI = DEPOSIT // 4
    settings.MARKETPLACE_CHANNEL_IDLE_EXIT_S = 86400
    settings.MARKETPLACE_CHANNEL_OPEN_WAIT_S = 30
    return settings


@pytest.fixture
async def hosts(on_anvil, channel_settings):
    """host-1 and host-2 registered; our chain is the platform wallet's."""
    for role in ("host-1", "host-2"):
        await on_anvil.chain(role).register(api_url=f"http://127.0.0.1:1/{role}", metadata={},
                                            prices={MODEL: PRICE}, stake=10**16)
    return on_anvil


def platform(net):
    """The platform wallet's handle, made once per test (opening a keystore is slow)."""
    if not hasattr(net, "platform_chain"):
        net.platform_chain = net.chain("platform")
    return net.platform_chain


def key_of(net, role: str) -> bytes:
    chain = platform(net) if role == "platform" else net.chain(role)
    return bytes(chain.sender.account.key)


def attempt_for(host: str) -> JobAttempt:
    job = job_create(model=MODEL, prompt="p", max_tokens=64, temperature=0.0)
    return attempt_create(job_id=job.id, host_address=host, host_url="http://127.0.0.1:1",
                          price_per_token_wei=PRICE, start_index=0)


def lease_on(channel: PaymentChannel, need: int):
    return channel_lease(chain_id=channel.chain_id, contract=channel.contract,
                         host_address=channel.host_address, need_wei=need)


def open_row(net, host: str, *, deposit: int = DEPOSIT, channel_id: int = 1,
             **fields) -> PaymentChannel:
    """A channel row as channel_ensure leaves it, for tests of the books alone."""
    return PaymentChannel.objects.create(
        chain_id=net.deployment.chain_id, contract=net.deployment.channels, channel_id=channel_id,
        payer_address=platform(net).address, host_address=host, deposit_wei=deposit,
        state=PaymentChannelState.OPEN, last_used_at=timezone.now(), **fields)


async def time_travel(net, seconds: int) -> None:
    w3 = platform(net).w3
    await w3.provider.make_request("evm_increaseTime", [seconds])
    await w3.provider.make_request("evm_mine", [])


# ---- leases and payments ------------------------------------------------------------------


async def test_payments_sign_the_running_total_and_the_host_can_redeem_it(hosts):
    net = hosts
    host = net.chain("host-1")
    channel = await channel_ensure(platform(net), host.address)
    assert channel.state == PaymentChannelState.OPEN and channel.open_tx.startswith("0x")
    on_chain = await Channels(host).get(channel.channel_id)
    assert (on_chain.payer, on_chain.host, on_chain.deposit) == (
        platform(net).address, host.address, DEPOSIT)
    attempt = await sync_to_async(attempt_for)(host.address)

    lease = await sync_to_async(lease_on)(channel, 10**12)
    assert lease.reserved_wei == 10**12 and lease.channel_id == channel.channel_id
    first = await sync_to_async(channel_pay)(lease=lease, attempt_id=attempt.pk, add_wei=3 * 10**11,
                                             private_key=key_of(net, "platform"))
    second = await sync_to_async(channel_pay)(lease=lease, attempt_id=attempt.pk,
                                              add_wei=2 * 10**11,
                                              private_key=key_of(net, "platform"))
    assert (first.amount, second.amount) == (3 * 10**11, 5 * 10**11)
    row = await PaymentChannel.objects.aget(pk=channel.pk)
    # Durable before it is sent: the row already holds the latest voucher.
    assert (int(row.spent_wei), row.signature) == (5 * 10**11, "0x" + second.signature.hex())
    assert int(row.reserved_wei) == 5 * 10**11
    await sync_to_async(channel_release)(lease=lease, unused_wei=5 * 10**11)
    await sync_to_async(channel_release)(lease=lease, unused_wei=5 * 10**11)  # once only
    await row.arefresh_from_db()
    assert int(row.reserved_wei) == 0
    await attempt.arefresh_from_db()
    assert (int(attempt.voucher_wei), attempt.channel_id) == (5 * 10**11, channel.pk)

    # The host closes with the latest voucher by itself; the beat records how it ended.
    Channels(host).vouchers.check(second, platform(net).address)
    settled = await Channels(host).close(second)
    done = await channels_maintain(platform(net))
    assert done.get("closed by host") == 1
    await row.arefresh_from_db()
    assert row.state == PaymentChannelState.CLOSED and row.close_tx == settled.tx_hash
    assert (int(row.host_amount_wei), int(row.fee_wei), int(row.refund_wei)) == (
        settled.host_amount, settled.fee, settled.refund)
    assert settled.host_amount + settled.fee == 5 * 10**11
    assert row.closed_by_exit is False
    # The refund came back to the platform wallet, and the books hold.
    assert await Channels(host).withdrawable(platform(net).address) == 0
    assert await sync_to_async(channels_reconcile)() == []
    assert await channels_chain_violations(platform(net)) == []


async def test_a_payment_over_the_deposit_is_refused_and_changes_nothing(hosts):
    net = hosts
    host = net.chain("host-1").address
    channel = await sync_to_async(open_row)(net, host, deposit=10**6)
    attempt = await sync_to_async(attempt_for)(host)
    lease = await sync_to_async(lease_on)(channel, 10**6)
    await sync_to_async(channel_pay)(lease=lease, attempt_id=attempt.pk, add_wei=10**6 - 1,
                                     private_key=key_of(net, "platform"))
    with pytest.raises(ChannelError) as refused:
        await sync_to_async(channel_pay)(lease=lease, attempt_id=attempt.pk, add_wei=2,
                                         private_key=key_of(net, "platform"))
    assert refused.value.code == "OVER_DEPOSIT"
    await channel.arefresh_from_db()
    await attempt.arefresh_from_db()
    assert (int(channel.spent_wei), int(attempt.voucher_wei)) == (10**6 - 1, 10**6 - 1)
    with pytest.raises(ChannelError) as negative:
        await sync_to_async(channel_pay)(lease=lease, attempt_id=attempt.pk, add_wei=-1,
                                         private_key=key_of(net, "platform"))
    assert negative.value.code == "INVALID_AMOUNT"


async def test_a_lease_over_the_headroom_is_refused_and_the_beat_tops_the_channel_up(hosts):
    net = hosts
    host = net.chain("host-1").address
    channel = await channel_ensure(platform(net), host)
    held = await sync_to_async(lease_on)(channel, DEPOSIT - DEPOSIT // 8)
    assert held is not None
    assert await sync_to_async(lease_on)(channel, DEPOSIT // 4) is None  # reserved counts
    await channel.arefresh_from_db()
    assert channel.wants_top_up

    done = await channels_maintain(platform(net))

    assert done.get("topped up") == 1
    await channel.arefresh_from_db()
    assert int(channel.deposit_wei) == 2 * DEPOSIT and not channel.wants_top_up
    assert (await Channels(platform(net)).get(channel.channel_id)).deposit == 2 * DEPOSIT
    assert [e["kind"] for e in channel.txs] == ["top-up"]
    assert await sync_to_async(lease_on)(channel, DEPOSIT // 4) is not None
    assert (await channels_maintain(platform(net))).get("topped up") is None  # enough now
    assert await channels_chain_violations(platform(net)) == []


def test_concurrent_streams_keep_the_cumulative_amount_exact(on_anvil, channel_settings):
    """8 streams × 50 payments at once on one channel, each in its own thread with its own
    database connection: every voucher signs a distinct running total and the last one is
    the sum of all payments."""
    net = on_anvil
    host = net.chain("host-1").address
    channel = open_row(net, host)
    attempts = [attempt_for(host) for _ in range(8)]
    key = key_of(net, "platform")
    paid: dict[int, int] = {}
    amounts: list[int] = []
    failures: list[BaseException] = []
    start = threading.Barrier(8)

    def stream(attempt: JobAttempt, seed: int) -> None:
        rng = random.Random(seed)
        try:
            lease = lease_on(channel, 10**14)
            start.wait(timeout=60)
            total = 0
            for _ in range(50):
                add = rng.randrange(1, 2 * 10**12)
                voucher = channel_pay(lease=lease, attempt_id=attempt.pk, add_wei=add,
                                      private_key=key)
                amounts.append(voucher.amount)
                total += add
            channel_release(lease=lease, unused_wei=10**14 - total)
            paid[attempt.pk] = total
        except BaseException as exc:
            failures.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=stream, args=(a, i)) for i, a in enumerate(attempts)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert failures == []
    channel.refresh_from_db()
    assert int(channel.spent_wei) == sum(paid.values())
    assert int(channel.reserved_wei) == 0
    assert len(set(amounts)) == 400 and max(amounts) == int(channel.spent_wei)
    for attempt in attempts:
        attempt.refresh_from_db()
        assert int(attempt.voucher_wei) == paid[attempt.pk]
    signer = VoucherSigner(net.deployment.chain_id, net.deployment.channels)
    latest = Voucher(channel.channel_id, int(channel.spent_wei),
                     bytes.fromhex(channel.signature.removeprefix("0x")))
    assert signer.signer(latest) == platform(net).address
    assert channels_reconcile() == []


PAYER_SCRIPT = """
import json, os, random, sys
import django
django.setup()
from django.db import connections
from marketplace.channels import channel_lease, channel_pay, channel_release
args = json.loads(sys.argv[1])
rng = random.Random(args["seed"])
lease = channel_lease(chain_id=args["chain_id"], contract=args["contract"],
                      host_address=args["host"], need_wei=10**14)
print("ready", flush=True)
sys.stdin.readline()
amounts, total = [], 0
for _ in range(50):
    add = rng.randrange(1, 2 * 10**12)
    amounts.append(channel_pay(lease=lease, attempt_id=args["attempt"], add_wei=add,
                               private_key=bytes.fromhex(args["key"])).amount)
    total += add
channel_release(lease=lease, unused_wei=10**14 - total)
connections.close_all()
print(json.dumps({"total": total, "amounts": amounts}), flush=True)
"""


def test_payers_in_separate_processes_keep_the_cumulative_amount_exact(on_anvil,
                                                                       channel_settings):
    """4 processes × 50 payments at once on one channel, as several ASGI replicas and
    workers would: the running totals they sign never collide and add up."""
    import json
    import os
    import subprocess
    import sys

    from tests.conftest import ROOT

    net = on_anvil
    host = net.chain("host-1").address
    channel = open_row(net, host)
    attempts = [attempt_for(host) for _ in range(4)]
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings.test",
           "DATABASE_URL": "postgres://{USER}@{HOST}:{PORT}/{NAME}".format(
               **connections["default"].settings_dict)}
    procs = [subprocess.Popen(
        [sys.executable, "-c", PAYER_SCRIPT, json.dumps({
            "chain_id": channel.chain_id, "contract": channel.contract, "host": host,
            "attempt": attempt.pk, "key": key_of(net, "platform").hex(), "seed": i})],
        cwd=ROOT, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        for i, attempt in enumerate(attempts)]
    try:
        for proc in procs:
            assert proc.stdout.readline().strip() == "ready"
        for proc in procs:  # all at once
            proc.stdin.write("go\n")
            proc.stdin.flush()
        results = [json.loads(proc.stdout.readline()) for proc in procs]
    finally:
        for proc in procs:
            proc.stdin.close()
            proc.wait(timeout=60)
            proc.stdout.close()

    channel.refresh_from_db()
    amounts = [a for r in results for a in r["amounts"]]
    assert len(set(amounts)) == 200 and max(amounts) == int(channel.spent_wei)
    assert int(channel.spent_wei) == sum(r["total"] for r in results)
    assert int(channel.reserved_wei) == 0
    for attempt, result in zip(attempts, results, strict=True):
        attempt.refresh_from_db()
        assert int(attempt.voucher_wei) == result["total"]
    assert channels_reconcile() == []


# ---- opening ------------------------------------------------------------------------------


async def test_callers_at_once_open_one_channel(hosts):
    net = hosts
    host = net.chain("host-2").address
    results: list = []

    def caller() -> None:
        async def run():
            chain = net.chain("platform")
            try:
                return await channel_ensure(chain, host)
            finally:
                await chain.close()

        results.append(asyncio.run(run()))

    threads = [threading.Thread(target=caller) for _ in range(4)]
    for thread in threads:
        thread.start()
    await asyncio.gather(*(asyncio.to_thread(t.join) for t in threads))
    here = await asyncio.gather(*(channel_ensure(platform(net), host) for _ in range(3)))

    assert {c.pk for c in [*results, *here]} == {results[0].pk}
    assert await PaymentChannel.objects.acount() == 1
    contract = Channels(platform(net)).contract
    assert await contract.functions.channelCount().call() == 1


async def test_an_open_to_a_host_not_in_the_registry_fails_and_is_recorded(hosts):
    net = hosts
    stranger = net.chain("host-3").address
    assert await channel_ensure(platform(net), stranger) is None
    row = await PaymentChannel.objects.aget(host_address=stranger)
    assert row.state == PaymentChannelState.FAILED and "HostNotActive" in row.error
    # FAILED frees the host's slot: a later call may try again.
    assert await channel_ensure(platform(net), stranger) is None
    assert await PaymentChannel.objects.filter(host_address=stranger).acount() == 2


async def test_the_beat_resolves_opens_a_crash_cut_short(hosts, channel_settings):
    net = hosts
    key = {"chain_id": net.deployment.chain_id, "contract": net.deployment.channels,
           "payer_address": platform(net).address}
    long_ago = timezone.now() - timedelta(hours=1)
    sent = await PaymentChannel.objects.acreate(host_address=net.chain("host-1").address,
                                                **key)
    never_sent = await PaymentChannel.objects.acreate(
        host_address=net.chain("host-2").address, **key)
    await PaymentChannel.objects.filter(pk__in=[sent.pk, never_sent.pk]).aupdate(
        created=long_ago)
    # The process that made the row sent the open and died before recording it.
    channel_id = await Channels(platform(net)).open(sent.host_address, DEPOSIT)

    done = await channels_maintain(platform(net))

    assert (done.get("opened"), done.get("failed")) == (1, 1)
    await sent.arefresh_from_db()
    await never_sent.arefresh_from_db()
    assert (sent.state, sent.channel_id, int(sent.deposit_wei)) == (
        PaymentChannelState.OPEN, channel_id, DEPOSIT)
    assert sent.open_tx.startswith("0x")
    assert never_sent.state == PaymentChannelState.FAILED


# ---- exits -------------------------------------------------------------------------------


async def test_an_idle_channel_is_exited_and_its_deposit_comes_back(hosts):
    net = hosts
    host = net.chain("host-1").address
    channel = await channel_ensure(platform(net), host)
    attempt = await sync_to_async(attempt_for)(host)
    lease = await sync_to_async(lease_on)(channel, 10**12)
    await sync_to_async(channel_pay)(lease=lease, attempt_id=attempt.pk, add_wei=10**12,
                                     private_key=key_of(net, "platform"))
    assert (await channels_maintain(platform(net))).get("exit started") is None  # in use
    await PaymentChannel.objects.filter(pk=channel.pk).aupdate(
        last_used_at=timezone.now() - timedelta(days=2))

    done = await channels_maintain(platform(net))

    assert done.get("exit started") == 1
    await channel.arefresh_from_db()
    assert channel.state == PaymentChannelState.EXITING and channel.exit_at is not None
    channels = Channels(platform(net))
    assert (await channels.get(channel.channel_id)).state == ChannelState.EXITING
    assert await sync_to_async(lease_on)(channel, 1) is None  # no new streams on it
    with pytest.raises(ChannelError) as refused:
        await sync_to_async(channel_pay)(lease=lease, attempt_id=attempt.pk, add_wei=1,
                                         private_key=key_of(net, "platform"))
    assert refused.value.code == "CHANNEL_NOT_OPEN"
    assert (await channels_maintain(platform(net))).get("exit finished") is None  # too soon

    await time_travel(net, await channels.challenge_period() + 1)
    before = await platform(net).w3.eth.get_balance(platform(net).address)
    done = await channels_maintain(platform(net))

    assert done.get("exit finished") == 1 and done.get("withdrawn") == 1
    await channel.arefresh_from_db()
    assert channel.state == PaymentChannelState.CLOSED and channel.closed_by_exit
    # The host slept through the challenge period: it gets nothing, we get it all back.
    assert (int(channel.host_amount_wei), int(channel.fee_wei), int(channel.refund_wei)) == (
        0, 0, DEPOSIT)
    after = await platform(net).w3.eth.get_balance(platform(net).address)
    assert after - before > DEPOSIT - 10**15  # less gas
    assert await sync_to_async(channels_reconcile)() == []
    assert await channels_chain_violations(platform(net)) == []
    # A new stream to the host gets a new channel.
    again = await channel_ensure(platform(net), host)
    assert again.pk != channel.pk and again.channel_id != channel.channel_id


async def test_a_channel_to_a_host_that_left_the_registry_is_exited(hosts):
    net = hosts
    host = net.chain("host-2")
    channel = await channel_ensure(platform(net), host.address)
    await host.request_unregister()

    done = await channels_maintain(platform(net))

    assert done.get("exit started") == 1
    await channel.arefresh_from_db()
    assert channel.state == PaymentChannelState.EXITING
    assert channel.txs[0]["why"] == "host left the registry"


async def test_stale_reservations_of_dead_streams_are_freed(hosts, channel_settings):
    net = hosts
    channel = await channel_ensure(platform(net), net.chain("host-1").address)
    await sync_to_async(lease_on)(channel, 10**15)  # its process dies with the lease
    await PaymentChannel.objects.filter(pk=channel.pk).aupdate(
        last_used_at=timezone.now() - timedelta(seconds=channel_settings
                                                .MARKETPLACE_CHANNEL_LEASE_MAX_S + 1))
    done = await channels_maintain(platform(net))
    assert done.get("leases freed") == 1
    await channel.arefresh_from_db()
    assert int(channel.reserved_wei) == 0 and channel.state == PaymentChannelState.OPEN


# ---- the books ---------------------------------------------------------------------------


def test_the_books_catch_what_does_not_add_up(on_anvil, channel_settings):
    net = on_anvil
    host = net.chain("host-1").address
    channel = open_row(net, host)
    attempt = attempt_for(host)
    lease = lease_on(channel, 10**12)
    channel_pay(lease=lease, attempt_id=attempt.pk, add_wei=10**12,
                private_key=key_of(net, "platform"))
    assert channels_reconcile() == []

    PaymentChannel.objects.filter(pk=channel.pk).update(spent_wei=2 * 10**12)
    problems = channels_reconcile()
    assert len(problems) == 1 and "its attempts paid 1000000000000 wei" in problems[0]

    PaymentChannel.objects.filter(pk=channel.pk).update(
        spent_wei=10**12, state=PaymentChannelState.CLOSED, host_amount_wei=2 * 10**12,
        fee_wei=0, refund_wei=DEPOSIT - 2 * 10**12)
    problems = channels_reconcile()
    assert len(problems) == 1 and "more than the 1000000000000 wei we signed" in problems[0]

    PaymentChannel.objects.filter(pk=channel.pk).update(host_amount_wei=10**12, refund_wei=1)
    problems = channels_reconcile()
    assert len(problems) == 1 and "not its deposit" in problems[0]


async def test_the_books_against_the_chain_catch_a_deposit_we_did_not_record(hosts):
    net = hosts
    channel = await channel_ensure(platform(net), net.chain("host-1").address)
    assert await channels_chain_violations(platform(net)) == []
    await PaymentChannel.objects.filter(pk=channel.pk).aupdate(deposit_wei=DEPOSIT - 1)
    problems = await channels_chain_violations(platform(net))
    assert len(problems) == 1 and f"deposit {DEPOSIT} wei on chain" in problems[0]
    # The beat takes the chain's word for a deposit that grew (a top-up a crash hid).
    assert (await channels_maintain(platform(net))).get("topped up") is None
    await channel.arefresh_from_db()
    assert int(channel.deposit_wei) == DEPOSIT
    assert channel.txs[-1]["kind"] == "deposit-found"


# ---- the beat --------------------------------------------------------------------------------


async def test_the_beat_task_maintains_channels_with_the_platform_wallet(network,
                                                                        channel_settings):
    from django.conf import settings

    from marketplace import tasks
    from marketplace.wallet import platform_chain

    def run_task() -> dict[str, int]:
        # As a worker runs it: its own thread, event loop and database connection.
        try:
            return tasks.channels_maintain()
        finally:
            connections.close_all()

    assert settings.CELERY_BEAT_SCHEDULE["channels-maintain"]["task"] == (
        "marketplace.tasks.channels_maintain")
    assert await asyncio.to_thread(run_task) == {}  # nothing live: no key opened
    host = network.anvil.chain("host-1")
    await host.register(api_url="http://127.0.0.1:1/host-1", metadata={},
                        prices={MODEL: PRICE}, stake=10**16)
    channel = await channel_ensure(await platform_chain(), host.address)
    await PaymentChannel.objects.filter(pk=channel.pk).aupdate(
        last_used_at=timezone.now() - timedelta(days=2))

    done = await asyncio.to_thread(run_task)

    assert done == {"exit started": 1}
    await channel.arefresh_from_db()
    assert channel.state == PaymentChannelState.EXITING and channel.exit_at is not None
