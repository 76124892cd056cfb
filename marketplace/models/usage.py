"""What the job processor keeps: each finished job's processing record, each user's
running totals, and where a user wants to hear about their jobs."""

from __future__ import annotations

import secrets

from django.conf import settings
from django.db import models

WEI = {"max_digits": 78, "decimal_places": 0}


class ProcessingState(models.TextChoices):
    PENDING = "PENDING", "Waiting to be processed"
    RUNNING = "RUNNING", "Being processed"
    DONE = "DONE", "Processed"
    FAILED = "FAILED", "Failed for good (see dead letters)"


class JobProcessing(models.Model):
    """The after-work of one finished job: settle its attempts on chain, count it in its
    owner's statistics, send its webhooks. The row is the queue: a lost task message or
    a dead worker leaves it due, and the beat's sweep enqueues it again."""

    job = models.OneToOneField("marketplace.Job", primary_key=True, on_delete=models.CASCADE,
                               related_name="processing")
    state = models.CharField(max_length=10, choices=ProcessingState.choices,
                             default=ProcessingState.PENDING, db_index=True)
    next_attempt_at = models.DateTimeField(null=True, blank=True, db_index=True)
    attempts = models.PositiveSmallIntegerField(default=0)
    counted = models.BooleanField(default=False,
                                  help_text="Added to the owner's statistics (exactly once).")
    last_error = models.TextField(blank=True)
    created = models.DateTimeField(auto_now_add=True)
    processed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created"]
        verbose_name_plural = "job processing"

    def __str__(self) -> str:
        return f"processing of {self.job_id} ({self.state})"


class UsageStats(models.Model):
    """A user's running totals over every finished marketplace job."""

    user = models.OneToOneField(settings.AUTH_USER_MODEL, primary_key=True,
                                on_delete=models.CASCADE, related_name="usage_stats")
    jobs = models.PositiveIntegerField(default=0)
    tokens = models.PositiveBigIntegerField(default=0)
    cost_wei = models.DecimalField(**WEI, default=0, help_text="Paid on chain for their jobs.")
    failures = models.PositiveIntegerField(default=0)
    updated = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name_plural = "usage stats"

    def __str__(self) -> str:
        return f"usage of user {self.user_id}: {self.jobs} jobs"


def _new_secret() -> str:
    return secrets.token_hex(32)


class WebhookEndpoint(models.Model):
    """A URL a user wants told when one of their jobs finishes."""

    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE,
                              related_name="webhook_endpoints")
    url = models.URLField(max_length=500)
    secret = models.CharField(max_length=128, default=_new_secret,
                              help_text="HMAC-SHA256 key the receiver checks signatures with")
    active = models.BooleanField(default=True)
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["owner", "pk"]

    def __str__(self) -> str:
        return f"{self.url} ({'active' if self.active else 'off'})"
