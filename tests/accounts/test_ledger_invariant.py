"""Random sequences of deposits (by hand and on chain), reservations, settlements,
releases, withdrawals and failed withdrawals keep the books."""

import itertools

import pytest
from django.test import override_settings
from eth_utils import to_checksum_address
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from accounts import funds
from accounts.errors import InsufficientFunds, ReservationClosed
from accounts.models import (
    Account,
    ChainDeposit,
    EntryKind,
    Payout,
    PayoutState,
    ReservationState,
    WalletLink,
)
from accounts.selectors import ledger_invariant_violations
from accounts.services import (
    balance_adjust,
    balance_deposit,
    balance_reserve,
    reservation_release,
    reservation_settle,
    user_create,
)
from accounts.tiers import settlement_for

_names = itertools.count()

wei = st.integers(min_value=0, max_value=10**24)
operation = st.one_of(
    st.tuples(st.just("deposit"), st.integers(min_value=1, max_value=10**24)),
    st.tuples(st.just("adjust"), st.integers(min_value=-(10**22), max_value=10**22)),
    st.tuples(st.just("reserve"), wei),
    st.tuples(st.just("request"), st.sampled_from(["free", "basic", "premium"]),
              st.integers(min_value=0, max_value=10**12), st.integers(1, 4096),
              st.floats(min_value=0, max_value=1), st.integers(0, 1000)),
    st.tuples(st.just("settle"), st.integers(0, 50), st.floats(min_value=0, max_value=1),
              st.floats(min_value=0, max_value=1), st.floats(min_value=0, max_value=1)),
    st.tuples(st.just("release"), st.integers(0, 50)),
    st.tuples(st.just("chain_deposit"), st.integers(min_value=1, max_value=10**24),
              st.integers(0, 3)),
    st.tuples(st.just("withdraw"), st.integers(min_value=1, max_value=10**24)),
    st.tuples(st.just("payout_fail"), st.integers(0, 50)),
)
FUNDS = {"FUNDS_WITHDRAWAL_MIN_WEI": 1, "FUNDS_WITHDRAWAL_DAILY_LIMIT_WEI": 10**30,
         "FUNDS_WITHDRAWAL_APPROVAL_WEI": 10**30, "FUNDS_DEPOSIT_MIN_WEI": 10**15}


def split_of(total, a, b):
    """Three non-negative ints adding up to total (the floats only pick the cut points)."""
    first = int(total * a)
    second = int((total - first) * b)
    return first, second, total - first - second


@pytest.mark.django_db
@override_settings(**FUNDS)
@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(ops=st.lists(operation, max_size=40))
def test_random_reserve_settle_release_sequences_keep_the_ledger_invariant(ops):
    user = user_create(username=f"h{next(_names)}", password="a-long-password-5")
    account = user.account
    expected_balance, expected_held = account.balance_wei, 0
    open_ = []
    closed = []
    payouts = []
    wallet = WalletLink.objects.create(user=user, address=to_checksum_address(f"0x{user.pk:040x}"))
    ref = funds.account_deposit_ref(account)
    for n, op in enumerate(ops):
        kind = op[0]
        if kind == "chain_deposit":
            # The watcher may see one event more than once (log index op[2] of tx n % 3).
            seen = ChainDeposit.objects.count()
            funds.deposit_record(
                chain_id=31337, tx_hash=f"0x{user.pk:032x}{n % 3:032x}", log_index=op[2],
                block_number=n, block_hash="0x" + "ab" * 32, sender=wallet.address, ref=ref,
                amount_wei=op[1])
            if ChainDeposit.objects.count() > seen:  # a new event, not one seen again
                expected_balance += op[1]
        elif kind == "withdraw":
            try:
                payouts.append(funds.withdrawal_request(account=account,
                                                        to_address=wallet.address,
                                                        amount_wei=op[1]))
                expected_balance -= op[1]
            except InsufficientFunds:
                assert op[1] > expected_balance
        elif kind == "payout_fail" and payouts:
            payout = payouts[op[1] % len(payouts)]
            was = Payout.objects.get(pk=payout.pk).state
            funds.payout_failed(payout_id=payout.pk, error="test")
            if was == PayoutState.QUEUED:  # failing twice gives back once
                expected_balance += payout.amount_wei
        elif kind == "deposit":
            balance_deposit(account, amount_wei=op[1])
            expected_balance += op[1]
        elif kind == "adjust":
            try:
                balance_adjust(account, amount_wei=op[1], memo="test")
                expected_balance += op[1]
            except InsufficientFunds:
                assert expected_balance + op[1] < 0
        elif kind in ("reserve", "request"):
            if kind == "reserve":
                amount = op[1]
            else:
                _, tier, price, max_tokens, used, fee_bps = op
                amount = settlement_for(tier, price, max_tokens,
                                        protocol_fee_bps=fee_bps).charged_wei
            try:
                reservation = balance_reserve(account, amount_wei=amount,
                                              reference=f"{user.pk}:r{n}")
            except InsufficientFunds as exc:
                assert amount > expected_balance == exc.available_wei
                continue
            expected_balance -= amount
            expected_held += amount
            if kind == "request":
                # A real request: charged for the tokens it used, split as the chain does.
                tokens = int(max_tokens * used)
                reservation_settle(reservation,
                                   **settlement_for(tier, price, tokens,
                                                    protocol_fee_bps=fee_bps)._asdict())
                charged = settlement_for(tier, price, tokens, protocol_fee_bps=fee_bps)
                expected_held -= amount
                expected_balance += amount - charged.charged_wei
                closed.append(reservation)
            else:
                open_.append(reservation)
        elif kind == "settle" and open_:
            reservation = open_.pop(op[1] % len(open_))
            charged = int(reservation.amount_wei * op[2])
            host, protocol, platform = split_of(charged, op[3], op[4])
            reservation_settle(reservation, charged_wei=charged, host_payout_wei=host,
                               protocol_fee_wei=protocol, platform_fee_wei=platform)
            expected_held -= reservation.amount_wei
            expected_balance += reservation.amount_wei - charged
            closed.append(reservation)
        elif kind == "release" and (open_ or closed):
            pool = open_ if open_ else closed
            reservation = pool[op[1] % len(pool)]
            if pool is open_:
                pool.remove(reservation)
                reservation_release(reservation)
                expected_held -= reservation.amount_wei
                expected_balance += reservation.amount_wei
                closed.append(reservation)
            else:
                # Closing a closed reservation again never moves money.
                try:
                    reservation_release(reservation)
                except ReservationClosed:
                    pass
        account.refresh_from_db()
        assert (account.balance_wei, account.held_wei) == (expected_balance, expected_held)
        assert account.balance_wei >= 0
    assert ledger_invariant_violations(account=account) == []

    # The books close: every reserved wei was paid out, refunded, or is still held.
    entries = list(account.entries.all())
    reserved = sum(e.amount_wei for e in entries if e.kind == EntryKind.RESERVE)
    paid = sum(e.host_payout_wei + e.protocol_fee_wei + e.platform_fee_wei
               for e in entries if e.kind == EntryKind.SETTLE)
    refunded = sum(e.amount_wei for e in entries if e.kind == EntryKind.REFUND)
    assert reserved == paid + refunded + account.held_wei
    held = Account.objects.get(pk=account.pk).reservations.filter(state=ReservationState.HELD)
    assert sum(r.amount_wei for r in held) == account.held_wei

    # Deposits seen on chain = credited (no reference here is unknown); withdrawals
    # debited = the payouts that were not given back.
    seen = ChainDeposit.objects.filter(account=account)
    chain_in = sum(e.amount_wei for e in entries
                   if e.kind == EntryKind.DEPOSIT and e.reference.startswith("deposit:"))
    assert sum(d.amount_wei for d in seen) == chain_in
    debited = sum(e.amount_wei for e in entries if e.kind == EntryKind.WITHDRAWAL) - sum(
        e.amount_wei for e in entries if e.kind == EntryKind.WITHDRAWAL_REFUND)
    live = Payout.objects.filter(account=account).exclude(state=PayoutState.FAILED)
    assert debited == sum(p.amount_wei for p in live)
