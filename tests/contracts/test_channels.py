"""Payment channels (PaymentChannels): a deposit, vouchers the payer signs, the host's close
with the latest one, the payer's exit after a challenge period. Each bad voucher is
refused by the contract itself; nothing is paid twice; the protocol fee is the one the
channel opened with."""

from __future__ import annotations

import pytest

from marketplace.chain.channels import (
    SECP256K1_N,
    Channels,
    ChannelState,
    Voucher,
    VoucherSigner,
    voucher_digest,
)
from marketplace.chain.errors import ChainError
from tests.contracts.conftest import ETHER
from tests.contracts.test_job_marketplace import FEE_BPS, reverts

DEPOSIT = ETHER // 100
CHALLENGE_S = 86400  # Terms' default


def channels(net, name: str) -> Channels:
    return Channels(net.chain(name))


def key_of(net, name: str) -> bytes:
    return bytes(net.chain(name).sender.account.key)


async def opened(net, payer="alice", host="host1", deposit=DEPOSIT) -> int:
    return await channels(net, payer).open(net.chain(host).address, deposit)


def voucher(net, channel_id: int, amount: int, signer="alice") -> Voucher:
    return channels(net, signer).vouchers.sign(key_of(net, signer), channel_id, amount)


async def test_the_digest_signed_here_is_the_one_the_contract_checks(registered):
    net = registered
    mine = channels(net, "alice")
    assert await mine.contract.functions.voucherDigest(7, 12345).call() == voucher_digest(
        mine.vouchers.separator, 7, 12345)


async def test_the_host_closes_with_the_latest_voucher_and_is_paid_less_the_fee(registered):
    net = registered
    channel_id = await opened(net)
    host = channels(net, "host1")
    info = await host.get(channel_id)
    assert (info.payer, info.host, info.deposit, info.fee_bps, info.state) == (
        net.chain("alice").address, net.chain("host1").address, DEPOSIT, FEE_BPS,
        ChannelState.OPEN)
    amounts = [10**12, 3 * 10**12, 7 * 10**12]
    latest = [voucher(net, channel_id, a) for a in amounts][-1]
    host.vouchers.check(latest, info.payer)  # what the host does with each one it gets

    settled = await host.close(latest)

    fee = amounts[-1] * FEE_BPS // 10_000
    assert (settled.host_amount, settled.fee, settled.refund) == (
        amounts[-1] - fee, fee, DEPOSIT - amounts[-1])
    assert await host.withdrawable(net.chain("host1").address) == amounts[-1] - fee
    assert await host.withdrawable(net.treasury) == fee
    assert await host.withdrawable(net.chain("alice").address) == DEPOSIT - amounts[-1]
    assert (await host.get(channel_id)).state == ChannelState.CLOSED
    balance, deposits, owed = await host.totals()
    assert (balance, deposits, owed) == (DEPOSIT, 0, DEPOSIT)
    # Nothing is redeemed twice: not the same voucher, not a later one.
    await reverts("ChannelClosedAlready", host.close(latest))
    await reverts("ChannelClosedAlready", host.close(voucher(net, channel_id, DEPOSIT)))


async def test_withdrawals_pay_out_what_was_credited(registered):
    net = registered
    channel_id = await opened(net)
    host = channels(net, "host1")
    await host.close(voucher(net, channel_id, 10**15))
    before = await net.w3.eth.get_balance(net.chain("host1").address)
    await host.withdraw()
    after = await net.w3.eth.get_balance(net.chain("host1").address)
    assert after > before  # less the gas of the withdrawal
    assert await host.withdrawable(net.chain("host1").address) == 0
    await reverts("NothingToWithdraw", host.withdraw())


@pytest.mark.parametrize("case", ["another signer", "another channel", "another chain",
                                  "another contract", "another amount"])
async def test_a_voucher_not_signed_for_this_channel_and_amount_is_refused(registered, case):
    net = registered
    channel_id = await opened(net)
    other_channel = await opened(net)
    host = channels(net, "host1")
    contract = host.vouchers.contract
    if case == "another signer":
        bad = voucher(net, channel_id, 10**12, signer="mallory")
    elif case == "another channel":  # replayed from the payer's other channel
        good = voucher(net, other_channel, 10**12)
        bad = Voucher(channel_id, good.amount, good.signature)
    elif case == "another chain":
        bad = VoucherSigner(net.deployment.chain_id + 1, contract).sign(
            key_of(net, "alice"), channel_id, 10**12)
    elif case == "another contract":
        bad = VoucherSigner(net.deployment.chain_id, net.deployment.escrow).sign(
            key_of(net, "alice"), channel_id, 10**12)
    else:
        good = voucher(net, channel_id, 10**12)
        bad = Voucher(channel_id, 10**13, good.signature)
    with pytest.raises(ValueError):
        host.vouchers.check(bad, net.chain("alice").address)
    await reverts("BadVoucher", host.close(bad))
    assert (await host.get(channel_id)).state == ChannelState.OPEN


async def test_a_voucher_over_the_deposit_is_refused(registered):
    net = registered
    channel_id = await opened(net)
    await reverts("OverDeposit", channels(net, "host1").close(
        voucher(net, channel_id, DEPOSIT + 1)))


async def test_a_malleable_or_malformed_signature_is_refused_here_and_on_chain(registered):
    net = registered
    channel_id = await opened(net)
    good = voucher(net, channel_id, 10**12)
    host = channels(net, "host1")
    s = int.from_bytes(good.signature[32:64], "big")
    flipped = Voucher(channel_id, good.amount, good.signature[:32]
                      + (SECP256K1_N - s).to_bytes(32, "big")
                      + bytes([55 - good.signature[64]]))
    with pytest.raises(ValueError, match="low s"):
        host.vouchers.check(flipped, net.chain("alice").address)
    with pytest.raises(ChainError):  # OpenZeppelin's ECDSA refuses a high s too
        await host.close(flipped)
    with pytest.raises(ValueError):
        host.vouchers.check(Voucher(channel_id, 1, b"\x00" * 64), net.chain("alice").address)


async def test_a_stale_voucher_pays_only_what_it_says_and_ends_the_channel(registered):
    """A host that closes with an older voucher takes less, and cannot come back for the
    rest: the channel is settled once."""
    net = registered
    channel_id = await opened(net)
    stale, latest = voucher(net, channel_id, 10**12), voucher(net, channel_id, 5 * 10**12)
    host = channels(net, "host1")
    settled = await host.close(stale)
    assert settled.host_amount + settled.fee == 10**12
    await reverts("ChannelClosedAlready", host.close(latest))


async def test_only_the_host_closes_and_only_the_payer_tops_up_or_exits(registered):
    net = registered
    channel_id = await opened(net)
    await reverts("NotHost", channels(net, "alice").close(voucher(net, channel_id, 1)))
    await reverts("NotHost", channels(net, "host2").close(voucher(net, channel_id, 1)))
    await reverts("NotPayer", channels(net, "bob").top_up(channel_id, 1))
    await reverts("NotPayer", channels(net, "host1").start_exit(channel_id))
    await reverts("NoChannel", channels(net, "alice").top_up(999, 1))


async def test_a_top_up_raises_the_deposit_a_voucher_may_claim(registered):
    net = registered
    channel_id = await opened(net)
    await channels(net, "alice").top_up(channel_id, DEPOSIT)
    host = channels(net, "host1")
    assert (await host.get(channel_id)).deposit == 2 * DEPOSIT
    settled = await host.close(voucher(net, channel_id, 2 * DEPOSIT))
    assert (settled.host_amount + settled.fee, settled.refund) == (2 * DEPOSIT, 0)


async def test_a_channel_opens_only_to_an_active_host_and_with_a_deposit(registered):
    net = registered
    await reverts("HostNotActive", channels(net, "alice").open(net.chain("bob").address,
                                                                DEPOSIT))
    await reverts("ZeroDeposit", channels(net, "alice").open(net.chain("host1").address, 0))


async def test_the_payer_exits_alone_after_the_challenge_period(registered):
    net = registered
    channel_id = await opened(net)
    payer = channels(net, "alice")
    exit_at = await payer.start_exit(channel_id)
    assert exit_at == await net.now() + CHALLENGE_S
    assert (await payer.get(channel_id)).state == ChannelState.EXITING
    await reverts("Exiting", payer.top_up(channel_id, 1))
    await reverts("Exiting", payer.start_exit(channel_id))
    await reverts("ChallengeOpen", payer.finish_exit(channel_id))
    await net.time_travel(CHALLENGE_S + 1)
    # The host slept through it: its voucher is no good any more.
    await reverts("ChallengeOver", channels(net, "host1").close(voucher(net, channel_id, 10)))
    settled = await channels(net, "bob").finish_exit(channel_id)  # anyone may finish it
    assert (settled.host_amount, settled.fee, settled.refund) == (0, 0, DEPOSIT)
    assert await payer.withdrawable(net.chain("alice").address) == DEPOSIT
    await reverts("ChannelClosedAlready", payer.finish_exit(channel_id))


async def test_during_the_challenge_period_the_host_still_closes_with_its_voucher(registered):
    net = registered
    channel_id = await opened(net)
    await channels(net, "alice").start_exit(channel_id)
    await net.time_travel(CHALLENGE_S - 60)
    settled = await channels(net, "host1").close(voucher(net, channel_id, 4 * 10**12))
    assert settled.host_amount + settled.fee == 4 * 10**12
    await reverts("ChannelClosedAlready", channels(net, "alice").finish_exit(channel_id))
    await reverts("NotExiting", channels(net, "alice").finish_exit(await opened(net)))


async def test_the_fee_is_the_one_the_channel_opened_with(registered):
    net = registered
    channel_id = await opened(net)
    owner = net.chain("owner")
    await owner._send("JobMarketplace", owner.market.functions.setFeeBps, 1000)
    settled = await channels(net, "host1").close(voucher(net, channel_id, 10**12))
    assert settled.fee == 10**12 * FEE_BPS // 10_000
    later = await opened(net)
    assert (await channels(net, "host1").get(later)).fee_bps == 1000


async def test_channel_ids_are_never_reused(registered):
    net = registered
    first = await opened(net)
    await channels(net, "host1").close(voucher(net, first, 1))
    assert await opened(net) == first + 1
