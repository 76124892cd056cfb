from django.contrib import admin

from marketplace.models import GatewayRequest


@admin.register(GatewayRequest)
class GatewayRequestAdmin(admin.ModelAdmin):
    """Requests to /v1, read-only: they are written by the gateway as it bills them."""

    list_display = ("created_at", "user", "endpoint", "model", "status", "tokens",
                    "cost_wei", "cached", "error_code", "duration_ms")
    list_filter = ("status", "endpoint", "model", "cached", "stream", "created_at")
    search_fields = ("id", "user__username", "reference", "job_id", "error_code")
    date_hierarchy = "created_at"
    list_select_related = ("user",)
    readonly_fields = [f.name for f in GatewayRequest._meta.fields]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False
