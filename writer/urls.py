from django.urls import path

from writer import views

urlpatterns = [
    path("", views.home, name="home"),
    path("generate", views.generate, name="generate"),
    path("estimate", views.estimate, name="estimate"),
    path("history/", views.history, name="history"),
    path("g/<uuid:pk>/", views.detail, name="generation"),
    path("g/<uuid:pk>/save", views.save_edit, name="generation-save"),
    path("g/<uuid:pk>/export.md", views.export_markdown, name="generation-export"),
    path("g/<uuid:pk>/delete", views.delete, name="generation-delete"),
]
