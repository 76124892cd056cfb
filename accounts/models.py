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


class LedgerEntry(models.Model):
    """One change to an account's money. Append-only: entries are never changed or deleted.

    amount_wei is the size of the event; its effect by kind:
      deposit     balance += amount
      reserve     balance -= amount, held += amount
      settle      held -= amount (charged: paid out as host payout, protocol fee and
                  platform fee, recorded on the entry)
      refund      held -= amount, balance += amount
      adjustment  balance += amount (signed: negative takes money away)
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
