from django.urls import path

from writer import funds_views, views

urlpatterns = [
    path("", views.home, name="home"),
    path("generate", views.generate, name="generate"),
    path("estimate", views.estimate, name="estimate"),
    path("history/", views.history, name="history"),
    path("g/<uuid:pk>/", views.detail, name="generation"),
    path("g/<uuid:pk>/save", views.save_edit, name="generation-save"),
    path("g/<uuid:pk>/export.md", views.export_markdown, name="generation-export"),
    path("g/<uuid:pk>/followup", views.followup, name="generation-followup"),
    path("g/<uuid:pk>/delete", views.delete, name="generation-delete"),
    path("account/funds/", funds_views.add_funds, name="add_funds"),
    path("account/funds/progress", funds_views.deposit_progress, name="deposit_progress"),
    path("account/funds/withdraw", funds_views.withdraw, name="withdraw"),
    path("account/funds/faucet", funds_views.faucet, name="faucet"),
]
