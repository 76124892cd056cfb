"""Reads of accounts: authenticate an API key, list keys and ledger entries, and check
that the ledger adds up."""

from __future__ import annotations

import hmac
import re
from collections import defaultdict
from datetime import datetime

from django.db import transaction
from django.db.models import F, QuerySet
from django.utils import timezone

from accounts.models import (
    Account,
    ApiKey,
    ChainDeposit,
    DepositState,
    EntryKind,
    LedgerEntry,
    Payout,
    PayoutState,
    Reservation,
    ReservationState,
    User,
)
from accounts.services import api_key_hash, api_key_mark_used

_KEY_FORMAT = re.compile(r"sk_[0-9a-f]{64}")


def api_key_authenticate(raw: str | None) -> ApiKey | None:
    """The usable key that `raw` is, or None (malformed, unknown, revoked, expired, or its
    user is inactive). Records the use at most once a minute (api_key_mark_used)."""
    if not api_key_well_formed(raw):
        return None
    candidates = (ApiKey.objects.filter(prefix=raw[:ApiKey.PREFIX_LENGTH])
                  .select_related("user", "user__account"))
    now = timezone.now()
    found = api_key_match(raw, candidates, now=now, active=lambda key: key.user.is_active)
    if found is not None:
        api_key_mark_used(found, now=now)
    return found


def api_key_well_formed(raw: str | None) -> bool:
    return bool(raw) and _KEY_FORMAT.fullmatch(raw) is not None


def api_key_match(raw: str, candidates, *, now: datetime, active) -> ApiKey | None:
    """Of the keys sharing `raw`'s prefix, the one whose hash it is, if usable at `now`
    and `active(key)` (its user may sign in)."""
    digest = api_key_hash(raw)
    found = None
    for candidate in candidates:
        # Constant-time, and over every candidate: the time taken tells nothing about
        # how much of a guessed hash matched.
        if hmac.compare_digest(candidate.key_hash, digest):
            found = candidate
    if found is None or not found.is_usable(now) or not active(found):
        return None
    return found


def api_keys_for_user(*, user: User) -> QuerySet[ApiKey]:
    """Active keys first, newest first; then revoked ones."""
    return ApiKey.objects.filter(user=user).order_by(F("revoked_at").asc(nulls_first=True),
                                                     "-created_at")


def api_key_get_for_user(*, user: User, key_id: int) -> ApiKey:
    """The key `key_id` if `user` owns it; ApiKey.DoesNotExist otherwise."""
    return ApiKey.objects.get(user=user, pk=key_id)


def reservations_held_before(*, cutoff: datetime) -> QuerySet[Reservation]:
    """Reservations still held that were made before `cutoff`: jobs that never finished,
    for a sweep to release."""
    return Reservation.objects.filter(state=ReservationState.HELD, created_at__lt=cutoff)


def ledger_for_account(*, account: Account, limit: int = 50) -> list[LedgerEntry]:
    return list(account.entries.select_related("reservation").order_by("-id")[:limit])


def ledger_invariant_violations(*, account: Account | None = None) -> list[str]:
    """Everything wrong with the ledger of `account` (or of every account); [] when sound.

    Checked per account, with its row locked so no write lands half-way through:
      1. replaying the entries in order gives each entry's balance_after and held_after,
         neither ever negative, and ends at the account's balance_wei and held_wei;
      2. each settle entry's amount = host payout + protocol fee + platform fee;
      3. each reservation has one reserve entry for its amount; a held one holds it all,
         and the held ones add up to held_wei; a settled one has
         amount = charged + refunded = host payout + protocol fee + platform fee + refunded;
         a released one refunded all of it; its settle and refund entries match;
      4. money is conserved: deposits + adjustments = balance + held + charged +
         withdrawn (withdrawal entries less their refunds), and
         reserved = charged + refunded + held, where charged is the sum of the
         settle entries (= host payouts + protocol fees + platform fees);
      5. withdrawals: each payout has one withdrawal entry for its amount, and one
         withdrawal refund exactly when it failed or was rejected; each credited deposit
         has its deposit entry.
    """
    ids = [account.pk] if account is not None else list(
        Account.objects.order_by("pk").values_list("pk", flat=True))
    problems: list[str] = []
    for account_id in ids:
        with transaction.atomic():
            locked = Account.objects.select_for_update().get(pk=account_id)
            problems.extend(_account_violations(locked))
    return problems


def _account_violations(account: Account) -> list[str]:
    problems = []
    where = f"account {account.pk}"
    balance = held = 0
    totals: dict[str, int] = defaultdict(int)
    by_reservation: dict[int, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    counts: dict[int, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for entry in account.entries.order_by("id").iterator():
        amount = entry.amount_wei
        if entry.kind != EntryKind.ADJUSTMENT and amount < 0:
            problems.append(f"{where}: entry {entry.pk} ({entry.kind}) is negative")
        if entry.kind == EntryKind.DEPOSIT or entry.kind == EntryKind.ADJUSTMENT:
            balance += amount
        elif entry.kind == EntryKind.RESERVE:
            balance -= amount
            held += amount
        elif entry.kind == EntryKind.SETTLE:
            held -= amount
            split = (entry.host_payout_wei or 0) + (entry.protocol_fee_wei or 0) + (
                entry.platform_fee_wei or 0)
            if split != amount:
                problems.append(f"{where}: settle entry {entry.pk} charges {amount} wei but "
                                f"splits {split}")
        elif entry.kind == EntryKind.REFUND:
            held -= amount
            balance += amount
        elif entry.kind == EntryKind.WITHDRAWAL:
            balance -= amount
        elif entry.kind == EntryKind.WITHDRAWAL_REFUND:
            balance += amount
        totals[entry.kind] += amount
        if entry.reservation_id is not None:
            by_reservation[entry.reservation_id][entry.kind] += amount
            counts[entry.reservation_id][entry.kind] += 1
        if (entry.balance_after_wei, entry.held_after_wei) != (balance, held):
            problems.append(
                f"{where}: entry {entry.pk} records balance {entry.balance_after_wei} held "
                f"{entry.held_after_wei}, replay gives balance {balance} held {held}")
        if balance < 0 or held < 0:
            problems.append(f"{where}: negative after entry {entry.pk}")
    if (account.balance_wei, account.held_wei) != (balance, held):
        problems.append(f"{where}: stores balance {account.balance_wei} held "
                        f"{account.held_wei}, the ledger gives {balance} and {held}")

    open_held = 0
    for r in Reservation.objects.filter(account=account).order_by("pk").iterator():
        name = f"{where}: reservation {r.reference}"
        sums, n = by_reservation[r.pk], counts[r.pk]
        if n[EntryKind.RESERVE] != 1 or sums[EntryKind.RESERVE] != r.amount_wei:
            problems.append(f"{name} has no single reserve entry for {r.amount_wei} wei")
        split = r.host_payout_wei + r.protocol_fee_wei + r.platform_fee_wei
        if r.state == ReservationState.HELD:
            open_held += r.amount_wei
            if r.charged_wei or r.refunded_wei or n[EntryKind.SETTLE] or n[EntryKind.REFUND]:
                problems.append(f"{name} is held but has charges or refunds")
        elif r.state == ReservationState.SETTLED:
            if r.amount_wei != r.charged_wei + r.refunded_wei or r.charged_wei != split:
                problems.append(f"{name}: {r.amount_wei} reserved != {r.charged_wei} charged "
                                f"({split} split) + {r.refunded_wei} refunded")
            if n[EntryKind.SETTLE] != 1 or sums[EntryKind.SETTLE] != r.charged_wei:
                problems.append(f"{name}: settle entries do not match the charge")
        elif r.state == ReservationState.RELEASED:
            if r.refunded_wei != r.amount_wei or r.charged_wei or n[EntryKind.SETTLE]:
                problems.append(f"{name} is released but not refunded in full")
        if sums[EntryKind.REFUND] != r.refunded_wei or n[EntryKind.REFUND] > 1:
            problems.append(f"{name}: refund entries do not match {r.refunded_wei} refunded")
    if open_held != account.held_wei:
        problems.append(f"{where}: open reservations hold {open_held}, held_wei is "
                        f"{account.held_wei}")

    charged = totals[EntryKind.SETTLE]
    paid_out = totals[EntryKind.WITHDRAWAL] - totals[EntryKind.WITHDRAWAL_REFUND]
    if (totals[EntryKind.DEPOSIT] + totals[EntryKind.ADJUSTMENT]
            != balance + held + charged + paid_out):
        problems.append(f"{where}: money in != balance + held + charged + withdrawn")
    problems.extend(_payout_violations(account, where, totals))
    if totals[EntryKind.RESERVE] != charged + totals[EntryKind.REFUND] + held:
        problems.append(f"{where}: reserved != charged + refunded + held")
    return problems


def _payout_violations(account: Account, where: str, totals: dict[str, int]) -> list[str]:
    problems = []
    entries: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for kind, reference, amount in account.entries.filter(
            kind__in=(EntryKind.WITHDRAWAL, EntryKind.WITHDRAWAL_REFUND)).values_list(
                "kind", "reference", "amount_wei"):
        entries[reference][kind] += amount
    debited = refunded = 0
    for payout in Payout.objects.filter(account=account, kind=Payout.Kind.WITHDRAWAL):
        sums = entries.pop(f"payout:{payout.payment_id}", {})
        given_back = payout.state in (PayoutState.FAILED, PayoutState.REJECTED)
        if sums.get(EntryKind.WITHDRAWAL, 0) != payout.amount_wei:
            problems.append(f"{where}: payout {payout.payment_id} has no withdrawal entry "
                            f"for {payout.amount_wei} wei")
        if sums.get(EntryKind.WITHDRAWAL_REFUND, 0) != (payout.amount_wei if given_back else 0):
            problems.append(f"{where}: payout {payout.payment_id} ({payout.state}) has "
                            "wrong refund entries")
        debited += payout.amount_wei
        refunded += payout.amount_wei if given_back else 0
    if entries:
        problems.append(f"{where}: withdrawal entries without a payout: {sorted(entries)}")
    if (debited, refunded) != (totals[EntryKind.WITHDRAWAL],
                               totals[EntryKind.WITHDRAWAL_REFUND]):
        problems.append(f"{where}: withdrawals in the ledger do not match the payouts")
    for deposit in ChainDeposit.objects.filter(account=account, state=DepositState.CREDITED):
        if deposit.entry_id is None or deposit.entry.amount_wei != deposit.amount_wei:
            problems.append(f"{where}: deposit {deposit} has no entry for its amount")
    return problems


def deposits_for_account(*, account: Account, limit: int = 50) -> list[ChainDeposit]:
    return list(ChainDeposit.objects.filter(account=account)[:limit])


def payouts_for_account(*, account: Account, limit: int = 50) -> list[Payout]:
    return list(Payout.objects.filter(account=account, kind=Payout.Kind.WITHDRAWAL)[:limit])
