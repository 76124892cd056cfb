"""What the verifier found when it re-scored a host's result: the evidence an arbitrator and
an admin read (docs/trust.md, "Verification")."""

from __future__ import annotations

from django.db import models


class VerificationState(models.TextChoices):
    PENDING = "PENDING", "Waiting for the verifier"
    PASSED = "PASSED", "Passed"
    FAILED = "FAILED", "Failed"
    SKIPPED = "SKIPPED", "Not sampled or not verifiable"
    ERROR = "ERROR", "The verifier could not run"


class VerificationRecord(models.Model):
    """One attempt's re-score. Made before the host streams (it holds the job's sampling
    secret, so the check can be run again after our own process died); filled in by the
    verifier."""

    attempt = models.OneToOneField("marketplace.JobAttempt", on_delete=models.CASCADE,
                                   related_name="verification")
    state = models.CharField(max_length=8, choices=VerificationState.choices,
                             default=VerificationState.PENDING, db_index=True)
    host_address = models.CharField(max_length=42, db_index=True)
    model = models.CharField(max_length=100)
    chain_id = models.PositiveBigIntegerField()
    chain_job_id = models.PositiveBigIntegerField(null=True, blank=True)
    request = models.JSONField(help_text="The GenerationRequest as sent, seed included.")
    tokens = models.JSONField(default=list, blank=True,
                              help_text="What the host reported: [id, logprob, text] per token.")
    complete = models.BooleanField(
        default=False, help_text="The host said it stopped on its own, before the budget.")
    positions = models.PositiveIntegerField(default=0)
    failures = models.PositiveIntegerField(default=0)
    mismatches = models.PositiveIntegerField(
        default=0, help_text="Tokens that are not exactly the verifier's own choice.")
    clear_misses = models.PositiveIntegerField(
        default=0, help_text="Of them, those too far from it for floating-point noise.")
    mean_logprob_error = models.FloatField(null=True, blank=True)
    max_logprob_error = models.FloatField(null=True, blank=True)
    reason = models.TextField(blank=True)
    evidence = models.JSONField(default=list, blank=True)
    cpu_ms = models.FloatField(null=True, blank=True)
    created = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created"]
        indexes = [models.Index(fields=["host_address", "state"])]

    def __str__(self) -> str:
        return f"verification of {self.attempt_id} on {self.host_address} ({self.state})"

    @property
    def mismatch_rate(self) -> float | None:
        return self.mismatches / self.positions if self.positions else None
