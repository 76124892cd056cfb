from django.contrib.auth import views as auth_views
from django.urls import path

from accounts import views, wallet_views

urlpatterns = [
    path("", views.overview, name="account"),
    path("signup/", views.signup, name="signup"),
    path("login/", auth_views.LoginView.as_view(template_name="accounts/login.html",
                                                 redirect_authenticated_user=True),
         name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("keys/", views.api_keys, name="api_keys"),
    path("keys/<int:key_id>/revoke/", views.api_key_revoke, name="api_key_revoke"),
    path("wallet/nonce/", wallet_views.siwe_nonce, name="siwe_nonce"),
    path("wallet/link/", wallet_views.wallet_link, name="wallet_link"),
    path("wallet/login/", wallet_views.wallet_login, name="wallet_login"),
]
