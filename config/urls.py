from django.contrib import admin
from django.urls import include, path

from gateway.api import api as gateway_api
from observability import health
from writer.api import api as writer_api

urlpatterns = [
    path("", include("writer.urls")),
    path("account/", include("accounts.urls")),
    path("usage/", include("dashboards.urls")),
    path("api/", writer_api.urls),
    path("v1/", gateway_api.urls),
    path("health", health.health, name="health"),
    path("health/live", health.live, name="health_live"),
    path("health/ready", health.ready, name="health_ready"),
    path("metrics", health.metrics, name="metrics"),
    path("admin/", admin.site.urls),
]
# An unexpected failure's page names the request's id to quote, and nothing of the failure.
handler500 = "observability.errors.server_error"
