"""Writes of money in and out: wallets linked by Sign-In with Ethereum, deposits seen on
chain, and payouts (withdrawals, refunds of unattributed deposits).

The chain itself is the marketplace's (marketplace.deposits reads the DepositBox and sends
its payouts); this module only records, under the account's row lock, what was seen and
what is to be paid, so that every wei is in the ledger before it moves on chain.
"""

from __future__ import annotations

import secrets
from datetime import timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone
from eth_utils import is_address, is_checksum_address, to_checksum_address

from accounts.errors import (
    AddressTaken,
    DailyLimitExceeded,
    InsufficientFunds,
    InvalidAddress,
    InvalidAmount,
    NotResolvable,
    SiweError,
    UnlinkedAddress,
    WithdrawalTooSmall,
)
from accounts.models import (
    Account,
    ChainDeposit,
    DepositState,
    EntryKind,
    Payout,
    PayoutState,
    SiweNonce,
    User,
    WalletLink,
)
from accounts.services import _append, _lock, _whole
from accounts.siwe import SiweMessage, siwe_check

NONCE_CHARS = 24
# Payouts that count against the daily limit: all but those given back.
LIVE_PAYOUTS = (PayoutState.AWAITING_APPROVAL, PayoutState.QUEUED, PayoutState.SENDING,
                PayoutState.SENT)


def checksum(address: str) -> str:
    """The EIP-55 form of `address`; InvalidAddress when it is not an address."""
    if not isinstance(address, str) or not is_address(address):
        raise InvalidAddress(f"{str(address)[:60]!r} is not an Ethereum address")
    digits = address[2:]
    if digits != digits.lower() and digits != digits.upper() and not is_checksum_address(
            address):
        # Mixed case is an EIP-55 checksum: a typo in it must not send money elsewhere.
        raise InvalidAddress(f"{address} has a wrong EIP-55 checksum (a typo?)")
    return to_checksum_address(address)


def ref_hex(ref: bytes | str) -> str:
    return ("0x" + ref.hex()) if isinstance(ref, bytes) else ref.lower()


# ---- Deposit references ---------------------------------------------------------------


def account_deposit_ref(account: Account) -> str:
    """The account's deposit reference (0x + 64 hex digits), made on first use."""
    if account.deposit_ref:
        return account.deposit_ref
    fresh = "0x" + secrets.token_hex(32)
    # Conditional, so two first uses at once agree on one reference.
    Account.objects.filter(pk=account.pk, deposit_ref__isnull=True).update(deposit_ref=fresh)
    account.deposit_ref = Account.objects.values_list("deposit_ref", flat=True).get(
        pk=account.pk)
    return account.deposit_ref


# ---- Sign-In with Ethereum --------------------------------------------------------------


def siwe_nonce_issue() -> str:
    """A fresh nonce; nonces past their time are dropped on the way."""
    now = timezone.now()
    SiweNonce.objects.filter(
        created_at__lt=now - timedelta(seconds=settings.FUNDS_SIWE_NONCE_TTL_S)).delete()
    nonce = secrets.token_hex(NONCE_CHARS // 2)
    SiweNonce.objects.create(nonce=nonce)
    return nonce


def siwe_verify(*, message: str, signature: str, domain: str, chain_id: int) -> SiweMessage:
    """Check a signed message and spend its nonce; SiweError (HTTP 401) with the reason."""
    now = timezone.now()
    ttl = timedelta(seconds=settings.FUNDS_SIWE_NONCE_TTL_S)
    checked = siwe_check(message, signature, domain=domain, chain_id=chain_id, now=now,
                         max_age=ttl)
    # Spent by one conditional UPDATE: of two requests with the same message, one wins.
    spent = SiweNonce.objects.filter(nonce=checked.nonce, used_at__isnull=True,
                                     created_at__gte=now - ttl).update(used_at=now)
    if spent != 1:
        known = SiweNonce.objects.filter(nonce=checked.nonce).first()
        if known is None:
            raise SiweError("SIWE_UNKNOWN_NONCE", "the nonce was not issued here")
        if known.used_at is not None:
            raise SiweError("SIWE_REPLAYED", "the message was used already")
        raise SiweError("SIWE_EXPIRED", "the nonce has expired; sign a new message")
    return checked


@transaction.atomic
def wallet_link(*, user: User, message: str, signature: str, domain: str,
                chain_id: int) -> WalletLink:
    """Link the message's signer to `user`: SiweError, or AddressTaken when another user
    has it. Linking an address the user has already is a no-op."""
    checked = siwe_verify(message=message, signature=signature, domain=domain,
                          chain_id=chain_id)
    existing = WalletLink.objects.filter(address=checked.address).first()
    if existing is not None:
        if existing.user_id != user.pk:
            raise AddressTaken(f"{checked.address} is linked to another account")
        return existing
    try:
        with transaction.atomic():
            return WalletLink.objects.create(user=user, address=checked.address)
    except IntegrityError:
        raise AddressTaken(f"{checked.address} is linked to another account") from None


def wallet_login(*, message: str, signature: str, domain: str, chain_id: int) -> User:
    """The active user whose linked wallet signed the message; SiweError otherwise."""
    checked = siwe_verify(message=message, signature=signature, domain=domain,
                          chain_id=chain_id)
    link = WalletLink.objects.select_related("user").filter(address=checked.address).first()
    if link is None or not link.user.is_active:
        raise SiweError("SIWE_NO_ACCOUNT", "no account has linked this wallet; sign in with "
                        "a password and link it first")
    return link.user


def wallet_unlink(*, user: User, address: str) -> None:
    WalletLink.objects.filter(user=user, address=checksum(address)).delete()


# ---- Deposits ---------------------------------------------------------------------------


@transaction.atomic
def deposit_record(*, chain_id: int, tx_hash: str, log_index: int, block_number: int,
                   block_hash: str, sender: str, ref: bytes | str,
                   amount_wei: int) -> ChainDeposit:
    """Record a confirmed `Deposited` event and credit its account, once per (chain,
    tx hash, log index): a second call returns the first row and credits nothing. A
    reference that names no account leaves the deposit unattributed, for staff."""
    amount_wei = _whole(amount_wei, "amount_wei")
    if amount_wei == 0:
        raise InvalidAmount("a deposit must be more than 0 wei")
    ref = ref_hex(ref)
    key = {"chain_id": chain_id, "tx_hash": tx_hash.lower(), "log_index": log_index}
    earlier = ChainDeposit.objects.filter(**key).first()
    if earlier is not None:
        return earlier
    account = Account.objects.filter(deposit_ref=ref).first()
    deposit = ChainDeposit(**key, block_number=block_number, block_hash=block_hash.lower(),
                           sender=checksum(sender), ref=ref, amount_wei=amount_wei,
                           below_minimum=amount_wei < settings.FUNDS_DEPOSIT_MIN_WEI,
                           state=DepositState.UNATTRIBUTED)
    try:
        with transaction.atomic():
            deposit.save()
    except IntegrityError:
        # Another watcher recorded it between our look and our insert: theirs stands.
        return ChainDeposit.objects.get(**key)
    if account is not None:
        _credit(deposit, account)
    return deposit


def _credit(deposit: ChainDeposit, account: Account, by: User | None = None) -> None:
    locked = _lock(account.pk)
    locked.balance_wei += deposit.amount_wei
    locked.save(update_fields=["balance_wei", "updated_at"])
    memo = "Deposit" + (" (below the minimum)" if deposit.below_minimum else "")
    deposit.entry = _append(locked, EntryKind.DEPOSIT, deposit.amount_wei,
                            reference=f"deposit:{deposit.tx_hash}:{deposit.log_index}",
                            memo=memo, created_by=by)
    deposit.account = locked
    deposit.state = DepositState.CREDITED
    deposit.resolved_by = by
    deposit.save(update_fields=["entry", "account", "state", "resolved_by"])


def _unattributed(deposit_id: int) -> ChainDeposit:
    deposit = ChainDeposit.objects.select_for_update().get(pk=deposit_id)
    if deposit.state != DepositState.UNATTRIBUTED:
        raise NotResolvable(f"deposit {deposit_id} is {deposit.state}, not unattributed")
    return deposit


@transaction.atomic
def deposit_assign(*, deposit_id: int, account: Account, by: User) -> ChainDeposit:
    """Staff credit an unattributed deposit to `account`."""
    deposit = _unattributed(deposit_id)
    _credit(deposit, account, by)
    return deposit


@transaction.atomic
def deposit_refund(*, deposit_id: int, by: User) -> Payout:
    """Staff send an unattributed deposit back to its sender (a payout the sweep sends)."""
    deposit = _unattributed(deposit_id)
    deposit.state = DepositState.REFUNDED
    deposit.resolved_by = by
    deposit.save(update_fields=["state", "resolved_by"])
    payout = Payout.objects.create(payment_id=_payment_id(), kind=Payout.Kind.DEPOSIT_REFUND,
                                   deposit=deposit, to_address=deposit.sender,
                                   amount_wei=deposit.amount_wei, state=PayoutState.QUEUED,
                                   approved_by=by)
    return payout


# ---- Withdrawals and payouts --------------------------------------------------------------


def _payment_id() -> str:
    return "0x" + secrets.token_hex(32)


def withdrawn_since(account: Account, since) -> int:
    amounts = Payout.objects.filter(account=account, kind=Payout.Kind.WITHDRAWAL,
                                    created_at__gte=since, state__in=LIVE_PAYOUTS
                                    ).values_list("amount_wei", flat=True)
    return sum(amounts)


@transaction.atomic
def withdrawal_request(*, account: Account, to_address: str, amount_wei: int) -> Payout:
    """Take `amount_wei` from the balance for a payout to a linked address, in one
    transaction with the payout's row. Above FUNDS_WITHDRAWAL_APPROVAL_WEI it waits for
    staff; else it is queued for the sweep. Errors: InvalidAddress, UnlinkedAddress,
    WithdrawalTooSmall, InsufficientFunds, DailyLimitExceeded."""
    address = checksum(to_address)
    amount_wei = _whole(amount_wei, "amount_wei")
    if amount_wei < max(1, settings.FUNDS_WITHDRAWAL_MIN_WEI):
        raise WithdrawalTooSmall(f"the smallest withdrawal is "
                                 f"{settings.FUNDS_WITHDRAWAL_MIN_WEI} wei")
    if not WalletLink.objects.filter(user_id=account.user_id, address=address).exists():
        raise UnlinkedAddress(f"{address} is not linked to this account: link it with "
                              "Sign-In with Ethereum first")
    locked = _lock(account.pk)  # the limit's sum and the debit under one lock
    if amount_wei > locked.balance_wei:
        raise InsufficientFunds(required_wei=amount_wei, available_wei=locked.balance_wei)
    day = withdrawn_since(locked, timezone.now() - timedelta(days=1))
    limit = settings.FUNDS_WITHDRAWAL_DAILY_LIMIT_WEI
    if day + amount_wei > limit:
        raise DailyLimitExceeded(f"{day} wei withdrawn in the last 24 hours; the limit is "
                                 f"{limit} wei")
    state = (PayoutState.AWAITING_APPROVAL
             if amount_wei > settings.FUNDS_WITHDRAWAL_APPROVAL_WEI else PayoutState.QUEUED)
    payout = Payout.objects.create(payment_id=_payment_id(), account=locked,
                                   to_address=address, amount_wei=amount_wei, state=state)
    locked.balance_wei -= amount_wei
    locked.save(update_fields=["balance_wei", "updated_at"])
    _append(locked, EntryKind.WITHDRAWAL, amount_wei, reference=f"payout:{payout.payment_id}",
            memo=f"Withdrawal to {address}")
    return payout


@transaction.atomic
def payout_approve(*, payout_id: int, by: User) -> Payout:
    updated = Payout.objects.filter(pk=payout_id, state=PayoutState.AWAITING_APPROVAL).update(
        state=PayoutState.QUEUED, approved_by=by, updated_at=timezone.now())
    if updated != 1:
        raise NotResolvable(f"payout {payout_id} is not awaiting approval")
    return Payout.objects.get(pk=payout_id)


@transaction.atomic
def payout_reject(*, payout_id: int, by: User) -> Payout:
    payout = Payout.objects.select_for_update().get(pk=payout_id)
    if payout.state != PayoutState.AWAITING_APPROVAL:
        raise NotResolvable(f"payout {payout_id} is not awaiting approval")
    payout.approved_by = by
    _give_back(payout, PayoutState.REJECTED, "rejected by staff")
    return payout


def payout_claim(*, payout_id: int) -> Payout | None:
    """Take a queued payout for sending (queued -> sending), or None when another worker
    has it or it is not queued."""
    claimed = Payout.objects.filter(pk=payout_id, state=PayoutState.QUEUED).update(
        state=PayoutState.SENDING, attempts=F("attempts") + 1, updated_at=timezone.now())
    return Payout.objects.get(pk=payout_id) if claimed else None


def payout_requeue(*, payout_id: int, error: str) -> None:
    """A send that may or may not have reached the chain: back in the queue. Sending it
    again is safe, the contract pays a payment id once."""
    Payout.objects.filter(pk=payout_id, state=PayoutState.SENDING).update(
        state=PayoutState.QUEUED, error=error[:300], updated_at=timezone.now())


@transaction.atomic
def payout_sent(*, payout_id: int, tx_hash: str, block_number: int | None) -> Payout:
    payout = Payout.objects.select_for_update().get(pk=payout_id)
    if payout.state in (PayoutState.SENDING, PayoutState.QUEUED):
        payout.state = PayoutState.SENT
        payout.tx_hash = tx_hash or payout.tx_hash
        payout.block_number = block_number
        payout.sent_at = timezone.now()
        payout.error = ""
        payout.save(update_fields=["state", "tx_hash", "block_number", "sent_at", "error",
                                   "updated_at"])
    return payout


@transaction.atomic
def payout_failed(*, payout_id: int, error: str) -> Payout:
    """A payout that can never be sent (the chain refused it for good): a withdrawal's
    money goes back to the balance; a refunded deposit is unattributed again."""
    payout = Payout.objects.select_for_update().get(pk=payout_id)
    if payout.state in (PayoutState.SENDING, PayoutState.QUEUED):
        _give_back(payout, PayoutState.FAILED, error)
    return payout


def _give_back(payout: Payout, state: str, error: str) -> None:
    payout.state = state
    payout.error = error[:300]
    payout.save(update_fields=["state", "error", "approved_by", "updated_at"])
    if payout.kind == Payout.Kind.DEPOSIT_REFUND:
        ChainDeposit.objects.filter(pk=payout.deposit_id).update(
            state=DepositState.UNATTRIBUTED, resolved_by=None)
        return
    locked = _lock(payout.account_id)
    locked.balance_wei += payout.amount_wei
    locked.save(update_fields=["balance_wei", "updated_at"])
    _append(locked, EntryKind.WITHDRAWAL_REFUND, payout.amount_wei,
            reference=f"payout:{payout.payment_id}", memo=f"Withdrawal {state}: {error}"[:200])
