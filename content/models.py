"""What people ask to have written, whichever product they ask through: the profiles that
size each content type and length, and the states a piece of writing goes through.
GenerationProfile keeps the table it had in the writer app (db_table)."""

from __future__ import annotations

from django.db import models

from content.prompts import CONTENT_TYPES, LENGTHS, STYLES

TYPE_CHOICES = [(t, {"blog": "Blog post"}.get(t, t.capitalize())) for t in CONTENT_TYPES]
STYLE_CHOICES = [(s, s.capitalize()) for s in STYLES]
LENGTH_CHOICES = [(n, n.capitalize()) for n in LENGTHS]


class GenerationProfile(models.Model):
    """Model, token budget and temperature for each content type and length."""

    content_type = models.CharField(max_length=10, choices=TYPE_CHOICES)
    length = models.CharField(max_length=10, choices=LENGTH_CHOICES)
    model = models.CharField(max_length=100, default="smollm2-135m-instruct")
    max_tokens = models.PositiveIntegerField()
    temperature = models.FloatField(default=0.7)

    class Meta:
        db_table = "writer_generationprofile"
        ordering = ["content_type", "length"]
        constraints = [models.UniqueConstraint(fields=["content_type", "length"],
                                               name="one_profile_per_type_and_length")]

    def __str__(self) -> str:
        return f"{self.content_type}/{self.length}: {self.model}, {self.max_tokens} tokens"


class Status(models.TextChoices):
    PENDING = "pending", "Waiting for a host"
    STREAMING = "streaming", "Writing"
    DONE = "done", "Done"
    FAILED = "failed", "Failed"
    CANCELLED = "cancelled", "Stopped"
