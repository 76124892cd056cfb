"""Batches of inference requests: submitted together through the gateway, each item run
and billed on its own by a Celery worker, the batch finished (and its webhook sent) once
the last item ends."""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models

from accounts.fields import WeiField


class BatchState(models.TextChoices):
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    COMPLETED = "completed", "Completed"
    CANCELLED = "cancelled", "Cancelled"


class ItemState(models.TextChoices):
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"


ITEM_FINISHED = frozenset({ItemState.SUCCEEDED, ItemState.FAILED})


class Batch(models.Model):
    """Up to a hundred requests of one API key. The counts are kept on the row (changed
    under its lock with each item that ends) so a status poll reads one row."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE,
                              related_name="batches")
    api_key = models.ForeignKey("accounts.ApiKey", null=True, blank=True,
                                on_delete=models.SET_NULL, related_name="batches")
    state = models.CharField(max_length=12, choices=BatchState.choices,
                             default=BatchState.QUEUED, db_index=True)
    total = models.PositiveIntegerField()
    succeeded = models.PositiveIntegerField(default=0)
    failed = models.PositiveIntegerField(default=0)
    cost_wei = WeiField(default=0, help_text="What the succeeded items were charged.")
    webhook_url = models.URLField(max_length=500, blank=True)
    webhook_secret = models.CharField(max_length=128, blank=True,
                                      help_text="HMAC-SHA256 key the webhook is signed with")
    webhook = models.ForeignKey("marketplace.WebhookDelivery", null=True, blank=True,
                                on_delete=models.SET_NULL, related_name="+")
    created = models.DateTimeField(auto_now_add=True, db_index=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    cancelled_at = models.DateTimeField(null=True, blank=True,
                                        help_text="When its owner cancelled it")

    class Meta:
        db_table = "marketplace_batch"
        ordering = ["-created"]
        verbose_name_plural = "batches"

    def __str__(self) -> str:
        return f"batch {self.id} ({self.state}, {self.finished_count}/{self.total})"

    @property
    def finished_count(self) -> int:
        return self.succeeded + self.failed


class BatchItem(models.Model):
    """One request of a batch. `attempts` counts claims; `reference` (batch:<id>) is the
    billing reference, the same on every attempt, so the item is charged at most once."""

    batch = models.ForeignKey(Batch, on_delete=models.CASCADE, related_name="items")
    index = models.PositiveSmallIntegerField()
    model = models.CharField(max_length=100)
    prompt = models.TextField()
    params = models.JSONField(default=dict, help_text="max_tokens, temperature")
    state = models.CharField(max_length=12, choices=ItemState.choices,
                             default=ItemState.QUEUED, db_index=True)
    text = models.TextField(blank=True)
    tokens = models.PositiveIntegerField(default=0)
    cost_wei = WeiField(default=0)
    cached = models.BooleanField(default=False)
    finish_reason = models.CharField(max_length=20, blank=True)
    host = models.CharField(max_length=300, blank=True)
    error_code = models.CharField(max_length=40, blank=True)
    error_message = models.TextField(blank=True)
    attempts = models.PositiveSmallIntegerField(default=0)
    job_id = models.UUIDField(null=True, blank=True, help_text="The marketplace job, if any.")
    # A claim holds the item until lease_until; a worker that died leaves it to expire,
    # and the sweep (or the redelivered task) claims it again.
    lease_until = models.DateTimeField(null=True, blank=True)
    not_before = models.DateTimeField(null=True, blank=True,
                                      help_text="A retry waits until then.")
    created = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        db_table = "marketplace_batchitem"
        ordering = ["batch", "index"]
        constraints = [
            models.UniqueConstraint(fields=["batch", "index"], name="batch_item_index_unique"),
        ]
        indexes = [models.Index(fields=["state", "lease_until"], name="batch_item_lease")]

    def __str__(self) -> str:
        return f"item {self.index} of batch {self.batch_id} ({self.state})"

    @property
    def reference(self) -> str:
        return f"batch:{self.pk}"

    @property
    def is_finished(self) -> bool:
        return self.state in ITEM_FINISHED
