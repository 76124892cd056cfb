from django.contrib import admin

from content.models import GenerationProfile


@admin.register(GenerationProfile)
class GenerationProfileAdmin(admin.ModelAdmin):
    list_display = ("content_type", "length", "model", "max_tokens", "temperature")
    list_editable = ("model", "max_tokens", "temperature")
    list_filter = ("content_type",)
