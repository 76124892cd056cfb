"""Generations: what a person asked for in the browser and got.

A document is a conversation: its first generation, and the follow-ups asked of it
("Shorter", "More formal", a change in the person's words; writer.conversation), each a
generation of its own with its own stream, bill and text. A follow-up links to the
document's first generation (`root`) and to the version it changed (`parent`), and keeps
the change asked (`instruction`). The page of any version shows the document's versions;
asking a change on an earlier one continues from that version. Deleting a version deletes
the follow-ups made from it."""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models

from content.models import (  # noqa: F401  (GenerationProfile and Status: the writer's too)
    LENGTH_CHOICES,
    STYLE_CHOICES,
    TYPE_CHOICES,
    GenerationProfile,
    Status,
)
from writer.conversation import presets_for


class Generation(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE,
                             related_name="generations")
    content_type = models.CharField(max_length=10, choices=TYPE_CHOICES)
    style = models.CharField(max_length=12, choices=STYLE_CHOICES)
    length = models.CharField(max_length=10, choices=LENGTH_CHOICES)
    prompt = models.TextField()
    full_prompt = models.TextField(help_text="What was sent to the model")
    model = models.CharField(max_length=100)
    max_tokens = models.PositiveIntegerField()
    temperature = models.FloatField()
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING,
                              db_index=True)
    text = models.TextField(blank=True)
    seq = models.PositiveIntegerField(default=0, help_text="Tokens in `text`")
    edited_text = models.TextField(blank=True)
    processed = models.JSONField(default=dict, blank=True)
    host = models.CharField(max_length=42, blank=True)
    tokens = models.PositiveIntegerField(default=0)
    cost_wei = models.DecimalField(max_digits=78, decimal_places=0, default=0)
    cached = models.BooleanField(default=False)
    cache_key = models.CharField(max_length=64, db_index=True)
    job_id = models.UUIDField(null=True, blank=True)
    price_cap_wei = models.DecimalField(max_digits=78, decimal_places=0, null=True, blank=True,
                                        help_text="The most a host may charge per token")
    reservation = models.OneToOneField("accounts.Reservation", null=True, blank=True,
                                       on_delete=models.SET_NULL, related_name="generation")
    error_code = models.CharField(max_length=40, blank=True)
    error_message = models.TextField(blank=True)
    ttft_ms = models.FloatField(null=True, blank=True)
    root = models.ForeignKey("self", null=True, blank=True, on_delete=models.CASCADE,
                             related_name="+",
                             help_text="The document's first generation (none on itself)")
    parent = models.ForeignKey("self", null=True, blank=True, on_delete=models.CASCADE,
                               related_name="followups",
                               help_text="The version this follow-up changed")
    instruction = models.TextField(blank=True, help_text="The change a follow-up asked")
    created = models.DateTimeField(auto_now_add=True, db_index=True)
    finished = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created"]

    def __str__(self) -> str:
        return f"{self.get_content_type_display()}: {self.prompt[:40]}"

    @property
    def document_id(self):
        return self.root_id or self.id

    @property
    def session(self) -> str:
        """The marketplace session of the document's conversation (JobSpec.session): its
        every prompt goes first to the host that answered the last one."""
        return f"writer:{self.document_id}"

    @property
    def is_followup(self) -> bool:
        return self.parent_id is not None or self.root_id is not None

    @property
    def followup_presets(self) -> list[tuple[str, str]]:
        """The buttons of the changes offered for this type (writer.conversation)."""
        return presets_for(self.content_type)

    @property
    def final_text(self) -> str:
        return self.edited_text or self.text

    @property
    def is_live(self) -> bool:
        return self.status in (Status.PENDING, Status.STREAMING)

    @property
    def progress_percent(self) -> int:
        return min(100, round(100 * self.seq / self.max_tokens)) if self.max_tokens else 0

    @property
    def seconds(self) -> float | None:
        if self.finished is None:
            return None
        return round((self.finished - self.created).total_seconds(), 1)

    @property
    def error_shown(self) -> str:
        """What the page says about a failure: the fixed message of its code. The stored
        message (a host's or the chain's words, an exception's text) is for operators; it
        is logged with this generation's id, which the page gives to quote."""
        from marketplace.client.errors import public_message

        return public_message(self.error_code) if self.error_code else ""
