"""Our payment channels to hosts, as the paying side keeps them (marketplace.channels).

The chain holds each channel's deposit; this row holds what only we know: the cumulative
amount of the latest voucher we signed (`spent_wei`, with its signature), and the headroom
held by streams in progress (`reserved_wei`). Invariants, checked by
`marketplace.channels.channels_reconcile`: reserved + spent <= deposit, and spent is the
sum of what the vouchers of its attempts paid (JobAttempt.voucher_wei).
"""

from __future__ import annotations

from django.db import models
from django.db.models import F, Q

from marketplace.models.jobs import WEI


class PaymentChannelState(models.TextChoices):
    OPENING = "OPENING", "Opening"  # the open is being sent (or a crash left it so)
    OPEN = "OPEN", "Open"
    EXITING = "EXITING", "Exiting"  # our exit is started or about to be
    CLOSED = "CLOSED", "Closed"
    FAILED = "FAILED", "Failed to open"


LIVE_CHANNEL_STATES = (PaymentChannelState.OPENING, PaymentChannelState.OPEN)


class PaymentChannel(models.Model):
    """One unidirectional channel from the platform wallet to one host."""

    chain_id = models.PositiveBigIntegerField()
    contract = models.CharField(max_length=42, help_text="The PaymentChannels contract.")
    channel_id = models.PositiveBigIntegerField(null=True, blank=True,
                                                help_text="On chain; empty while opening.")
    payer_address = models.CharField(max_length=42)
    host_address = models.CharField(max_length=42, db_index=True)
    state = models.CharField(max_length=8, choices=PaymentChannelState.choices,
                             default=PaymentChannelState.OPENING, db_index=True)
    deposit_wei = models.DecimalField(**WEI, default=0)
    spent_wei = models.DecimalField(
        **WEI, default=0, help_text="The cumulative amount of the latest voucher we signed.")
    signature = models.CharField(max_length=132, blank=True,
                                 help_text="That voucher's signature (hex).")
    reserved_wei = models.DecimalField(
        **WEI, default=0, help_text="Headroom held by streams in progress.")
    wants_top_up = models.BooleanField(
        default=False, help_text="A stream found too little headroom: top up at once.")
    top_up_started_at = models.DateTimeField(
        null=True, blank=True, help_text="A top-up is being sent (its claim).")
    open_tx = models.CharField(max_length=66, blank=True)
    txs = models.JSONField(default=list, blank=True,
                           help_text="Top-ups, exits and corrections, in order.")
    error = models.TextField(blank=True)
    created = models.DateTimeField(auto_now_add=True)
    updated = models.DateTimeField(auto_now=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    exit_at = models.DateTimeField(null=True, blank=True,
                                   help_text="When our exit's challenge period ends.")
    closed_at = models.DateTimeField(null=True, blank=True)
    host_amount_wei = models.DecimalField(**WEI, null=True, blank=True)
    fee_wei = models.DecimalField(**WEI, null=True, blank=True)
    refund_wei = models.DecimalField(**WEI, null=True, blank=True)
    close_tx = models.CharField(max_length=66, blank=True)
    closed_by_exit = models.BooleanField(null=True, blank=True)

    class Meta:
        ordering = ["-created"]
        constraints = [
            # One channel per host at a time: concurrent openers meet here, so only one
            # deposit is ever sent (marketplace.channels.channel_ensure).
            models.UniqueConstraint(
                fields=["chain_id", "contract", "host_address"],
                condition=Q(state__in=["OPENING", "OPEN"]), name="one_live_channel_per_host"),
            models.UniqueConstraint(
                fields=["chain_id", "contract", "channel_id"],
                condition=Q(channel_id__isnull=False), name="channel_id_unique"),
            models.CheckConstraint(
                condition=Q(spent_wei__lte=F("deposit_wei")), name="channel_spent_le_deposit"),
            models.CheckConstraint(condition=Q(reserved_wei__gte=0),
                                   name="channel_reserved_not_negative"),
        ]

    def __str__(self) -> str:
        number = self.channel_id if self.channel_id is not None else "(opening)"
        return f"channel {number} to {self.host_address} ({self.state})"

    @property
    def remaining_wei(self) -> int:
        """What new leases may still take: deposit - spent - reserved."""
        return int(self.deposit_wei) - int(self.spent_wei) - int(self.reserved_wei)
