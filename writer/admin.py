from django.contrib import admin

from accounts.money import admin_column
from writer import services
from writer.models import Generation


@admin.register(Generation)
class GenerationAdmin(admin.ModelAdmin):
    list_display = ("created", "user", "content_type", "status", "model", "tokens", "cost",
                    "cached")
    list_filter = ("content_type", "status", "cached", "model")
    search_fields = ("prompt", "text", "instruction", "user__username")
    date_hierarchy = "created"
    cost = admin_column("cost_wei", "cost")
    # A follow-up's links are what its prompt was made from: shown, never re-pointed.
    readonly_fields = ("id", "user", "root", "parent", "instruction", "full_prompt",
                       "job_id", "host", "tokens", "cost", "cache_key", "created",
                       "finished", "ttft_ms")

    def delete_model(self, request, obj):
        services.generation_delete(generation=obj)  # stops it first if it is running

    def delete_queryset(self, request, queryset):
        for generation in queryset:
            services.generation_delete(generation=generation)
