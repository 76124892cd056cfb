from django import forms
from django.contrib import admin, messages

from accounts.money import admin_column
from marketplace.models import (
    DeadLetter,
    DeliveryState,
    JobProcessing,
    UsageStats,
    WebhookAttempt,
    WebhookDelivery,
    WebhookEndpoint,
)
from outbound.errors import UnsafeURL
from outbound.policy import url_check


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
    actions = ["replay"]

    @admin.display(description="error")
    def short_error(self, obj):
        return obj.error[:100]

    @admin.action(description="Replay the selected tasks")
    def replay(self, request, queryset):
        from marketplace.processor import dead_letter_replay

        sent = sum(dead_letter_replay(dead_letter_id=pk)
                   for pk in queryset.values_list("pk", flat=True))
        skipped = queryset.count() - sent
        messages.success(request, f"{sent} tasks sent again"
                         + (f"; {skipped} were already replayed" if skipped else ""))


@admin.register(JobProcessing)
class JobProcessingAdmin(admin.ModelAdmin):
    list_display = ("job", "state", "attempts", "counted", "next_attempt_at", "processed_at")
    list_filter = ("state", "counted")
    search_fields = ("job__id",)
    readonly_fields = ("job", "state", "attempts", "counted", "next_attempt_at", "last_error",
                       "created", "processed_at")


@admin.register(UsageStats)
class UsageStatsAdmin(admin.ModelAdmin):
    list_display = ("user", "jobs", "tokens", "cost", "failures", "updated")
    search_fields = ("user__username",)
    readonly_fields = ("user", "jobs", "tokens", "cost", "failures", "updated")
    cost = admin_column("cost_wei", "cost")


class WebhookEndpointForm(forms.ModelForm):
    url = forms.URLField(max_length=500, assume_scheme="https")

    def clean_url(self):
        url = self.cleaned_data["url"]
        try:
            url_check(url)  # checked again at every delivery
        except UnsafeURL as exc:
            raise forms.ValidationError(exc.message, code=exc.code) from None
        return url


@admin.register(WebhookEndpoint)
class WebhookEndpointAdmin(admin.ModelAdmin):
    form = WebhookEndpointForm
    list_display = ("owner", "url", "active", "created")
    list_filter = ("active",)
    search_fields = ("owner__username", "url")
    raw_id_fields = ("owner",)
