"""Admin screens of the /v1 gateway: its request records and batches."""

from django.contrib import admin, messages
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html

from accounts.money import admin_column
from gateway.models import Batch, BatchItem, GatewayRequest, ItemState


@admin.register(GatewayRequest)
class GatewayRequestAdmin(admin.ModelAdmin):
    """Requests to /v1, read-only: they are written by the gateway as it bills them."""

    list_display = ("created_at", "user", "endpoint", "model", "status", "tokens",
                    "cost", "cached", "error_code", "duration_ms")
    list_filter = ("status", "endpoint", "model", "cached", "stream", "created_at")
    search_fields = ("id", "user__username", "reference", "job_id", "error_code", "end_user")
    date_hierarchy = "created_at"
    list_select_related = ("user",)
    readonly_fields = [f.name for f in GatewayRequest._meta.fields]
    cost = admin_column("cost_wei", "cost")

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

class BatchItemInline(admin.TabularInline):
    model = BatchItem
    extra = 0
    can_delete = False
    show_change_link = True
    fields = ("index", "state", "model", "tokens", "cost", "attempts", "error_code",
              "finished_at")
    readonly_fields = fields
    cost = admin_column("cost_wei", "cost")

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(Batch)
class BatchAdmin(admin.ModelAdmin):
    list_display = ("id", "owner", "state", "progress", "failed", "cost", "webhook_state",
                    "created", "finished_at")
    list_filter = ("state", "created")
    search_fields = ("id", "owner__username", "webhook_url")
    date_hierarchy = "created"
    list_select_related = ("owner", "webhook")
    exclude = ("webhook_secret",)
    readonly_fields = ("id", "owner", "api_key", "state", "total", "succeeded", "failed",
                       "cost", "webhook_url", "webhook_link", "created", "started_at",
                       "finished_at")
    inlines = [BatchItemInline]
    cost = admin_column("cost_wei", "cost")

    def has_add_permission(self, request):
        return False  # batches come from the API only

    @admin.display(description="progress")
    def progress(self, obj):
        return f"{obj.finished_count}/{obj.total}"

    @admin.display(description="webhook")
    def webhook_state(self, obj):
        if not obj.webhook_url:
            return "—"
        return obj.webhook.state if obj.webhook else "not sent yet"

    @admin.display(description="webhook delivery")
    def webhook_link(self, obj):
        if obj.webhook_id is None:
            return "—"
        url = reverse("admin:marketplace_webhookdelivery_change", args=[obj.webhook_id])
        return format_html('<a href="{}">{}</a>', url, obj.webhook)


@admin.register(BatchItem)
class BatchItemAdmin(admin.ModelAdmin):
    list_display = ("batch", "index", "state", "model", "tokens", "cost", "attempts",
                    "error_code", "finished_at")
    list_filter = ("state", "model", "error_code")
    search_fields = ("batch__id", "prompt", "error_message")
    list_select_related = ("batch",)
    raw_id_fields = ("batch",)
    readonly_fields = [f.name for f in BatchItem._meta.fields]
    cost = admin_column("cost_wei", "cost")
    actions = ["retry_now"]

    def has_add_permission(self, request):
        return False

    @admin.action(description="Run the selected failed items again")
    def retry_now(self, request, queryset):
        """A failed item goes back to the queue with fresh attempts; its batch is running
        again until it ends. The billing reference stays the item's own, so an item that
        was charged is never charged twice."""
        from gateway.batch import batch_items_reopen

        ids = list(queryset.filter(state=ItemState.FAILED).values_list("pk", flat=True))
        reopened = batch_items_reopen(item_ids=ids, now=timezone.now())
        messages.success(request, f"{reopened} items queued again")
