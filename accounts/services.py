"""Writes of accounts: users and their accounts, API keys, and every change of money.

Every balance change locks the account row (select_for_update), changes the figures
and appends a ledger entry in one transaction, so concurrent requests queue on the row
and can never spend the same wei twice.
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime, timedelta
from typing import NamedTuple

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from accounts.errors import (
    InsufficientFunds,
    InvalidAmount,
    ReferenceInUse,
    ReservationClosed,
    TooManyKeys,
)
from accounts.models import (
    Account,
    ApiKey,
    EntryKind,
    LedgerEntry,
    Reservation,
    ReservationState,
    Scope,
    User,
)
from accounts.tiers import Tier
from accounts.till import till_detach, till_release

KEY_PREFIX = "sk_"
KEY_RANDOM_BYTES = 32


# ---- Users and accounts -------------------------------------------------------------


@transaction.atomic
def user_create(*, username: str, password: str, email: str = "") -> User:
    """A new user with an account holding the sign-up credit."""
    user = User.objects.create_user(username=username, email=email, password=password)
    account_get_or_create(user)
    return user


@transaction.atomic
def account_get_or_create(user: User) -> Account:
    """The user's account, made on first use with the sign-up credit
    (settings.ACCOUNTS_SIGNUP_CREDIT_WEI) so users from createsuperuser or older
    sign-ups are billed the same way. The credit is given once: only the transaction
    that creates the row deposits it."""
    try:
        return user.account
    except Account.DoesNotExist:
        pass
    account, created = Account.objects.get_or_create(user=user)
    credit = int(settings.ACCOUNTS_SIGNUP_CREDIT_WEI)
    if created and credit > 0:
        account.balance_wei = credit
        account.save(update_fields=["balance_wei", "updated_at"])
        _append(account, EntryKind.DEPOSIT, credit, reference=f"signup:{user.pk}",
                memo="Sign-up credit")
    user.account = account
    return account


@transaction.atomic
def account_set_tier(account: Account, *, tier: str) -> Account:
    if tier not in Tier.values:
        raise ValueError(f"unknown tier {tier!r}")
    Account.objects.filter(pk=account.pk).update(tier=tier, updated_at=timezone.now())
    account.tier = tier
    return account


# ---- Money --------------------------------------------------------------------------


def _lock(account_id: int) -> Account:
    """The account's row, locked; its money taken back from the gateway's till first,
    if it is there (accounts.till), so that this change and the till's never meet."""
    till_release(account_id)
    account = Account.objects.select_for_update().get(pk=account_id)
    if account.till:  # mirrored again meanwhile, or Redis was away
        till_detach(account)
    return account


def _append(account: Account, kind: str, amount_wei: int, **fields) -> LedgerEntry:
    return LedgerEntry.objects.create(account=account, kind=kind, amount_wei=amount_wei,
                                      balance_after_wei=account.balance_wei,
                                      held_after_wei=account.held_wei, **fields)


def _whole(value, name: str, *, signed: bool = False) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidAmount(f"{name} must be an int of wei, got {value!r}")
    if value < 0 and not signed:
        raise InvalidAmount(f"{name} must not be negative, got {value}")
    return value


@transaction.atomic
def balance_deposit(account: Account, *, amount_wei: int, reference: str = "",
                    memo: str = "") -> LedgerEntry:
    """Add money. With a reference, depositing it again returns the first entry
    (a retried payment notification credits once)."""
    amount_wei = _whole(amount_wei, "amount_wei")
    if amount_wei == 0:
        raise InvalidAmount("a deposit must be more than 0 wei")
    locked = _lock(account.pk)
    if reference:
        # Checked under the account's lock, so two retries cannot both pass it.
        earlier = locked.entries.filter(kind=EntryKind.DEPOSIT, reference=reference).first()
        if earlier is not None:
            return earlier
    locked.balance_wei += amount_wei
    locked.save(update_fields=["balance_wei", "updated_at"])
    return _append(locked, EntryKind.DEPOSIT, amount_wei, reference=reference, memo=memo)


@transaction.atomic
def balance_adjust(account: Account, *, amount_wei: int, memo: str,
                   by: User | None = None) -> LedgerEntry:
    """A manual correction by staff: positive adds, negative takes away (never below 0)."""
    amount_wei = _whole(amount_wei, "amount_wei", signed=True)
    if not memo.strip():
        raise InvalidAmount("an adjustment needs a memo saying why")
    locked = _lock(account.pk)
    if locked.balance_wei + amount_wei < 0:
        raise InsufficientFunds(required_wei=-amount_wei, available_wei=locked.balance_wei)
    locked.balance_wei += amount_wei
    locked.save(update_fields=["balance_wei", "updated_at"])
    return _append(locked, EntryKind.ADJUSTMENT, amount_wei, memo=memo, created_by=by)


@transaction.atomic
def balance_reserve(account: Account, *, amount_wei: int, reference: str) -> Reservation:
    """Hold `amount_wei` (the worst case of a request) for the job or request `reference`.

    Raises InsufficientFunds (required and available amounts) when the balance is short.
    Reserving the same reference again for the same amount returns the first reservation.
    """
    amount_wei = _whole(amount_wei, "amount_wei")
    if not reference:
        raise InvalidAmount("a reservation needs a reference")
    # The row lock serializes every reservation of this account: the check below and
    # the debit after it see the same balance, so parallel requests cannot overspend.
    locked = _lock(account.pk)
    earlier = Reservation.objects.filter(reference=reference).first()
    if earlier is not None:
        if earlier.account_id == locked.pk and earlier.amount_wei == amount_wei:
            return earlier
        raise ReferenceInUse(f"reference {reference!r} already has a different reservation")
    if amount_wei > locked.balance_wei:
        raise InsufficientFunds(required_wei=amount_wei, available_wei=locked.balance_wei)
    locked.balance_wei -= amount_wei
    locked.held_wei += amount_wei
    locked.save(update_fields=["balance_wei", "held_wei", "updated_at"])
    reservation = Reservation.objects.create(account=locked, reference=reference,
                                             amount_wei=amount_wei, tier=locked.tier)
    _append(locked, EntryKind.RESERVE, amount_wei, reservation=reservation, reference=reference)
    return reservation


def _lock_reservation(reservation: Reservation) -> tuple[Account, Reservation]:
    # Reservation first, then account: the order the gateway's single statements take
    # them in (gateway.books), so the two never deadlock. balance_reserve
    # locks only the account (its reservation is new).
    locked = Reservation.objects.select_for_update().get(pk=reservation.pk)
    return _lock(reservation.account_id), locked


@transaction.atomic
def reservation_settle(reservation: Reservation, *, charged_wei: int, host_payout_wei: int,
                       protocol_fee_wei: int, platform_fee_wei: int) -> Reservation:
    """Charge the real cost and refund the rest of the reservation, in one transaction.

    charged_wei must equal host_payout_wei + protocol_fee_wei + platform_fee_wei and be
    at most the reserved amount. Settling again with the same figures returns the
    settled reservation unchanged; anything else on a closed reservation raises
    ReservationClosed. Returns the updated reservation.
    """
    charged_wei = _whole(charged_wei, "charged_wei")
    split = [_whole(host_payout_wei, "host_payout_wei"),
             _whole(protocol_fee_wei, "protocol_fee_wei"),
             _whole(platform_fee_wei, "platform_fee_wei")]
    if sum(split) != charged_wei:
        raise InvalidAmount(f"the split {split} does not add up to {charged_wei} wei charged")
    account, locked = _lock_reservation(reservation)
    if locked.state == ReservationState.SETTLED:
        if [locked.charged_wei, locked.host_payout_wei, locked.protocol_fee_wei,
                locked.platform_fee_wei] == [charged_wei, *split]:
            return locked
        raise ReservationClosed(f"{locked.reference} was already settled differently")
    if locked.state != ReservationState.HELD:
        raise ReservationClosed(f"{locked.reference} was already {locked.state}")
    if charged_wei > locked.amount_wei:
        raise InvalidAmount(
            f"{charged_wei} wei charged is more than the {locked.amount_wei} wei reserved")
    refund = locked.amount_wei - charged_wei
    locked.state = ReservationState.SETTLED
    locked.charged_wei, locked.refunded_wei = charged_wei, refund
    locked.host_payout_wei, locked.protocol_fee_wei, locked.platform_fee_wei = split
    locked.closed_at = timezone.now()
    locked.save()
    # Two entries, each with the figures right after it: the charge leaves the hold,
    # then the rest of the hold goes back to the balance.
    account.held_wei -= charged_wei
    _append(account, EntryKind.SETTLE, charged_wei, reservation=locked,
            reference=locked.reference, host_payout_wei=split[0], protocol_fee_wei=split[1],
            platform_fee_wei=split[2])
    if refund:
        account.held_wei -= refund
        account.balance_wei += refund
        _append(account, EntryKind.REFUND, refund, reservation=locked,
                reference=locked.reference)
    account.save(update_fields=["balance_wei", "held_wei", "updated_at"])
    return locked


@transaction.atomic
def reservation_release(reservation: Reservation, *, reason: str = "") -> Reservation:
    """Refund the whole reservation (a cancelled or failed job). Releasing a released
    reservation returns it unchanged; releasing a settled one raises ReservationClosed."""
    account, locked = _lock_reservation(reservation)
    if locked.state == ReservationState.RELEASED:
        return locked
    if locked.state != ReservationState.HELD:
        raise ReservationClosed(f"{locked.reference} was already {locked.state}")
    account.held_wei -= locked.amount_wei
    account.balance_wei += locked.amount_wei
    account.save(update_fields=["balance_wei", "held_wei", "updated_at"])
    locked.state = ReservationState.RELEASED
    locked.refunded_wei = locked.amount_wei
    locked.reason = reason[:200]
    locked.closed_at = timezone.now()
    locked.save()
    _append(account, EntryKind.REFUND, locked.amount_wei, reservation=locked,
            reference=locked.reference, memo=reason[:200])
    return locked


# ---- API keys -----------------------------------------------------------------------


class NewApiKey(NamedTuple):
    key: ApiKey
    raw: str  # shown to the user once; only its hash is stored


def api_key_hash(raw: str) -> str:
    # A plain sha256 is enough here, unlike for passwords: the key is 256 random bits,
    # so there is no dictionary to try and a stolen hash cannot be brute-forced. A slow
    # KDF would only add its cost to every API request.
    return hashlib.sha256(raw.encode()).hexdigest()


@transaction.atomic
@transaction.atomic
def api_key_create(*, user: User, name: str, scopes: list[str] | None = None,
                   expires_at: datetime | None = None) -> NewApiKey:
    """A new key for `user`; all scopes when none are given. Returns the key and the raw
    `sk_…` string, which is never stored and cannot be shown again. An account holds at
    most ACCOUNTS_MAX_API_KEYS live keys (TooManyKeys): limits count per account anyway,
    and a bounded number of keys is a bounded number of things to revoke."""
    scopes = list(Scope.values) if scopes is None else sorted(set(scopes))
    unknown = set(scopes) - set(Scope.values)
    if unknown:
        raise ValueError(f"unknown scopes: {sorted(unknown)}")
    if not scopes:
        raise ValueError("a key needs at least one scope")
    if expires_at is not None and expires_at <= timezone.now():
        raise ValueError("the expiry must be in the future")
    User.objects.select_for_update().filter(pk=user.pk).first()  # one create at a time
    live = ApiKey.objects.filter(user=user, revoked_at__isnull=True).exclude(
        expires_at__lte=timezone.now()).count()
    if live >= settings.ACCOUNTS_MAX_API_KEYS:
        raise TooManyKeys(f"an account may hold {settings.ACCOUNTS_MAX_API_KEYS} live keys; "
                          "revoke one first")
    raw = KEY_PREFIX + secrets.token_hex(KEY_RANDOM_BYTES)
    key = ApiKey.objects.create(user=user, name=name.strip() or "API key",
                                prefix=raw[:ApiKey.PREFIX_LENGTH], key_hash=api_key_hash(raw),
                                scopes=scopes, expires_at=expires_at)
    return NewApiKey(key=key, raw=raw)


def api_key_revoke(key: ApiKey) -> ApiKey:
    """Revoke the key from now on; revoking twice keeps the first time."""
    now = timezone.now()
    ApiKey.objects.filter(pk=key.pk, revoked_at__isnull=True).update(revoked_at=now)
    key.refresh_from_db(fields=["revoked_at"])
    return key


def api_key_mark_used(key: ApiKey, *, now: datetime | None = None) -> bool:
    """Record that the key was used, at most once per ACCOUNTS_KEY_LAST_USED_INTERVAL_S.

    A write on every request would put a row lock and a WAL record on the hot path of
    the gateway; the conditional UPDATE writes only when the stored time is older than
    the interval, and of several processes racing, one wins and the rest write nothing.
    """
    now = now or timezone.now()
    interval = timedelta(seconds=settings.ACCOUNTS_KEY_LAST_USED_INTERVAL_S)
    if key.last_used_at is not None and now - key.last_used_at < interval:
        return False
    updated = ApiKey.objects.filter(
        Q(last_used_at__isnull=True) | Q(last_used_at__lt=now - interval), pk=key.pk,
    ).update(last_used_at=now)
    if updated:
        key.last_used_at = now
    return bool(updated)
