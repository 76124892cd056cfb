"""Jobs paid through payment channels, end to end on the devnet: real host processes that
take channels, anvil, our contracts, the runner, the verifier and the arbitrator. One
channel per host serves every prompt; nothing goes on chain per prompt; what the user is
charged is what the vouchers paid, to the wei; a host whose result fails the check is
slashed."""

from __future__ import annotations

import asyncio

import pytest
from asgiref.sync import sync_to_async

from marketplace import channels as channel_services
from marketplace.arbitration import channel_slashes
from marketplace.chain.channels import Channels, ChannelState
from marketplace.models import (
    AttemptState,
    Job,
    JobAttempt,
    PaymentChannel,
    PaymentChannelState,
    VerificationRecord,
    VerificationState,
)
from marketplace.services import JobSpec, run_job
from marketplace.wallet import arbitrator_chain, platform_chain
from tests.conftest import MODEL

pytestmark = pytest.mark.django_db(transaction=True)

PRICE = 10**9
FEE_BPS = 250  # the devnet's protocol fee (marketplace.chain.deploy.Terms)


@pytest.fixture
def on_channels(settings):
    settings.MARKETPLACE_CHANNELS = True
    settings.MARKETPLACE_CHANNEL_FIRST_PROMPT = "wait"


async def test_prompts_to_a_host_share_one_channel_and_put_nothing_on_chain(
        network, on_channels):
    (host,) = network.start_hosts({"host-1": PRICE})
    chain = await platform_chain()
    jobs_before = await chain.market.functions.nextJobId().call()
    nonce_before = await chain.w3.eth.get_transaction_count(chain.address)

    outcomes = [await run_job(JobSpec(model=MODEL, prompt=f"Name a colour, {n}.",
                                      max_tokens=8, temperature=0.0, session="talk"))
                for n in range(5)]

    # One transaction in all from our wallet: the channel's open. No job was posted.
    assert await chain.w3.eth.get_transaction_count(chain.address) == nonce_before + 1
    assert await chain.market.functions.nextJobId().call() == jobs_before
    channel = await PaymentChannel.objects.aget(host_address=host.address)
    assert channel.state == PaymentChannelState.OPEN
    attempts = [a async for a in JobAttempt.objects.filter(channel=channel).order_by("pk")]
    assert len(attempts) == 5
    for outcome, attempt in zip(outcomes, attempts, strict=True):
        job = await Job.objects.aget(pk=outcome.job_id)
        assert attempt.state == AttemptState.ACCEPTED and attempt.chain_job_id is None
        # What the user pays is what the vouchers paid for this job: every token received.
        assert int(job.paid_wei) == int(attempt.paid_wei) == int(attempt.voucher_wei) \
            == outcome.tokens * PRICE == outcome.cost_wei > 0
    assert int(channel.spent_wei) == sum(o.tokens for o in outcomes) * PRICE
    assert int(channel.reserved_wei) == 0  # every stream gave back what it did not use
    assert await sync_to_async(channel_services.channels_reconcile)() == []
    # The host holds our latest voucher, for the channel's whole amount.
    held = network.host_voucher(host, channel.channel_id)
    assert held == int(channel.spent_wei)


async def test_a_host_without_channels_is_paid_per_job_beside_them(network, on_channels):
    (host,) = network.start_hosts({"host-1": PRICE}, args={"host-1": ["--no-channels"]})

    outcome = await run_job(JobSpec(model=MODEL, prompt="Name a colour.", max_tokens=8,
                                    temperature=0.0))

    attempt = await JobAttempt.objects.aget(job_id=outcome.job_id)
    assert attempt.chain_job_id is not None and attempt.channel_id is None
    assert attempt.state == AttemptState.ACCEPTED
    assert not await PaymentChannel.objects.filter(host_address=host.address).aexists()


async def test_a_cheat_on_a_channel_is_slashed_by_the_arbitrator(network, on_channels):
    cheat, honest = network.start_hosts({"host-1": PRICE, "host-2": 2 * PRICE},
                                        args={"host-1": ["--behaviour", "junk"]})
    chain = await platform_chain()
    stake_before = (await chain.get_node(cheat.address)).stake

    outcome = await run_job(JobSpec(model=MODEL, prompt="Write a sentence about the sea.",
                                    max_tokens=32, temperature=0.0))

    first, second = [a async for a in JobAttempt.objects.filter(job_id=outcome.job_id)
                     .order_by("number")]
    assert (first.host_address, first.state) == (cheat.address, AttemptState.DISPUTED)
    assert first.channel_id is not None and int(first.voucher_wei) > 0
    record = await VerificationRecord.objects.aget(attempt=first)
    assert record.state == VerificationState.FAILED
    # The user pays the honest host's part only; the cheat's part is the platform's cost.
    assert (second.host_address, second.state) == (honest.address, AttemptState.ACCEPTED)
    assert int((await Job.objects.aget(pk=outcome.job_id)).paid_wei) == int(second.paid_wei)

    arbitrator = await arbitrator_chain()
    assert await channel_slashes(arbitrator) == 1
    assert await channel_slashes(arbitrator) == 0  # once only
    slashed = stake_before - (await chain.get_node(cheat.address)).stake
    assert slashed == min(stake_before, 10 * int(first.voucher_wei))


async def test_a_host_that_stops_after_being_paid_costs_what_it_sent_and_no_more(
        network, on_channels, settings):
    settings.MARKETPLACE_STALL_TIMEOUT_S = 2
    staller, honest = network.start_hosts(
        {"host-1": PRICE, "host-2": 2 * PRICE},
        args={"host-1": ["--behaviour", "stall", "--vouchers-every", "2"]})

    outcome = await run_job(JobSpec(model=MODEL, prompt="Write a sentence about the sea.",
                                    max_tokens=16, temperature=0.0))

    first, second = [a async for a in JobAttempt.objects.filter(job_id=outcome.job_id)
                     .order_by("number")]
    # The staller sent 3 tokens (behaviours.Stall) and was paid for the 2 a voucher
    # covered before it fell silent; its text was taken back, and the user pays only
    # for the honest host's answer.
    assert (first.host_address, first.state) == (staller.address, AttemptState.ABANDONED)
    assert int(first.voucher_wei) == 2 * PRICE
    assert network.host_voucher(staller, (await PaymentChannel.objects.aget(
        pk=first.channel_id)).channel_id) == 2 * PRICE
    assert (second.host_address, second.state) == (honest.address, AttemptState.ACCEPTED)
    job = await Job.objects.aget(pk=outcome.job_id)
    assert int(job.paid_wei) == int(second.voucher_wei) == outcome.tokens * 2 * PRICE
    assert job.text == outcome.text
    assert await sync_to_async(channel_services.channels_reconcile)() == []


async def test_a_host_killed_keeps_its_vouchers_and_closes_with_the_latest_at_our_exit(
        network, on_channels):
    (host,) = network.start_hosts({"host-1": PRICE})
    for n in range(3):
        await run_job(JobSpec(model=MODEL, prompt=f"Name an animal, {n}.", max_tokens=8,
                              temperature=0.0))
    channel = await PaymentChannel.objects.aget(host_address=host.address)
    spent = int(channel.spent_wei)
    assert network.host_voucher(host, channel.channel_id) == spent > 0

    host.proc.kill()  # SIGKILL: nothing is flushed on the way out
    host.proc.wait()
    network.start_hosts({"host-1": PRICE})  # the same key and folder
    chain = await platform_chain()
    channels = Channels(chain)
    await channels.start_exit(channel.channel_id)

    # The host sees the exit and closes with the voucher it kept across the crash.
    for _ in range(300):
        if (await channels.get(channel.channel_id)).state == ChannelState.CLOSED:
            break
        await asyncio.sleep(0.1)
    else:
        raise AssertionError("the host did not close the channel")
    fee = spent * FEE_BPS // 10_000
    assert await channels.withdrawable(host.address) == spent - fee
    assert await channels.withdrawable(chain.address) == int(channel.deposit_wei) - spent
