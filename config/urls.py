from django.contrib import admin
from django.urls import path

from config import health, views

urlpatterns = [
    path("", views.home, name="home"),
    path("health", health.health, name="health"),
    path("metrics", health.metrics, name="metrics"),
    path("admin/", admin.site.urls),
]
