"""The audit trail: every transaction the product sends to the chain."""

from __future__ import annotations

from django.db import models


class ChainTransaction(models.Model):
    class Status(models.TextChoices):
        SENT = "sent", "Sent"
        MINED = "mined", "Mined"
        REVERTED = "reverted", "Reverted"
        FAILED = "failed", "Failed to send"

    tx_hash = models.CharField(max_length=66, unique=True)
    chain_id = models.PositiveBigIntegerField()
    account = models.CharField(max_length=42, db_index=True)
    contract = models.CharField(max_length=60)
    function = models.CharField(max_length=60, db_index=True)
    args = models.TextField(blank=True)
    nonce = models.PositiveBigIntegerField()
    value_wei = models.DecimalField(max_digits=78, decimal_places=0, default=0)
    status = models.CharField(max_length=10, choices=Status.choices, db_index=True)
    gas_used = models.PositiveBigIntegerField(null=True, blank=True)
    block = models.PositiveBigIntegerField(null=True, blank=True)
    error = models.TextField(blank=True)
    created = models.DateTimeField(auto_now_add=True, db_index=True)
    updated = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created"]

    def __str__(self) -> str:
        return f"{self.contract}.{self.function} {self.tx_hash[:12]}… ({self.status})"
