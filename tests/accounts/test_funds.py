"""Deposits and withdrawals in the books: a withdrawal is debited with its intent and only
to a linked wallet, within the day's limit, reviewed above a size; a failed or rejected one
is given back; an unattributed deposit is assigned or refunded by staff in admin."""

import pytest
from django.urls import reverse

from accounts import funds
from accounts.errors import (
    DailyLimitExceeded,
    InsufficientFunds,
    InvalidAddress,
    UnlinkedAddress,
    WithdrawalTooSmall,
)
from accounts.models import (
    ChainDeposit,
    DepositState,
    EntryKind,
    Payout,
    PayoutState,
    WalletLink,
)
from accounts.selectors import ledger_invariant_violations

ALICE_WALLET = "0x00000000000000000000000000000000000A11cE"
CREDIT = 10**15


@pytest.fixture(autouse=True)
def limits(settings):
    settings.FUNDS_WITHDRAWAL_MIN_WEI = 10
    settings.FUNDS_WITHDRAWAL_APPROVAL_WEI = 5 * 10**14
    settings.FUNDS_WITHDRAWAL_DAILY_LIMIT_WEI = 8 * 10**14
    settings.FUNDS_DEPOSIT_MIN_WEI = 10**14


@pytest.fixture
def linked(alice):
    return WalletLink.objects.create(user=alice, address=ALICE_WALLET)


def withdraw(user, amount, to=ALICE_WALLET):
    return funds.withdrawal_request(account=user.account, to_address=to, amount_wei=amount)


def test_a_withdrawal_is_debited_in_the_same_transaction_that_queues_it(alice, linked):
    payout = withdraw(alice, 3 * 10**14)
    alice.account.refresh_from_db()
    assert alice.account.balance_wei == CREDIT - 3 * 10**14
    entry = alice.account.entries.get(kind=EntryKind.WITHDRAWAL)
    assert entry.amount_wei == 3 * 10**14 and entry.reference == f"payout:{payout.payment_id}"
    assert payout.state == PayoutState.QUEUED and payout.to_address == ALICE_WALLET
    assert ledger_invariant_violations() == []


@pytest.mark.parametrize("to, error", [
    ("0x1234", InvalidAddress),
    ("not an address", InvalidAddress),
    (ALICE_WALLET.replace("A11cE", "a11cE"), InvalidAddress),  # a typo the checksum catches
    ("0x000000000000000000000000000000000000bEEF", UnlinkedAddress),
])
def test_a_withdrawal_goes_only_to_a_linked_wallet(alice, linked, to, error):
    with pytest.raises(error):
        withdraw(alice, 10**14, to=to)
    alice.account.refresh_from_db()
    assert alice.account.balance_wei == CREDIT and not Payout.objects.exists()


def test_bobs_wallet_is_not_alices(alice, bob):
    WalletLink.objects.create(user=bob, address=ALICE_WALLET)
    with pytest.raises(UnlinkedAddress):
        withdraw(alice, 10**14)


def test_a_withdrawal_over_the_balance_is_refused(alice, linked):
    with pytest.raises(InsufficientFunds) as caught:
        withdraw(alice, CREDIT + 1)
    assert caught.value.available_wei == CREDIT
    with pytest.raises(WithdrawalTooSmall):
        withdraw(alice, 9)
    assert not Payout.objects.exists()


def test_the_daily_limit_counts_the_last_24_hours(alice, linked):
    withdraw(alice, 4 * 10**14)
    withdraw(alice, 4 * 10**14)
    with pytest.raises(DailyLimitExceeded):
        withdraw(alice, 10)
    # A failed withdrawal does not count against the limit: its money came back.
    first = Payout.objects.order_by("pk").first()
    funds.payout_failed(payout_id=first.pk, error="reverted")
    withdraw(alice, 10)


def test_a_large_withdrawal_waits_for_staff_and_a_rejection_gives_the_money_back(
        alice, linked, admin_client, admin_user):
    payout = withdraw(alice, 6 * 10**14)
    assert payout.state == PayoutState.AWAITING_APPROVAL
    assert funds.payout_claim(payout_id=payout.pk) is None  # the sweep cannot take it

    answer = admin_client.post(reverse("admin:accounts_payout_changelist"),
                               {"action": "reject", "_selected_action": [payout.pk]})
    assert answer.status_code == 302
    payout.refresh_from_db()
    alice.account.refresh_from_db()
    assert payout.state == PayoutState.REJECTED and payout.approved_by == admin_user
    assert alice.account.balance_wei == CREDIT
    assert ledger_invariant_violations() == []


def test_staff_approve_a_large_withdrawal_and_the_sweep_may_take_it(alice, linked,
                                                                    admin_client):
    payout = withdraw(alice, 6 * 10**14)
    admin_client.post(reverse("admin:accounts_payout_changelist"),
                      {"action": "approve", "_selected_action": [payout.pk]})
    payout.refresh_from_db()
    assert payout.state == PayoutState.QUEUED
    claimed = funds.payout_claim(payout_id=payout.pk)
    assert claimed.state == PayoutState.SENDING and claimed.attempts == 1
    assert funds.payout_claim(payout_id=payout.pk) is None  # one worker at a time


def record(ref, amount=3 * 10**14, tx="0x" + "11" * 32, log_index=0):
    return funds.deposit_record(chain_id=31337, tx_hash=tx, log_index=log_index,
                                block_number=7, block_hash="0x" + "22" * 32,
                                sender="0x000000000000000000000000000000000000dEaD", ref=ref,
                                amount_wei=amount)


def test_a_deposit_is_credited_once_per_transaction_and_log(alice):
    ref = funds.account_deposit_ref(alice.account)
    first = record(ref)
    again = record(ref)
    other_log = record(ref, log_index=1)
    assert first.pk == again.pk != other_log.pk
    alice.account.refresh_from_db()
    assert alice.account.balance_wei == CREDIT + 6 * 10**14
    assert ledger_invariant_violations() == []


def test_each_account_has_its_own_reference(alice, bob):
    refs = {funds.account_deposit_ref(alice.account), funds.account_deposit_ref(bob.account)}
    assert len(refs) == 2
    assert funds.account_deposit_ref(alice.account) in refs  # stable once made
    assert all(len(r) == 66 and r.startswith("0x") for r in refs)


def test_staff_assign_an_unattributed_deposit_in_admin(alice, admin_client, admin_user):
    stray = record("0x" + "99" * 32)
    assert stray.state == DepositState.UNATTRIBUTED
    url = reverse("admin:accounts_chaindeposit_change", args=[stray.pk])
    page = admin_client.get(url)
    assert page.status_code == 200 and b"Assign to account" in page.content
    answer = admin_client.post(url, {"assign_to": alice.account.pk})
    assert answer.status_code == 302
    stray.refresh_from_db()
    alice.account.refresh_from_db()
    assert (stray.state, stray.account, stray.resolved_by) == (
        DepositState.CREDITED, alice.account, admin_user)
    assert alice.account.balance_wei == CREDIT + 3 * 10**14
    assert ledger_invariant_violations() == []
    # Assigned once: the form no longer offers it, and the service refuses a second time.
    assert b"Assign to account" not in admin_client.get(url).content


def test_staff_refund_an_unattributed_deposit_in_admin(alice, admin_client):
    stray = record("0x" + "98" * 32)
    answer = admin_client.post(reverse("admin:accounts_chaindeposit_changelist"),
                               {"action": "refund", "_selected_action": [stray.pk]})
    assert answer.status_code == 302
    stray.refresh_from_db()
    payout = Payout.objects.get(deposit=stray)
    assert stray.state == DepositState.REFUNDED
    assert (payout.kind, payout.to_address, payout.amount_wei, payout.state) == (
        Payout.Kind.DEPOSIT_REFUND, stray.sender, stray.amount_wei, PayoutState.QUEUED)
    # A refund that fails on chain puts the deposit back in the unattributed queue.
    funds.payout_claim(payout_id=payout.pk)
    funds.payout_failed(payout_id=payout.pk, error="TransferFailed")
    stray.refresh_from_db()
    assert stray.state == DepositState.UNATTRIBUTED


def test_a_deposit_below_the_minimum_is_credited_and_flagged(alice):
    small = record(funds.account_deposit_ref(alice.account), amount=10**13)
    assert small.state == DepositState.CREDITED and small.below_minimum
    assert ChainDeposit.objects.filter(below_minimum=True).count() == 1
    alice.account.refresh_from_db()
    assert alice.account.balance_wei == CREDIT + 10**13
