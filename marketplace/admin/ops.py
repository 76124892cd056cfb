from django.contrib import admin, messages

from marketplace.models import DeadLetter, DeliveryState, WebhookAttempt, WebhookDelivery


class WebhookAttemptInline(admin.TabularInline):
    model = WebhookAttempt
    extra = 0
    can_delete = False
    fields = ("number", "status", "error", "ms", "created")
    readonly_fields = fields


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(admin.ModelAdmin):
    list_display = ("event", "url", "state", "attempts", "last_status", "next_attempt_at",
                    "created")
    list_filter = ("state", "event")
    search_fields = ("url", "idempotency_key")
    exclude = ("secret",)
    readonly_fields = ("id", "owner", "url", "event", "payload", "idempotency_key", "state",
                       "attempts", "next_attempt_at", "last_status", "last_error",
                       "delivered_at", "created")
    inlines = [WebhookAttemptInline]
    actions = ["retry_now"]

    @admin.action(description="Retry the selected deliveries now")
    def retry_now(self, request, queryset):
        from django.utils import timezone

        from marketplace.tasks import deliver_webhook

        ids = list(queryset.exclude(state=DeliveryState.DELIVERED).values_list("pk", flat=True))
        queryset.filter(pk__in=ids).update(state=DeliveryState.PENDING,
                                           next_attempt_at=timezone.now())
        for pk in ids:
            deliver_webhook.delay(str(pk))
        messages.success(request, f"{len(ids)} deliveries queued")


@admin.register(DeadLetter)
class DeadLetterAdmin(admin.ModelAdmin):
    list_display = ("task", "created", "resolved", "short_error")
    list_filter = ("resolved", "task")
    search_fields = ("task", "error")
    readonly_fields = ("task", "args", "kwargs", "error", "created")

    @admin.display(description="error")
    def short_error(self, obj):
        return obj.error[:100]
