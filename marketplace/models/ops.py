"""Background work's records: webhook deliveries and what finally failed."""

from __future__ import annotations

import uuid

from django.db import models


class DeliveryState(models.TextChoices):
    PENDING = "PENDING", "Pending"
    SENDING = "SENDING", "Sending"
    DELIVERED = "DELIVERED", "Delivered"
    FAILED = "FAILED", "Failed for good"


class WebhookDelivery(models.Model):
    """One event to one URL. The idempotency key stays the same across every retry, so a
    receiver that sees it twice knows it is the same event."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    owner = models.ForeignKey("accounts.User", null=True, blank=True, on_delete=models.SET_NULL)
    url = models.URLField(max_length=500)
    event = models.CharField(max_length=60)
    payload = models.JSONField()
    idempotency_key = models.CharField(max_length=80, unique=True)
    secret = models.CharField(max_length=128, help_text="HMAC-SHA256 key shared with the receiver")
    state = models.CharField(max_length=12, choices=DeliveryState.choices,
                             default=DeliveryState.PENDING, db_index=True)
    attempts = models.PositiveSmallIntegerField(default=0)
    next_attempt_at = models.DateTimeField(null=True, blank=True, db_index=True)
    last_status = models.PositiveSmallIntegerField(null=True, blank=True)
    last_error = models.TextField(blank=True)
    created = models.DateTimeField(auto_now_add=True)
    delivered_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created"]
        verbose_name_plural = "webhook deliveries"

    def __str__(self) -> str:
        return f"{self.event} to {self.url} ({self.state})"


class WebhookAttempt(models.Model):
    """The delivery log: every request we made and what came back."""

    delivery = models.ForeignKey(WebhookDelivery, on_delete=models.CASCADE,
                                 related_name="log")
    number = models.PositiveSmallIntegerField()
    status = models.PositiveSmallIntegerField(null=True, blank=True)
    error = models.TextField(blank=True)
    ms = models.FloatField(default=0)
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["delivery", "number"]

    def __str__(self) -> str:
        return f"attempt {self.number}: {self.status or self.error[:40]}"


class DeadLetter(models.Model):
    """A task that used up its retries. Kept for a person to look at and replay."""

    task = models.CharField(max_length=200, db_index=True)
    args = models.JSONField(default=list)
    kwargs = models.JSONField(default=dict)
    error = models.TextField()
    created = models.DateTimeField(auto_now_add=True)
    resolved = models.BooleanField(default=False)

    class Meta:
        ordering = ["-created"]

    def __str__(self) -> str:
        return f"{self.task} at {self.created:%Y-%m-%d %H:%M}"


class HealthProbe(models.Model):
    """The last result of a probe that /health and /metrics read (the chain, the hosts).
    The beat runs the probes and writes here; requests never probe, they read."""

    name = models.CharField(max_length=40, primary_key=True)
    ok = models.BooleanField(default=False)
    detail = models.JSONField(default=dict, blank=True)
    error = models.TextField(blank=True)
    ms = models.FloatField(default=0)
    checked_at = models.DateTimeField()

    def __str__(self) -> str:
        return f"{self.name}: {'ok' if self.ok else 'failing'} at {self.checked_at:%H:%M:%S}"


class HostProbe(models.Model):
    """One capability probe of one host by discovery or the health beat: whether it
    answered, and how fast. A host's uptime is the share of these it answered over
    MARKETPLACE_FIGURES_WINDOW_S (marketplace.figures); older rows are deleted."""

    host_address = models.CharField(max_length=42)
    ok = models.BooleanField()
    ms = models.FloatField(null=True, blank=True)
    checked_at = models.DateTimeField()

    class Meta:
        indexes = [models.Index(fields=["host_address", "checked_at"], name="host_probe_recent")]

    def __str__(self) -> str:
        return f"{self.host_address}: {'up' if self.ok else 'down'} at {self.checked_at:%H:%M:%S}"
