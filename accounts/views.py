from django.conf import settings
from django.contrib import messages
from django.contrib.auth import login
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.http import Http404
from django.shortcuts import redirect, render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_POST
from limits import RateLimitItemPerHour

from accounts import money, selectors, services
from accounts.errors import TooManyKeys
from accounts.forms import ApiKeyForm, SignUpForm
from accounts.models import ApiKey
from accounts.ratelimit import RateLimit, window_hit
from accounts.tiers import price_for, tier_policy
from observability.net import client_network

SIGNUP_RATE_LIMITED = "SIGNUP_RATE_LIMITED"


def _signup_allowed(request) -> RateLimit:
    """Sign-ups from one address are limited (ACCOUNTS_SIGNUPS_PER_IP_PER_HOUR): each new
    account comes with its own limits, keys and starting credit. An IPv6 client counts by
    its /64, which one subscriber gets whole."""
    item = RateLimitItemPerHour(settings.ACCOUNTS_SIGNUPS_PER_IP_PER_HOUR)
    return window_hit(item, "signup", client_network(request.META.get("REMOTE_ADDR")))


@never_cache
def signup(request):
    if request.user.is_authenticated:
        return redirect("home")
    form = SignUpForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        allowed = _signup_allowed(request)
        if not allowed.allowed:
            minutes = max(1, -(-allowed.reset_s // 60))
            form.add_error(None, ValidationError(
                "Too many accounts were made from your network in the last hour. Try again in "
                "%(minutes)d minutes.", code=SIGNUP_RATE_LIMITED, params={"minutes": minutes}))
            response = render(request, "accounts/signup.html",
                              {"form": form, "credit_wei": settings.ACCOUNTS_SIGNUP_CREDIT_WEI,
                               "error_code": SIGNUP_RATE_LIMITED}, status=429)
            response["Retry-After"] = str(allowed.reset_s)
            return response
        user = services.user_create(username=form.cleaned_data["username"],
                                    email=form.cleaned_data["email"],
                                    password=form.cleaned_data["password1"])
        login(request, user, backend="django.contrib.auth.backends.ModelBackend")
        credit = services.account_get_or_create(user).balance_wei
        messages.success(request, f"Welcome, {user.username}. " + (
            f"Your account starts with {money.coin_text(credit)} to try things out." if credit
            else "Add funds to your account to start writing."))
        return redirect("home")
    return render(request, "accounts/signup.html",
                  {"form": form, "credit_wei": settings.ACCOUNTS_SIGNUP_CREDIT_WEI},
                  status=400 if form.errors else 200)


@login_required
def overview(request):
    account = services.account_get_or_create(request.user)
    policy = tier_policy(account.tier)
    return render(request, "accounts/overview.html", {
        "account": account,
        "policy": policy,
        "example": price_for(account.tier, 10**9, 1000),
        "entries": selectors.ledger_for_account(account=account, limit=50),
        "key_count": selectors.api_keys_for_user(user=request.user)
        .filter(revoked_at__isnull=True).count(),
    })


def _keys_context(request, form, new_key=None):
    return {"form": form, "new_key": new_key,
            "keys": selectors.api_keys_for_user(user=request.user)}


@never_cache
@login_required
def api_keys(request):
    if request.method != "POST":
        return render(request, "accounts/keys.html", _keys_context(request, ApiKeyForm()))
    form = ApiKeyForm(request.POST)
    new_key = None
    if form.is_valid():
        try:
            new_key = services.api_key_create(user=request.user, name=form.cleaned_data["name"],
                                              scopes=form.cleaned_data["scopes"],
                                              expires_at=form.expires_at())
        except TooManyKeys as exc:
            form.add_error(None, exc.message)
        else:
            form = ApiKeyForm()
    htmx = bool(request.headers.get("HX-Request"))
    # htmx swaps only 2xx answers, so a form with errors goes back to it as a 200.
    status = 400 if form.errors and not htmx else 200
    # The raw key is in this response and nowhere else; never_cache keeps it out of caches.
    return render(request, "accounts/keys.html#panel" if htmx else "accounts/keys.html",
                  _keys_context(request, form, new_key), status=status)


@require_POST
@login_required
def api_key_revoke(request, key_id: int):
    try:
        key = selectors.api_key_get_for_user(user=request.user, key_id=key_id)
    except ApiKey.DoesNotExist:
        raise Http404("No such key") from None
    key = services.api_key_revoke(key)
    if request.headers.get("HX-Request"):
        return render(request, "accounts/keys.html#row", {"key": key})
    messages.success(request, f"Revoked “{key.name}”. Requests with it are refused from now on.")
    return redirect("api_keys")
