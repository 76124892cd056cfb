"""The verifier's records: what each re-score found, as evidence an admin and the
arbitrator read (docs/trust.md, "Verification")."""

import json

from django.contrib import admin
from django.utils.html import format_html

from marketplace.models import VerificationRecord


@admin.register(VerificationRecord)
class VerificationRecordAdmin(admin.ModelAdmin):
    list_display = ("attempt", "state", "host_address", "model", "positions", "failures",
                    "clear_misses", "mean_logprob_error", "cpu_ms", "created")
    list_filter = ("state", "model", "created")
    search_fields = ("host_address", "attempt__job__id", "chain_job_id")
    date_hierarchy = "created"
    fields = ("attempt", "state", "reason", "host_address", "model", "chain_id",
              "chain_job_id", "complete", "positions", "failures", "mismatches",
              "clear_misses", "mean_logprob_error", "max_logprob_error", "cpu_ms",
              "evidence_table", "reported_tokens", "created", "finished_at")
    readonly_fields = fields

    @admin.display(description="Evidence (the positions that failed)")
    def evidence_table(self, record: VerificationRecord):
        if not record.evidence:
            return "—"
        return format_html("<pre>{}</pre>", json.dumps(record.evidence, indent=1))

    @admin.display(description="Tokens as the host reported them (id, log-probability, text)")
    def reported_tokens(self, record: VerificationRecord):
        rows = "\n".join(f"{i:>4}  {t[0]!s:>6}  {t[1]!s:>10}  {t[2]!r}"
                         for i, t in enumerate(record.tokens[:512]))
        return format_html("<pre>{}</pre>", rows or "—")

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False  # evidence is never edited
