from django.conf import settings
from django.contrib.auth.models import AbstractUser
from django.db import models

from accounts.fields import WeiField
from accounts.tiers import Tier


class User(AbstractUser):
    """The product's user. Custom from the first migration so it can grow without pain."""

    email = models.EmailField("email address", blank=True)

    class Meta:
        db_table = "accounts_user"


class Account(models.Model):
    """A user's money and tier. Its row is the lock every balance change takes.

    balance_wei is what the user can spend now; held_wei is what open reservations
    hold. Both change only through accounts.services, each change with a ledger entry.
    """

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.PROTECT,
                                related_name="account")
    tier = models.CharField(max_length=16, choices=Tier.choices, default=Tier.FREE)
    balance_wei = WeiField(default=0)
    held_wei = WeiField(default=0)
    # What this account's on-chain deposits name it by (0x + 64 hex digits); given on
    # first use (accounts.funds.account_deposit_ref).
    deposit_ref = models.CharField(max_length=66, unique=True, null=True, blank=True)
    # The generation of the gateway's mirror of this balance in Redis, while there is one
    # (accounts.till); what the gateway writes for another generation moves no money.
    till = models.CharField(max_length=16, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.CheckConstraint(condition=models.Q(balance_wei__gte=0),
                                   name="account_balance_not_negative"),
            models.CheckConstraint(condition=models.Q(held_wei__gte=0),
                                   name="account_held_not_negative"),
        ]

    def __str__(self):
        return f"{self.user} ({self.tier})"


class Scope(models.TextChoices):
    INFERENCE = "inference", "Run inference (/v1/inference, /v1/chat/completions)"
    BATCH = "batch", "Submit and read batches"
    MODELS = "models:read", "List models"
    USAGE = "usage:read", "Read usage"
    WITHDRAW = "funds:withdraw", "Withdraw to linked wallets"


class ApiKey(models.Model):
    """An API key. Only its sha256 is kept; the key itself is shown once, at creation."""

    PREFIX_LENGTH = 11  # "sk_" + 8 hex digits: enough to find the row, useless to guess with

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE,
                             related_name="api_keys")
    name = models.CharField(max_length=100)
    prefix = models.CharField(max_length=PREFIX_LENGTH, db_index=True)
    key_hash = models.CharField(max_length=64, unique=True)
    scopes = models.JSONField(default=list)
    expires_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]
        verbose_name = "API key"

    def __str__(self):
        return f"{self.name} ({self.prefix}…)"

    def has_scope(self, scope: str) -> bool:
        return scope in self.scopes

    def is_usable(self, now) -> bool:
        return self.revoked_at is None and (self.expires_at is None or self.expires_at > now)


class ReservationState(models.TextChoices):
    HELD = "held", "Held"
    SETTLED = "settled", "Settled"
    RELEASED = "released", "Released"


class Reservation(models.Model):
    """Money held for one request or job until it is settled or released.

    Closed reservations satisfy amount = host payout + protocol fee + platform fee +
    refund; a held one has charged and refunded at zero.
    """

    account = models.ForeignKey(Account, on_delete=models.PROTECT, related_name="reservations")
    reference = models.CharField(max_length=200,
                                 help_text="The job or request this money is for.")
    amount_wei = WeiField()
    tier = models.CharField(max_length=16, choices=Tier.choices, default=Tier.FREE,
                            help_text="The account's tier when reserved: the settlement's price.")
    state = models.CharField(max_length=16, choices=ReservationState.choices,
                             default=ReservationState.HELD)
    charged_wei = WeiField(default=0)
    refunded_wei = WeiField(default=0)
    host_payout_wei = WeiField(default=0)
    protocol_fee_wei = WeiField(default=0)
    platform_fee_wei = WeiField(default=0)
    reason = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    closed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        # Few indexes, since every request writes this row twice: the reference's unique
        # index (a plain one; `unique=True` on a CharField adds a second, for LIKE), and
        # the held ones by age for the sweep (settled rows leave that index).
        constraints = [models.UniqueConstraint(fields=["reference"],
                                               name="reservation_reference_unique")]
        indexes = [models.Index(fields=["created_at"], name="reservation_held_created",
                                condition=models.Q(state="held"))]

    def __str__(self):
        return f"{self.reference} ({self.state})"


class EntryKind(models.TextChoices):
    DEPOSIT = "deposit", "Deposit"
    RESERVE = "reserve", "Reserve"
    SETTLE = "settle", "Settle"
    REFUND = "refund", "Refund"
    ADJUSTMENT = "adjustment", "Adjustment"
    WITHDRAWAL = "withdrawal", "Withdrawal"
    WITHDRAWAL_REFUND = "withdraw_refund", "Withdrawal refund"


class LedgerEntry(models.Model):
    """One change to an account's money. Append-only: entries are never changed or deleted.

    amount_wei is the size of the event; its effect by kind:
      deposit     balance += amount
      reserve     balance -= amount, held += amount
      settle      held -= amount (charged: paid out as host payout, protocol fee and
                  platform fee, recorded on the entry)
      refund      held -= amount, balance += amount
      adjustment  balance += amount (signed: negative takes money away)
      withdrawal  balance -= amount (paid out on chain to a linked wallet)
      withdraw_refund  balance += amount (a withdrawal that failed or was rejected)
    balance_after_wei and held_after_wei are the account's figures after the entry.
    """

    # No index of its own: (account, id) below serves every look-up by account.
    account = models.ForeignKey(Account, on_delete=models.PROTECT, related_name="entries",
                                db_index=False)
    kind = models.CharField(max_length=16, choices=EntryKind.choices)
    amount_wei = WeiField()
    balance_after_wei = WeiField()
    held_after_wei = WeiField()
    reservation = models.ForeignKey(Reservation, null=True, blank=True,
                                    on_delete=models.PROTECT, related_name="entries")
    reference = models.CharField(max_length=200, blank=True)
    host_payout_wei = WeiField(null=True, blank=True)
    protocol_fee_wei = WeiField(null=True, blank=True)
    platform_fee_wei = WeiField(null=True, blank=True)
    memo = models.CharField(max_length=200, blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True,
                                   on_delete=models.SET_NULL, related_name="+",
                                   db_index=False)  # set on staff adjustments only
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-id"]
        verbose_name_plural = "ledger entries"
        indexes = [models.Index(fields=["account", "id"])]

    def __str__(self):
        return f"{self.kind} {self.amount_wei} wei ({self.reference or self.memo})"

    def save(self, *args, **kwargs):
        # A guard, not logic: the ledger is evidence, so an existing entry is never rewritten.
        if self.pk is not None:
            raise ValueError("ledger entries are append-only")
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        raise ValueError("ledger entries are append-only")


class WalletLink(models.Model):
    """An address proven (Sign-In with Ethereum) to belong to a user: it can log in as the
    user, and withdrawals go only to linked addresses. An address links to one user."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE,
                             related_name="wallets")
    address = models.CharField(max_length=42, unique=True, help_text="Checksummed.")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["created_at"]

    def __str__(self):
        return self.address


class SiweNonce(models.Model):
    """A nonce handed out for one Sign-In with Ethereum message; used at most once."""

    nonce = models.CharField(max_length=32, unique=True)
    created_at = models.DateTimeField(auto_now_add=True)
    used_at = models.DateTimeField(null=True, blank=True)

    def __str__(self):
        return self.nonce


class DepositState(models.TextChoices):
    CREDITED = "credited", "Credited"
    UNATTRIBUTED = "unattributed", "Unattributed"
    REFUNDED = "refunded", "Refunded"


class ChainDeposit(models.Model):
    """A `Deposited` event of the DepositBox, recorded once it had enough confirmations.

    One row per (chain, tx hash, log index), so a watcher that reads a block twice
    credits once. A deposit whose reference names no account waits as unattributed until
    staff assign it to an account or refund it to its sender."""

    chain_id = models.BigIntegerField()
    tx_hash = models.CharField(max_length=66)
    log_index = models.IntegerField()
    block_number = models.BigIntegerField()
    block_hash = models.CharField(max_length=66)
    sender = models.CharField(max_length=42)
    ref = models.CharField(max_length=66)
    amount_wei = WeiField()
    account = models.ForeignKey(Account, null=True, blank=True, on_delete=models.PROTECT,
                                related_name="deposits")
    state = models.CharField(max_length=16, choices=DepositState.choices)
    below_minimum = models.BooleanField(
        default=False, help_text="Less than ACCOUNTS_DEPOSIT_MIN_WEI: credited all the same.")
    entry = models.OneToOneField(LedgerEntry, null=True, blank=True, on_delete=models.PROTECT,
                                 related_name="+")
    resolved_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True,
                                    on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-block_number", "-log_index"]
        constraints = [models.UniqueConstraint(fields=["chain_id", "tx_hash", "log_index"],
                                               name="chain_deposit_once")]
        indexes = [models.Index(fields=["state"], name="chain_deposit_unattributed",
                                condition=models.Q(state="unattributed"))]

    def __str__(self):
        return f"{self.tx_hash}#{self.log_index} ({self.state})"


class DepositCursor(models.Model):
    """The last block whose deposits the watcher has fully recorded, per deposit box."""

    chain_id = models.BigIntegerField()
    contract = models.CharField(max_length=42)
    block = models.BigIntegerField()
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["chain_id", "contract"],
                                               name="deposit_cursor_unique")]

    def __str__(self):
        return f"{self.contract}@{self.chain_id}: block {self.block}"


class PayoutState(models.TextChoices):
    AWAITING_APPROVAL = "awaiting_approval", "Awaiting approval"
    QUEUED = "queued", "Queued"
    SENDING = "sending", "Sending"
    SENT = "sent", "Sent"
    FAILED = "failed", "Failed (refunded)"
    REJECTED = "rejected", "Rejected (refunded)"


class Payout(models.Model):
    """Money paid out of the DepositBox: a user's withdrawal to a linked address, or the
    refund of an unattributed deposit to its sender.

    `payment_id` is the id the contract pays under, once: a payout sent again after the
    node's answer was lost reverts on chain (AlreadyPaid) instead of paying twice. A
    withdrawal is debited (a `withdrawal` ledger entry) in the transaction that creates
    it, and credited back (`withdraw_refund`) if it fails or is rejected."""

    class Kind(models.TextChoices):
        WITHDRAWAL = "withdrawal", "Withdrawal"
        DEPOSIT_REFUND = "deposit_refund", "Deposit refund"

    payment_id = models.CharField(max_length=66, unique=True)
    kind = models.CharField(max_length=16, choices=Kind.choices, default=Kind.WITHDRAWAL)
    account = models.ForeignKey(Account, null=True, blank=True, on_delete=models.PROTECT,
                                related_name="payouts")
    deposit = models.ForeignKey(ChainDeposit, null=True, blank=True,
                                on_delete=models.PROTECT, related_name="refunds")
    to_address = models.CharField(max_length=42)
    amount_wei = WeiField()
    state = models.CharField(max_length=20, choices=PayoutState.choices)
    tx_hash = models.CharField(max_length=66, blank=True)
    block_number = models.BigIntegerField(null=True, blank=True)
    attempts = models.IntegerField(default=0)
    error = models.CharField(max_length=300, blank=True)
    approved_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True,
                                    on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    sent_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["account", "created_at"])]

    def __str__(self):
        return f"{self.kind} {self.amount_wei} wei to {self.to_address} ({self.state})"
