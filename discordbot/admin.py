from django import forms
from django.contrib import admin

from accounts.money import admin_column
from discordbot.models import DiscordDailySpend, DiscordJob, DiscordServer


class _IdListField(forms.CharField):
    """A list of Discord ids typed as mentions or numbers, separated by commas or spaces."""

    def prepare_value(self, value):
        if isinstance(value, list):
            return ", ".join(str(v) for v in value)
        return value

    def to_python(self, value):
        from discordbot.errors import BotError
        from discordbot.services import parse_ids

        try:
            return parse_ids(value or "")
        except BotError as exc:
            raise forms.ValidationError(exc.message) from None


class DiscordServerForm(forms.ModelForm):
    allowed_channel_ids = _IdListField(required=False, label="Allowed channel ids",
                                       help_text="Empty: every channel")
    image_role_ids = _IdListField(required=False, label="Image role ids")
    image_user_ids = _IdListField(required=False, label="Image user ids")

    class Meta:
        model = DiscordServer
        fields = ("guild_id", "name", "billing_user", "daily_cap_wei", "allowed_channel_ids",
                  "ask_model", "code_model", "summarize_model", "chat_model", "image_model",
                  "image_role_ids", "image_user_ids")


@admin.register(DiscordServer)
class DiscordServerAdmin(admin.ModelAdmin):
    form = DiscordServerForm
    list_display = ("__str__", "guild_id", "billing_user", "daily_cap", "ask_model",
                    "updated")
    search_fields = ("name", "guild_id", "billing_user__username")
    autocomplete_fields = ("billing_user",)
    readonly_fields = ("created", "updated")
    daily_cap = admin_column("daily_cap_wei", "daily cap")
    fieldsets = (
        (None, {"fields": ("guild_id", "name", "billing_user", "daily_cap_wei")}),
        ("Where and with what", {"fields": ("allowed_channel_ids", "ask_model", "code_model",
                                            "summarize_model", "chat_model", "image_model")}),
        ("Who may make images", {"fields": ("image_role_ids", "image_user_ids")}),
        (None, {"fields": ("created", "updated")}),
    )


@admin.register(DiscordDailySpend)
class DiscordDailySpendAdmin(admin.ModelAdmin):
    list_display = ("day", "server", "committed")
    committed = admin_column("committed_wei", "committed")
    list_filter = ("server",)
    date_hierarchy = "day"

    def has_add_permission(self, request):
        return False  # changed only with the ledger, by the bot's services

    def has_change_permission(self, request, obj=None):
        return False


@admin.register(DiscordJob)
class DiscordJobAdmin(admin.ModelAdmin):
    list_display = ("created", "server", "user_name", "command", "status", "model", "tokens",
                    "cost")
    list_filter = ("command", "status", "server")
    search_fields = ("prompt", "text", "user_name", "user_id")
    date_hierarchy = "created"
    readonly_fields = [f.name for f in DiscordJob._meta.fields]
    cost = admin_column("cost_wei", "cost")

    def has_add_permission(self, request):
        return False

    def has_delete_permission(self, request, obj=None):
        # A running job's row carries its daily-cap commitment; it goes once the job ends.
        return obj is None or obj.finished is not None

    def delete_queryset(self, request, queryset):
        queryset.filter(finished__isnull=False).delete()
