"""The host's side of a channel (marketplace.host.vouchers): every voucher checked against
the chain and its own book, the latest kept on disk before more work is done, and the
channel closed with it when the payer starts to leave, even after a crash."""

from __future__ import annotations

import asyncio

import pytest

from marketplace.chain.channels import Channels, ChannelState, Voucher
from marketplace.host.vouchers import ChannelWatch, VoucherBook, VoucherDesk, VoucherRefused
from tests.contracts.conftest import ETHER
from tests.contracts.test_job_marketplace import FEE_BPS

DEPOSIT = ETHER // 100


@pytest.fixture
async def channel(registered):
    net = registered
    payer = Channels(net.chain("alice"))
    channel_id = await payer.open(net.chain("host1").address, DEPOSIT)
    return net, payer, channel_id


def sign(payer: Channels, channel_id: int, amount: int) -> Voucher:
    return payer.vouchers.sign(bytes(payer.chain.sender.account.key), channel_id, amount)


def desk(net, tmp_path, host="host1") -> VoucherDesk:
    return VoucherDesk(Channels(net.chain(host)), VoucherBook(tmp_path / "vouchers.db"),
                       net.chain(host).address)


async def test_vouchers_are_kept_latest_first_and_survive_a_restart(channel, tmp_path):
    net, payer, channel_id = channel
    mine = desk(net, tmp_path)
    for amount in (10**12, 5 * 10**12):
        held = await mine.accept(sign(payer, channel_id, amount))
    assert held.amount == 5 * 10**12 and held.payer == net.chain("alice").address
    with pytest.raises(VoucherRefused) as stale:
        await mine.accept(sign(payer, channel_id, 10**12))
    assert stale.value.code == "STALE_VOUCHER"
    mine.book.close()  # the process dies; the file is what is left
    again = VoucherBook(tmp_path / "vouchers.db")
    assert again.latest(channel_id).amount == 5 * 10**12
    assert [h.channel_id for h in again.unredeemed()] == [channel_id]


@pytest.mark.parametrize("case, code", [
    ("another signer", "BAD_VOUCHER"), ("over the deposit", "OVER_DEPOSIT"),
    ("another host's channel", "NOT_YOUR_CHANNEL"), ("no such channel", "UNKNOWN_CHANNEL"),
    ("inflated amount", "BAD_VOUCHER")])
async def test_bad_vouchers_are_refused_with_a_code_and_nothing_is_kept(channel, tmp_path,
                                                                       case, code):
    net, payer, channel_id = channel
    mine = desk(net, tmp_path, host="host2" if case == "another host's channel" else "host1")
    if case == "another signer":
        voucher = sign(Channels(net.chain("mallory")), channel_id, 10**12)
    elif case == "over the deposit":
        voucher = sign(payer, channel_id, DEPOSIT + 1)
    elif case == "no such channel":
        voucher = sign(payer, channel_id + 100, 10**12)
    elif case == "inflated amount":
        voucher = Voucher(channel_id, 10**15, sign(payer, channel_id, 10**12).signature)
    else:
        voucher = sign(payer, channel_id, 10**12)
    with pytest.raises(VoucherRefused) as refused:
        await mine.accept(voucher)
    assert refused.value.code == code
    assert mine.book.latest(voucher.channel_id) is None


async def test_a_top_up_is_seen_before_a_voucher_over_the_old_deposit_is_refused(channel,
                                                                                 tmp_path):
    net, payer, channel_id = channel
    mine = desk(net, tmp_path)
    await mine.accept(sign(payer, channel_id, 10**12))  # the deposit is read and kept
    await payer.top_up(channel_id, DEPOSIT)
    held = await mine.accept(sign(payer, channel_id, DEPOSIT + 10**12))
    assert held.deposit == 2 * DEPOSIT


async def test_the_host_closes_with_its_latest_voucher_when_the_payer_starts_to_exit(
        channel, tmp_path):
    net, payer, channel_id = channel
    mine = desk(net, tmp_path)
    host = Channels(net.chain("host1"))
    watch = ChannelWatch(host, mine.book, net.chain("host1").address)
    await mine.accept(sign(payer, channel_id, 3 * 10**12))
    assert await watch.step() == []
    await payer.start_exit(channel_id)
    assert await watch.step() == [channel_id]
    assert (await host.get(channel_id)).state == ChannelState.CLOSED
    fee = 3 * 10**12 * FEE_BPS // 10_000
    assert await host.withdrawable(net.chain("host1").address) == 3 * 10**12 - fee
    assert mine.book.unredeemed() == []


async def test_a_host_that_was_down_when_the_exit_started_closes_when_it_is_back(
        channel, tmp_path):
    net, payer, channel_id = channel
    mine = desk(net, tmp_path)
    await mine.accept(sign(payer, channel_id, 2 * 10**12))
    await payer.start_exit(channel_id)
    head = await net.w3.eth.block_number
    host = Channels(net.chain("host1"))
    # Back after the ExitStarted block: it learns of the exit from the channel itself.
    watch = ChannelWatch(host, VoucherBook(tmp_path / "vouchers.db"),
                         net.chain("host1").address, from_block=head + 1)
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(3):
            await watch.run(every_s=0.2)
    assert (await host.get(channel_id)).state == ChannelState.CLOSED
    assert await host.withdrawable(net.chain("host1").address) > 0
