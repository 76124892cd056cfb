from django.contrib import admin
from django.urls import include, path

from config import health
from writer.api import api as writer_api

urlpatterns = [
    path("", include("writer.urls")),
    path("account/", include("accounts.urls")),
    path("api/", writer_api.urls),
    path("health", health.health, name="health"),
    path("metrics", health.metrics, name="metrics"),
    path("admin/", admin.site.urls),
]
