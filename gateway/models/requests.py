"""One row per request to the JSON gateway (/v1): who asked, for what, what it cost."""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models

from accounts.fields import WeiField


class RequestStatus(models.TextChoices):
    RUNNING = "running", "Running"
    DONE = "done", "Done"
    FAILED = "failed", "Failed"
    CANCELLED = "cancelled", "Cancelled"


class GatewayRequest(models.Model):
    """A request for text through the gateway, billed through one reservation
    (`reference`). Feeds /v1/usage, polling of /v1/inference/{id} and the admin."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    # Indexed only where it is looked up (below): every request writes this row twice,
    # and each index is one more write (the second write, with no indexed column
    # changed, can stay on the row's page: PostgreSQL's heap-only update).
    user = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True,
                             on_delete=models.SET_NULL, related_name="gateway_requests",
                             db_index=False)  # (user, created_at) below
    api_key = models.ForeignKey("accounts.ApiKey", null=True, blank=True,
                                on_delete=models.SET_NULL, related_name="gateway_requests",
                                db_index=False)
    endpoint = models.CharField(max_length=40, help_text="inference, chat, batch, …")
    model = models.CharField(max_length=100)
    status = models.CharField(max_length=12, choices=RequestStatus.choices,
                              default=RequestStatus.RUNNING)
    max_tokens = models.PositiveIntegerField(default=0)
    prompt_tokens = models.PositiveIntegerField(default=0)
    tokens = models.PositiveIntegerField(default=0, help_text="Tokens generated (billed).")
    cost_wei = WeiField(default=0, help_text="What the caller was charged.")
    cached = models.BooleanField(default=False)
    stream = models.BooleanField(default=False)
    finish_reason = models.CharField(max_length=20, blank=True)
    error_code = models.CharField(max_length=40, blank=True)
    error_message = models.TextField(blank=True)
    text = models.TextField(blank=True, help_text="The result, for polling.")
    host = models.CharField(max_length=200, blank=True)
    job_id = models.CharField(max_length=100, blank=True,
                              help_text="The marketplace job, or the upstream's completion id.")
    end_user = models.CharField(max_length=256, blank=True, db_default="",
                                help_text="The caller's own name for its end user (OpenAI's "
                                "`user`), for tracing abuse to them.")
    reference = models.CharField(max_length=200, blank=True,
                                 help_text="The reservation this request is billed through.")
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    ttft_ms = models.FloatField(null=True, blank=True)
    duration_ms = models.FloatField(null=True, blank=True)

    class Meta:
        db_table = "marketplace_gatewayrequest"
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["user", "created_at"], name="gateway_req_user_created"),
                   models.Index(fields=["reference"], name="gateway_req_reference")]

    def __str__(self):
        return f"{self.endpoint} {self.model} ({self.status})"
