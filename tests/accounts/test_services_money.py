import pytest
from django.utils import timezone

from accounts.errors import InsufficientFunds, InvalidAmount, ReferenceInUse, ReservationClosed
from accounts.models import Account, EntryKind, LedgerEntry, Reservation, ReservationState, User
from accounts.selectors import ledger_invariant_violations, reservations_held_before
from accounts.services import (
    account_get_or_create,
    account_set_tier,
    balance_adjust,
    balance_deposit,
    balance_reserve,
    reservation_release,
    reservation_settle,
)
from tests.accounts.conftest import CREDIT

pytestmark = pytest.mark.django_db


def fresh(account: Account) -> Account:
    return Account.objects.get(pk=account.pk)


def kinds(account):
    return list(account.entries.order_by("id").values_list("kind", "amount_wei",
                                                           "balance_after_wei",
                                                           "held_after_wei"))


def test_sign_up_gives_the_configured_credit_as_a_deposit(alice):
    account = alice.account
    assert account.balance_wei == CREDIT
    assert kinds(account) == [(EntryKind.DEPOSIT, CREDIT, CREDIT, 0)]


def test_a_user_made_elsewhere_gets_an_account_and_the_credit_once(db, settings):
    settings.ACCOUNTS_SIGNUP_CREDIT_WEI = 5
    user = User.objects.create_user(username="admin", password="x")
    first = account_get_or_create(user)
    again = account_get_or_create(User.objects.get(pk=user.pk))
    assert first.pk == again.pk
    assert fresh(first).balance_wei == 5
    assert first.entries.count() == 1


def test_a_deposit_with_a_reference_is_credited_once(alice):
    account = alice.account
    first = balance_deposit(account, amount_wei=7, reference="payment:1")
    again = balance_deposit(account, amount_wei=7, reference="payment:1")
    assert first.pk == again.pk
    assert fresh(account).balance_wei == CREDIT + 7


def test_wei_beyond_sixty_four_bits_are_kept_to_the_last_digit(alice):
    big = 2**200 + 12345678901234567890123
    balance_deposit(alice.account, amount_wei=big)
    assert fresh(alice.account).balance_wei == CREDIT + big
    assert LedgerEntry.objects.filter(account=alice.account).first().balance_after_wei == \
        CREDIT + big


def test_reserving_moves_money_from_available_to_held(alice):
    reservation = balance_reserve(alice.account, amount_wei=1000, reference="job:1")
    account = fresh(alice.account)
    assert (account.balance_wei, account.held_wei) == (CREDIT - 1000, 1000)
    assert reservation.state == ReservationState.HELD
    assert kinds(account)[-1] == (EntryKind.RESERVE, 1000, CREDIT - 1000, 1000)


def test_reserving_more_than_the_balance_says_how_much_was_needed_and_available(alice):
    with pytest.raises(InsufficientFunds) as caught:
        balance_reserve(alice.account, amount_wei=CREDIT + 1, reference="job:big")
    assert (caught.value.required_wei, caught.value.available_wei) == (CREDIT + 1, CREDIT)
    assert caught.value.code == "INSUFFICIENT_FUNDS"
    assert fresh(alice.account).balance_wei == CREDIT
    assert alice.account.reservations.count() == 0


def test_reserving_the_same_reference_again_returns_the_first_reservation(alice):
    first = balance_reserve(alice.account, amount_wei=10, reference="job:2")
    assert balance_reserve(alice.account, amount_wei=10, reference="job:2").pk == first.pk
    assert fresh(alice.account).held_wei == 10
    with pytest.raises(ReferenceInUse):
        balance_reserve(alice.account, amount_wei=11, reference="job:2")


def test_settling_charges_the_real_cost_and_refunds_the_rest_to_the_wei(alice):
    reservation = balance_reserve(alice.account, amount_wei=240_000, reference="job:3")
    settled = reservation_settle(reservation, charged_wei=132, host_payout_wei=89,
                                 protocol_fee_wei=2, platform_fee_wei=41)
    account = fresh(alice.account)
    assert (account.balance_wei, account.held_wei) == (CREDIT - 132, 0)
    assert (settled.state, settled.charged_wei, settled.refunded_wei) == (
        ReservationState.SETTLED, 132, 240_000 - 132)
    assert kinds(account)[-2:] == [
        (EntryKind.SETTLE, 132, CREDIT - 240_000, 240_000 - 132),
        (EntryKind.REFUND, 240_000 - 132, CREDIT - 132, 0),
    ]
    settle = account.entries.get(kind=EntryKind.SETTLE)
    assert (settle.host_payout_wei, settle.protocol_fee_wei, settle.platform_fee_wei) == (
        89, 2, 41)
    assert ledger_invariant_violations(account=account) == []


def test_settling_the_whole_reservation_writes_no_refund(alice):
    reservation = balance_reserve(alice.account, amount_wei=100, reference="job:4")
    reservation_settle(reservation, charged_wei=100, host_payout_wei=80, protocol_fee_wei=0,
                       platform_fee_wei=20)
    assert not alice.account.entries.filter(kind=EntryKind.REFUND).exists()
    assert fresh(alice.account).balance_wei == CREDIT - 100


def test_settling_twice_with_the_same_figures_charges_once(alice):
    reservation = balance_reserve(alice.account, amount_wei=100, reference="job:5")
    split = {"charged_wei": 60, "host_payout_wei": 40, "protocol_fee_wei": 5,
             "platform_fee_wei": 15}
    reservation_settle(reservation, **split)
    reservation_settle(reservation, **split)
    assert fresh(alice.account).balance_wei == CREDIT - 60
    assert alice.account.entries.filter(kind=EntryKind.SETTLE).count() == 1


def test_settling_again_with_other_figures_is_refused(alice):
    reservation = balance_reserve(alice.account, amount_wei=100, reference="job:6")
    reservation_settle(reservation, charged_wei=60, host_payout_wei=40, protocol_fee_wei=5,
                       platform_fee_wei=15)
    with pytest.raises(ReservationClosed):
        reservation_settle(reservation, charged_wei=70, host_payout_wei=50,
                           protocol_fee_wei=5, platform_fee_wei=15)
    with pytest.raises(ReservationClosed):
        reservation_release(reservation)
    assert fresh(alice.account).balance_wei == CREDIT - 60


@pytest.mark.parametrize("split", [
    {"charged_wei": 101, "host_payout_wei": 81, "protocol_fee_wei": 0, "platform_fee_wei": 20},
    {"charged_wei": 50, "host_payout_wei": 40, "protocol_fee_wei": 5, "platform_fee_wei": 6},
    {"charged_wei": 50, "host_payout_wei": 60, "protocol_fee_wei": -10, "platform_fee_wei": 0},
    {"charged_wei": 50.0, "host_payout_wei": 50, "protocol_fee_wei": 0, "platform_fee_wei": 0},
])
def test_a_split_that_does_not_add_up_or_exceeds_the_reservation_is_refused(alice, split):
    reservation = balance_reserve(alice.account, amount_wei=100, reference="job:7")
    with pytest.raises(InvalidAmount):
        reservation_settle(reservation, **split)
    assert fresh(alice.account).held_wei == 100


def test_releasing_refunds_everything_and_releasing_again_changes_nothing(alice):
    reservation = balance_reserve(alice.account, amount_wei=500, reference="job:8")
    released = reservation_release(reservation, reason="host failed")
    reservation_release(reservation, reason="host failed")
    account = fresh(alice.account)
    assert (account.balance_wei, account.held_wei) == (CREDIT, 0)
    assert (released.state, released.refunded_wei) == (ReservationState.RELEASED, 500)
    assert account.entries.filter(kind=EntryKind.REFUND).count() == 1
    with pytest.raises(ReservationClosed):
        reservation_settle(reservation, charged_wei=0, host_payout_wei=0, protocol_fee_wei=0,
                           platform_fee_wei=0)


def test_an_adjustment_can_take_money_away_but_not_below_zero(alice, bob):
    balance_adjust(alice.account, amount_wei=-CREDIT, memo="chargeback", by=bob)
    assert fresh(alice.account).balance_wei == 0
    with pytest.raises(InsufficientFunds):
        balance_adjust(alice.account, amount_wei=-1, memo="more")
    with pytest.raises(InvalidAmount):
        balance_adjust(alice.account, amount_wei=5, memo=" ")
    entry = alice.account.entries.get(kind=EntryKind.ADJUSTMENT)
    assert (entry.amount_wei, entry.created_by, entry.memo) == (-CREDIT, bob, "chargeback")
    assert ledger_invariant_violations(account=alice.account) == []


def test_ledger_entries_cannot_be_changed_or_deleted(alice):
    entry = alice.account.entries.get()
    entry.amount_wei = 1
    with pytest.raises(ValueError):
        entry.save()
    with pytest.raises(ValueError):
        entry.delete()


def test_the_invariant_check_finds_a_balance_changed_behind_the_ledgers_back(alice, bob):
    Account.objects.filter(pk=alice.account.pk).update(balance_wei=CREDIT + 1)
    problems = ledger_invariant_violations()
    assert any(f"account {alice.account.pk}" in p for p in problems)
    assert not any(f"account {bob.account.pk}:" in p for p in problems)


def test_a_reservation_keeps_the_tier_it_was_priced_at(alice):
    account_set_tier(alice.account, tier="premium")
    reservation = balance_reserve(alice.account, amount_wei=10, reference="job:tier")
    account_set_tier(alice.account, tier="free")
    assert Reservation.objects.get(pk=reservation.pk).tier == "premium"


def test_reservations_still_held_after_a_cutoff_are_found_for_the_sweep(alice):
    old = balance_reserve(alice.account, amount_wei=10, reference="job:old")
    done = balance_reserve(alice.account, amount_wei=10, reference="job:done")
    reservation_release(done)
    cutoff = timezone.now()
    balance_reserve(alice.account, amount_wei=10, reference="job:new")
    assert list(reservations_held_before(cutoff=cutoff)) == [old]
