from django.contrib import admin

from accounts.money import admin_column
from marketplace.models import Job, JobAttempt


class JobAttemptInline(admin.TabularInline):
    model = JobAttempt
    extra = 0
    can_delete = False
    fields = ("number", "state", "host_address", "chain_job_id", "price", "start_index",
              "tokens", "paid", "refund", "channel", "voucher", "quality", "verified",
              "ttft_ms", "error_code")
    readonly_fields = fields
    price = admin_column("price_per_token_wei", "price per token", per_token=True)
    voucher = admin_column("voucher_wei", "paid by vouchers")
    paid = admin_column("paid_wei", "paid")
    refund = admin_column("refund_wei", "refund")

    @admin.display(description="Verified")
    def verified(self, attempt: JobAttempt) -> str:
        record = getattr(attempt, "verification", None)
        if record is None:
            return "—"
        return record.get_state_display()


@admin.register(Job)
class JobAdmin(admin.ModelAdmin):
    list_display = ("id", "model", "state", "owner", "tokens", "max_tokens", "paid",
                    "quality", "created")
    list_filter = ("state", "model", "created")
    search_fields = ("id", "prompt", "owner__username")
    date_hierarchy = "created"
    inlines = [JobAttemptInline]
    paid = admin_column("paid_wei", "paid")
    readonly_fields = ("id", "prompt_hash", "created", "updated", "first_token_at",
                       "finished_at")

    def has_add_permission(self, request):
        return False  # jobs are made by the marketplace client, never by hand


@admin.register(JobAttempt)
class JobAttemptAdmin(admin.ModelAdmin):
    list_display = ("job", "number", "state", "host_address", "chain_job_id", "tokens",
                    "paid", "quality", "created")
    list_filter = ("state",)
    search_fields = ("job__id", "host_address", "result_hash")
    readonly_fields = [f.name for f in JobAttempt._meta.fields]
    paid = admin_column("paid_wei", "paid")

    def has_add_permission(self, request):
        return False
