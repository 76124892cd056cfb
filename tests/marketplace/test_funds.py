"""Money in and out on a real chain (anvil): deposits credited after N confirmations and
exactly once, nothing credited from blocks a reorganisation takes back, payouts paid once
whatever the node answers, failures refunded; the books match the chain."""

import io

import pytest
from asgiref.sync import sync_to_async
from django.core.management import CommandError, call_command
from web3 import AsyncWeb3

from accounts import funds
from accounts.models import (
    ChainDeposit,
    DepositCursor,
    DepositState,
    EntryKind,
    LedgerEntry,
    Payout,
    PayoutState,
    WalletLink,
)
from accounts.selectors import ledger_invariant_violations
from accounts.services import user_create
from marketplace import funds as chain_funds
from marketplace.chain.connect import http_provider
from marketplace.chain.contracts import Chain
from tests.conftest import free_port

pytestmark = pytest.mark.django_db(transaction=True)

N = 3  # confirmations in these tests
ETH = 10**18


@pytest.fixture(autouse=True)
def funds_settings(settings):
    settings.FUNDS_CONFIRMATIONS = N
    settings.FUNDS_DEPOSIT_MIN_WEI = 10**15
    settings.FUNDS_WITHDRAWAL_MIN_WEI = 1
    settings.FUNDS_WITHDRAWAL_APPROVAL_WEI = 10 * ETH
    settings.FUNDS_WITHDRAWAL_DAILY_LIMIT_WEI = 100 * ETH
    settings.ACCOUNTS_SIGNUP_CREDIT_WEI = 0


@pytest.fixture
async def alice():
    user = await sync_to_async(user_create)(username="alice", password="a-long-password-1")
    return user


async def _ref(user) -> bytes:
    account = await sync_to_async(lambda: user.account)()
    ref = await sync_to_async(funds.account_deposit_ref)(account)
    return bytes.fromhex(ref[2:])


async def _mine(chain: Chain, blocks: int) -> None:
    await chain.w3.provider.make_request("anvil_mine", [hex(blocks)])


async def _balance(user) -> int:
    account = await sync_to_async(lambda: type(user.account).objects.get(user=user))()
    return account.balance_wei


async def test_a_deposit_is_credited_once_it_has_n_confirmations(on_anvil, alice):
    platform = on_anvil.chain("platform")
    payer = on_anvil.chain("host-3")
    tx_hash = await payer.deposit(await _ref(alice), 2 * 10**16)

    # Its own block is one confirmation: nothing yet, however often the watcher runs.
    for _ in range(2):
        assert await chain_funds.deposits_scan(platform) == 0
    progress = await chain_funds.deposit_progress(platform, tx_hash)
    assert (progress.state, progress.confirmations, progress.needed) == ("confirming", 1, N)
    await _mine(platform, N - 2)
    assert await chain_funds.deposits_scan(platform) == 0
    assert await _balance(alice) == 0

    await _mine(platform, 1)  # now N confirmations
    assert await chain_funds.deposits_scan(platform) == 1
    assert await _balance(alice) == 2 * 10**16
    deposit = await ChainDeposit.objects.aget(tx_hash=tx_hash)
    assert (deposit.state, deposit.sender, deposit.below_minimum) == (
        DepositState.CREDITED, payer.address, False)
    progress = await chain_funds.deposit_progress(platform, tx_hash)
    assert (progress.state, progress.amount_wei) == ("credited", 2 * 10**16)
    assert await sync_to_async(ledger_invariant_violations)() == []
    assert await chain_funds.funds_violations(platform) == []


async def test_a_reorg_before_n_confirmations_credits_nothing(on_anvil, alice):
    platform = on_anvil.chain("platform")
    payer = on_anvil.chain("host-3")
    snapshot = (await platform.w3.provider.make_request("evm_snapshot", []))["result"]
    tx_hash = await payer.deposit(await _ref(alice), 10**16)
    await _mine(platform, N - 2)  # one short of N
    assert await chain_funds.deposits_scan(platform) == 0

    # The blocks holding the deposit are taken back; the chain grows past N without it.
    assert (await platform.w3.provider.make_request("evm_revert", [snapshot]))["result"]
    await _mine(platform, N + 2)
    assert await chain_funds.deposits_scan(platform) == 0
    assert await _balance(alice) == 0
    assert not await ChainDeposit.objects.filter(tx_hash=tx_hash).aexists()
    assert (await chain_funds.deposit_progress(platform, tx_hash)).state == "unknown"
    assert await chain_funds.funds_violations(platform) == []


async def test_a_restarted_watcher_credits_nothing_twice(on_anvil, alice):
    platform = on_anvil.chain("platform")
    payer = on_anvil.chain("host-3")
    ref = await _ref(alice)
    await payer.deposit(ref, 10**16)
    await payer.deposit(ref, 3 * 10**16)
    await _mine(platform, N)
    assert await chain_funds.deposits_scan(platform) == 2

    # A watcher that died before saving its cursor reads the same blocks again; so do
    # two watchers at once.
    await DepositCursor.objects.all().adelete()
    assert await chain_funds.deposits_scan(platform) == 2
    other = Chain(AsyncWeb3(http_provider(on_anvil.url)), platform.deployment)
    try:
        await DepositCursor.objects.all().adelete()
        assert await chain_funds.deposits_scan(other) == 2
    finally:
        await other.close()
    assert await _balance(alice) == 4 * 10**16
    assert await ChainDeposit.objects.acount() == 2
    assert await LedgerEntry.objects.filter(kind=EntryKind.DEPOSIT).acount() == 2
    assert await sync_to_async(ledger_invariant_violations)() == []


async def test_an_unknown_reference_waits_unattributed_and_a_small_deposit_is_flagged(
        on_anvil, alice):
    platform = on_anvil.chain("platform")
    payer = on_anvil.chain("host-3")
    await payer.deposit(b"\x07" * 32, 5 * 10**16)
    await payer.deposit(await _ref(alice), 10**14)  # below FUNDS_DEPOSIT_MIN_WEI
    await _mine(platform, N)
    assert await chain_funds.deposits_scan(platform) == 2
    stray = await ChainDeposit.objects.aget(ref="0x" + "07" * 32)
    small = await ChainDeposit.objects.aget(ref="0x" + (await _ref(alice)).hex())
    assert (stray.state, stray.account_id) == (DepositState.UNATTRIBUTED, None)
    assert (small.state, small.below_minimum) == (DepositState.CREDITED, True)
    assert await _balance(alice) == 10**14  # credited all the same: it is her money
    assert await chain_funds.funds_violations(platform) == []


async def _linked_withdrawal(user, address: str, amount: int) -> Payout:
    await WalletLink.objects.acreate(user=user, address=address)
    account = await sync_to_async(lambda: user.account)()
    return await sync_to_async(funds.withdrawal_request)(account=account, to_address=address,
                                                          amount_wei=amount)


async def _fund(on_anvil, user, amount: int) -> None:
    platform = on_anvil.chain("platform")
    await on_anvil.chain("host-3").deposit(await _ref(user), amount)
    await _mine(platform, N)
    await chain_funds.deposits_scan(platform)


async def test_a_withdrawal_is_paid_to_the_linked_wallet_once(on_anvil, alice):
    platform = on_anvil.chain("platform")
    await _fund(on_anvil, alice, 5 * 10**16)
    to = on_anvil.keys["host-4"].address
    payout = await _linked_withdrawal(alice, to, 2 * 10**16)
    assert await _balance(alice) == 3 * 10**16  # debited with the intent
    before = await platform.w3.eth.get_balance(to)

    assert await chain_funds.payout_send(platform, payout.pk) == PayoutState.SENT
    assert await chain_funds.payout_send(platform, payout.pk) == "skipped"
    await payout.arefresh_from_db()
    assert payout.state == PayoutState.SENT and payout.tx_hash.startswith("0x")
    assert await platform.w3.eth.get_balance(to) == before + 2 * 10**16
    assert await platform.paid(bytes.fromhex(payout.payment_id[2:]))
    assert await sync_to_async(ledger_invariant_violations)() == []
    assert await chain_funds.funds_violations(platform) == []


async def test_a_payout_whose_answer_was_lost_is_not_paid_again(on_anvil, alice):
    """The node took the payment but its answer never came back: the payout is still
    queued. Sent again, the contract says it is paid, and it is recorded as sent."""
    platform = on_anvil.chain("platform")
    await _fund(on_anvil, alice, 5 * 10**16)
    to = on_anvil.keys["host-4"].address
    payout = await _linked_withdrawal(alice, to, 10**16)
    first = await platform.pay(bytes.fromhex(payout.payment_id[2:]), to, 10**16)
    before = await platform.w3.eth.get_balance(to)

    assert await chain_funds.payout_send(platform, payout.pk) == PayoutState.SENT
    await payout.arefresh_from_db()
    assert payout.tx_hash == first["transactionHash"].to_0x_hex()
    assert await platform.w3.eth.get_balance(to) == before
    assert await chain_funds.funds_violations(platform) == []


async def test_the_rpc_down_leaves_a_payout_queued_and_the_next_try_sends_it(on_anvil, alice):
    platform = on_anvil.chain("platform")
    await _fund(on_anvil, alice, 5 * 10**16)
    payout = await _linked_withdrawal(alice, on_anvil.keys["host-4"].address, 10**16)
    dead_w3 = AsyncWeb3(http_provider(f"http://127.0.0.1:{free_port()}"))
    sender = on_anvil.sender("platform", w3=dead_w3)
    dead = Chain(dead_w3, platform.deployment, sender)
    try:
        assert await chain_funds.payout_send(dead, payout.pk) == PayoutState.QUEUED
    finally:
        await dead.close()
    await payout.arefresh_from_db()
    assert payout.state == PayoutState.QUEUED and "RPC_UNAVAILABLE" in payout.error
    assert await _balance(alice) == 4 * 10**16  # still debited: the money is in flight

    assert await chain_funds.payouts_send_due(platform) == {PayoutState.SENT: 1}
    await payout.arefresh_from_db()
    assert payout.state == PayoutState.SENT and payout.attempts == 2
    assert await sync_to_async(ledger_invariant_violations)() == []
    assert await chain_funds.funds_violations(platform) == []


async def test_a_payout_the_chain_refuses_is_refunded(on_anvil, alice, settings):
    """More than the box holds: the contract reverts OverBalance, for good."""
    platform = on_anvil.chain("platform")
    await _fund(on_anvil, alice, 5 * 10**16)
    box_balance = await platform.w3.eth.get_balance(platform.deployment.deposits)
    account = await sync_to_async(lambda: alice.account)()
    # Staff credit makes the balance larger than what the box holds.
    from accounts.services import balance_adjust

    await sync_to_async(balance_adjust)(account, amount_wei=box_balance, memo="test credit")
    payout = await _linked_withdrawal(alice, on_anvil.keys["host-4"].address,
                                      box_balance + 1)
    assert await chain_funds.payout_send(platform, payout.pk) == PayoutState.FAILED
    await payout.arefresh_from_db()
    assert payout.state == PayoutState.FAILED and "OverBalance" in payout.error
    assert await _balance(alice) == 5 * 10**16 + box_balance  # all of it back
    entry = await LedgerEntry.objects.filter(kind=EntryKind.WITHDRAWAL_REFUND).aget()
    assert entry.amount_wei == box_balance + 1
    assert await sync_to_async(ledger_invariant_violations)() == []
    assert await chain_funds.funds_violations(platform) == []


async def test_an_unattributed_deposit_refunded_by_staff_goes_back_to_its_sender(
        on_anvil, alice):
    platform = on_anvil.chain("platform")
    payer = on_anvil.chain("host-3")
    await payer.deposit(b"\x09" * 32, 4 * 10**16)
    await _mine(platform, N)
    await chain_funds.deposits_scan(platform)
    stray = await ChainDeposit.objects.aget(ref="0x" + "09" * 32)
    staff = await sync_to_async(user_create)(username="staff", password="a-long-password-9")
    payout = await sync_to_async(funds.deposit_refund)(deposit_id=stray.pk, by=staff)
    before = await platform.w3.eth.get_balance(payer.address)
    assert await chain_funds.payouts_send_due(platform) == {PayoutState.SENT: 1}
    await payout.arefresh_from_db()
    assert payout.to_address == payer.address and payout.state == PayoutState.SENT
    assert await platform.w3.eth.get_balance(payer.address) == before + 4 * 10**16
    await stray.arefresh_from_db()
    assert stray.state == DepositState.REFUNDED
    assert await chain_funds.funds_violations(platform) == []


async def test_the_faucet_gives_test_ether_on_the_devnet_only(on_anvil):
    platform = on_anvil.chain("platform")
    address = "0x000000000000000000000000000000000000dEaD"
    before = await platform.w3.eth.get_balance(address)
    assert await chain_funds.faucet(platform.w3, address, ETH) == before + ETH
    assert await platform.w3.eth.get_balance(address) == before + ETH


async def test_manage_py_devnet_faucet_gives_ether_and_refuses_bad_input(on_anvil, settings):
    settings.CHAIN_RPC = on_anvil.url
    address = "0x000000000000000000000000000000000000bEEF"
    w3 = on_anvil.w3()
    before = await w3.eth.get_balance(address)
    out = io.StringIO()
    await sync_to_async(call_command)("devnet", "faucet", address, "2.5", stdout=out)
    assert await w3.eth.get_balance(address) == before + 25 * 10**17
    assert "now holds" in out.getvalue()
    for args, says in ((["0x1234"], "not an Ethereum address"),
                       ([address, "lots"], "not an amount"),
                       ([address, "-1"], "between 0"),
                       ([], "usage")):
        with pytest.raises(CommandError, match=says):
            await sync_to_async(call_command)("devnet", "faucet", *args)
    assert await w3.eth.get_balance(address) == before + 25 * 10**17
