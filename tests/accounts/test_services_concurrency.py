"""Parallel requests against one balance, each thread with its own database connection."""

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from django.db import connections

from accounts.errors import InsufficientFunds
from accounts.models import Account, EntryKind
from accounts.selectors import ledger_invariant_violations
from accounts.services import (
    balance_deposit,
    balance_reserve,
    reservation_release,
    reservation_settle,
    user_create,
)

PRICE = 1_000_003  # wei per request, odd so no sum lands on a round number by chance
REQUESTS = 50


@pytest.fixture
def dana(transactional_db, settings):
    settings.ACCOUNTS_SIGNUP_CREDIT_WEI = 0
    user = user_create(username="dana", email="dana@example.com", password="a-long-password-4")
    balance_deposit(user.account, amount_wei=10 * PRICE, reference="top-up")
    return user.account


def run_in_parallel(fn, count):
    barrier = threading.Barrier(count)

    def worker(i):
        barrier.wait()
        try:
            return fn(i)
        finally:
            connections.close_all()

    with ThreadPoolExecutor(max_workers=count) as pool:
        return list(pool.map(worker, range(count)))


@pytest.mark.django_db(transaction=True)
def test_fifty_parallel_reservations_against_a_balance_for_ten_let_exactly_ten_through(dana):
    def reserve(i):
        try:
            return balance_reserve(dana, amount_wei=PRICE, reference=f"req:{i}")
        except InsufficientFunds as exc:
            return exc

    outcomes = run_in_parallel(reserve, REQUESTS)
    refused = [o for o in outcomes if isinstance(o, InsufficientFunds)]
    granted = [o for o in outcomes if not isinstance(o, InsufficientFunds)]
    assert (len(granted), len(refused)) == (10, 40)
    assert all(exc.required_wei == PRICE and exc.available_wei < PRICE for exc in refused)
    account = Account.objects.get(pk=dana.pk)
    assert (account.balance_wei, account.held_wei) == (0, 10 * PRICE)
    balances = account.entries.values_list("balance_after_wei", flat=True)
    assert min(balances) >= 0
    assert account.entries.filter(kind=EntryKind.RESERVE).count() == 10
    assert ledger_invariant_violations(account=account) == []


@pytest.mark.django_db(transaction=True)
def test_parallel_settles_and_releases_of_the_same_reservations_never_pay_twice(dana):
    reservations = [balance_reserve(dana, amount_wei=PRICE, reference=f"job:{i}")
                    for i in range(10)]

    def close(i):
        reservation = reservations[i % 10]
        try:
            if i % 2:
                return reservation_settle(reservation, charged_wei=PRICE - 3,
                                          host_payout_wei=PRICE - 13, protocol_fee_wei=4,
                                          platform_fee_wei=6)
            return reservation_release(reservation, reason="cancelled")
        except Exception as exc:  # ReservationClosed for whichever came second
            return exc

    run_in_parallel(close, 40)
    account = Account.objects.get(pk=dana.pk)
    assert account.held_wei == 0
    settled = account.reservations.filter(state="settled").count()
    assert account.balance_wei == 10 * PRICE - settled * (PRICE - 3)
    assert account.entries.filter(kind=EntryKind.SETTLE).count() == settled
    assert ledger_invariant_violations(account=account) == []
