from django.urls import path

from dashboards import views

urlpatterns = [
    path("", views.usage, name="usage"),
    path("all/", views.staff_usage, name="staff_usage"),
    path("host/", views.host_earnings, name="host_earnings"),
]
