"""A marketplace job as the client sees it, and each attempt at it on one host."""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models

WEI = {"max_digits": 78, "decimal_places": 0}


class JobState(models.TextChoices):
    NEGOTIATING = "NEGOTIATING", "Negotiating"
    POSTED = "POSTED", "Posted"
    CLAIMED = "CLAIMED", "Claimed"
    PROCESSING = "PROCESSING", "Processing"
    STREAMING = "STREAMING", "Streaming"
    COMPLETED = "COMPLETED", "Completed"
    FAILED = "FAILED", "Failed"
    DISPUTED = "DISPUTED", "Disputed"
    REFUNDED = "REFUNDED", "Refunded"


TERMINAL_STATES = frozenset({JobState.COMPLETED, JobState.FAILED, JobState.REFUNDED})

# Which state may follow which. A failover or a retry goes back to NEGOTIATING with the
# next host; DISPUTED is followed by a retry elsewhere or by the arbitrator's verdict.
TRANSITIONS: dict[str, frozenset[str]] = {
    JobState.NEGOTIATING: frozenset({JobState.POSTED, JobState.FAILED}),
    JobState.POSTED: frozenset(
        {JobState.CLAIMED, JobState.NEGOTIATING, JobState.REFUNDED, JobState.FAILED}
    ),
    JobState.CLAIMED: frozenset(
        {JobState.PROCESSING, JobState.NEGOTIATING, JobState.REFUNDED, JobState.FAILED}
    ),
    JobState.PROCESSING: frozenset(
        {JobState.STREAMING, JobState.NEGOTIATING, JobState.REFUNDED, JobState.FAILED}
    ),
    JobState.STREAMING: frozenset(
        {JobState.COMPLETED, JobState.DISPUTED, JobState.NEGOTIATING, JobState.REFUNDED,
         JobState.FAILED}
    ),
    JobState.DISPUTED: frozenset(
        {JobState.NEGOTIATING, JobState.COMPLETED, JobState.REFUNDED, JobState.FAILED}
    ),
    JobState.COMPLETED: frozenset(),
    JobState.FAILED: frozenset(),
    JobState.REFUNDED: frozenset(),
}


class Job(models.Model):
    """One request for text, carried through as many hosts as it takes to finish it."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
        related_name="marketplace_jobs",
    )
    state = models.CharField(max_length=16, choices=JobState.choices,
                             default=JobState.NEGOTIATING, db_index=True)
    model = models.CharField(max_length=100)
    prompt = models.TextField()
    prompt_hash = models.CharField(max_length=66)
    max_tokens = models.PositiveIntegerField()
    temperature = models.FloatField(default=0.7)
    max_price_per_token_wei = models.DecimalField(**WEI, null=True, blank=True)
    client_address = models.CharField(max_length=42, blank=True)

    text = models.TextField(blank=True, help_text="Everything delivered so far, in order.")
    tokens = models.PositiveIntegerField(default=0)
    paid_wei = models.DecimalField(**WEI, default=0, help_text="Paid to hosts and fees on chain.")
    quality = models.FloatField(null=True, blank=True)
    error_code = models.CharField(max_length=40, blank=True)
    error_message = models.TextField(blank=True)

    created = models.DateTimeField(auto_now_add=True, db_index=True)
    updated = models.DateTimeField(auto_now=True)
    first_token_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created"]

    def __str__(self) -> str:
        return f"{self.model} job {self.id} ({self.state})"

    @property
    def is_finished(self) -> bool:
        return self.state in TERMINAL_STATES


class AttemptState(models.TextChoices):
    POSTED = "POSTED", "Posted"
    CLAIMED = "CLAIMED", "Claimed"
    STREAMING = "STREAMING", "Streaming"
    SUBMITTED = "SUBMITTED", "Result submitted"
    ACCEPTED = "ACCEPTED", "Accepted"
    DISPUTED = "DISPUTED", "Disputed"
    ABANDONED = "ABANDONED", "Abandoned (host failed)"
    REFUNDED = "REFUNDED", "Refunded"
    FAILED = "FAILED", "Failed"


class JobAttempt(models.Model):
    """One host's part of a job: one on-chain job with its own escrow."""

    job = models.ForeignKey(Job, on_delete=models.CASCADE, related_name="attempts")
    number = models.PositiveSmallIntegerField()
    state = models.CharField(max_length=16, choices=AttemptState.choices,
                             default=AttemptState.POSTED, db_index=True)
    host_address = models.CharField(max_length=42, db_index=True)
    host_url = models.URLField(max_length=300)
    chain_job_id = models.PositiveBigIntegerField(null=True, blank=True, db_index=True)
    price_per_token_wei = models.DecimalField(**WEI)
    escrow_wei = models.DecimalField(**WEI, default=0)
    start_index = models.PositiveIntegerField(
        default=0, help_text="Tokens of the job delivered before this attempt began."
    )
    tokens = models.PositiveIntegerField(default=0, help_text="Tokens this host delivered.")
    tokens_billed = models.PositiveIntegerField(default=0, help_text="Tokens the host claimed.")
    paid_wei = models.DecimalField(**WEI, default=0)
    refund_wei = models.DecimalField(**WEI, default=0)
    quality = models.FloatField(null=True, blank=True)
    ttft_ms = models.FloatField(null=True, blank=True)
    tokens_per_s = models.FloatField(null=True, blank=True)
    result_hash = models.CharField(max_length=66, blank=True)
    result_cid = models.CharField(max_length=120, blank=True)
    tx_hashes = models.JSONField(default=dict, blank=True)
    # Paid through a payment channel instead of a job's escrow (marketplace.channels):
    # no chain job, and what the vouchers signed for this attempt, in wei.
    channel = models.ForeignKey("marketplace.PaymentChannel", null=True, blank=True,
                                on_delete=models.PROTECT, related_name="attempts")
    voucher_wei = models.DecimalField(**WEI, default=0,
                                      help_text="What vouchers paid for this attempt.")
    error_code = models.CharField(max_length=40, blank=True)
    # When the host answered our StreamInit holding its claim (the attempt reached
    # CLAIMED or STREAMING). The state moves on; this stays, so a failure afterwards is
    # known to be one where the client was there (marketplace.reputation).
    answered_at = models.DateTimeField(null=True, blank=True)
    created = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["job", "number"]
        constraints = [
            models.UniqueConstraint(fields=["job", "number"], name="attempt_number_unique"),
        ]

    def __str__(self) -> str:
        return f"attempt {self.number} of {self.job_id} on {self.host_address}"
