import re

import pytest

from accounts.models import ApiKey, EntryKind, User
from accounts.selectors import api_key_authenticate
from accounts.services import api_key_create
from tests.accounts.conftest import CREDIT

pytestmark = pytest.mark.django_db

SIGNUP = {"username": "dana", "email": "dana@example.com", "password1": "a-long-password-9",
          "password2": "a-long-password-9"}


def test_the_sign_up_page_renders_its_form(client):
    page = client.get("/account/signup/")
    assert page.status_code == 200
    for name in ("username", "email", "password1", "password2"):
        assert f'name="{name}"'.encode() in page.content


def test_signing_up_logs_you_in_with_the_starting_credit(client):
    response = client.post("/account/signup/", SIGNUP)
    assert response.status_code == 302
    user = User.objects.get(username="dana")
    assert user.account.balance_wei == CREDIT
    assert user.account.entries.get().kind == EntryKind.DEPOSIT
    assert client.get("/account/").context["user"] == user


@pytest.mark.parametrize("change, message", [
    ({"password2": "something-else-1"}, "The two password fields didn’t match."),
    ({"username": "alice"}, "A user with that username already exists."),
    ({"email": "ALICE@example.com"}, "An account with this email already exists."),
    ({"email": "not-an-address"}, "Enter a valid email address."),
    ({"password1": "123", "password2": "123"}, "This password is too short."),
])
def test_sign_up_mistakes_are_shown_next_to_the_field(client, alice, change, message):
    response = client.post("/account/signup/", {**SIGNUP, **change})
    assert response.status_code == 400
    assert message in response.content.decode()
    assert not User.objects.filter(username="dana").exists()


def test_logging_in_with_a_wrong_password_says_so(client, alice):
    response = client.post("/account/login/", {"username": "alice", "password": "wrong"})
    assert response.status_code == 200
    assert "Please enter a correct username and password" in response.content.decode()


def test_logging_in_and_out(client, alice):
    response = client.post("/account/login/", {"username": "alice",
                                                "password": "a-long-password-1"})
    assert response.status_code == 302
    assert client.get("/account/").status_code == 200
    assert client.get("/account/logout/").status_code == 405  # logout is a POST
    assert client.post("/account/logout/").status_code == 302
    assert client.get("/account/").status_code == 302


def test_the_account_page_shows_balance_plan_and_activity(alice_client):
    page = alice_client.get("/account/").content.decode()
    assert "0.001 ETH" in page  # 10**15 wei
    assert "1,000,000,000,000,000 wei" in page
    assert "Free" in page and "10 API requests a minute" in page
    assert "Sign-up credit" in page


def test_pages_need_a_login(client):
    for url in ("/account/", "/account/keys/"):
        response = client.get(url)
        assert response.status_code == 302
        assert response["Location"].startswith("/account/login/")


def test_creating_a_key_shows_it_once_and_lists_only_its_prefix(alice_client, alice):
    response = alice_client.post("/account/keys/", {
        "name": "blog build", "scopes": ["inference", "models:read"], "expires_in_days": "30"})
    assert response.status_code == 200
    assert "no-store" in response["Cache-Control"]
    raw = re.search(r'<code id="new-key">(sk_[0-9a-f]{64})</code>', response.content.decode())[1]
    key = api_key_authenticate(raw)
    assert key.user == alice and sorted(key.scopes) == ["inference", "models:read"]
    assert key.expires_at is not None
    listing = alice_client.get("/account/keys/").content.decode()
    assert key.prefix in listing
    assert raw not in listing


def test_key_form_mistakes_are_shown(alice_client):
    response = alice_client.post("/account/keys/", {"name": "", "expires_in_days": "2"})
    page = response.content.decode()
    assert response.status_code == 400
    assert "Give the key a name" in page
    assert "Choose at least one thing this key may do." in page
    assert "Select a valid choice" in page
    assert ApiKey.objects.count() == 0


def test_with_htmx_the_key_form_swaps_only_its_panel(alice_client):
    response = alice_client.post("/account/keys/", {"name": "x", "scopes": ["inference"]},
                                 HTTP_HX_REQUEST="true")
    page = response.content.decode()
    assert response.status_code == 200
    assert page.lstrip().startswith('<div id="keys-panel"')
    assert "<html" not in page
    invalid = alice_client.post("/account/keys/", {"name": ""}, HTTP_HX_REQUEST="true")
    assert invalid.status_code == 200  # htmx swaps only 2xx answers
    assert "Give the key a name" in invalid.content.decode()


def test_revoking_a_key_with_htmx_returns_its_row(alice_client, alice):
    key, raw = api_key_create(user=alice, name="old")
    response = alice_client.post(f"/account/keys/{key.pk}/revoke/", HTTP_HX_REQUEST="true")
    page = response.content.decode()
    assert response.status_code == 200
    assert page.lstrip().startswith(f'<tr id="key-{key.pk}" class="revoked"')
    assert api_key_authenticate(raw) is None


def test_revoking_without_htmx_redirects_with_a_message(alice_client, alice):
    key, _ = api_key_create(user=alice, name="old")
    response = alice_client.post(f"/account/keys/{key.pk}/revoke/", follow=True)
    assert "Revoked “old”" in response.content.decode()


def test_charlie_cannot_see_or_revoke_alices_keys(charlie_client, alice):
    key, raw = api_key_create(user=alice, name="alice's")
    assert key.prefix not in charlie_client.get("/account/keys/").content.decode()
    assert charlie_client.post(f"/account/keys/{key.pk}/revoke/").status_code == 404
    assert api_key_authenticate(raw) is not None


def test_names_written_by_users_are_escaped(alice_client, alice):
    api_key_create(user=alice, name="<script>alert(1)</script>")
    page = alice_client.get("/account/keys/").content.decode()
    assert "<script>alert(1)</script>" not in page
    assert "&lt;script&gt;" in page


def test_active_keys_are_listed_before_revoked_ones(alice_client, alice):
    old, new, newest = (api_key_create(user=alice, name=n).key for n in ("a", "b", "c"))
    alice_client.post(f"/account/keys/{old.pk}/revoke/", HTTP_HX_REQUEST="true")
    page = alice_client.get("/account/keys/").content.decode()
    rows = [page.index(f'id="key-{key.pk}"') for key in (newest, new, old)]
    assert rows == sorted(rows)


def test_sign_ups_from_one_address_are_limited_per_hour(client, settings):
    """The attack: make account after account from one address for their fresh limits."""
    import uuid

    from limits import RateLimitItemPerHour

    from accounts.ratelimit import window_clear

    settings.ACCOUNTS_SIGNUPS_PER_IP_PER_HOUR = 2
    address, tag = "198.51.100.7", uuid.uuid4().hex[:8]
    for where in (address, "203.0.113.9"):  # counts of earlier runs, kept in Redis an hour
        window_clear(RateLimitItemPerHour(2), "signup", where)
    statuses = []
    for n in range(3):
        client.logout()
        response = client.post("/account/signup/", {
            **SIGNUP, "username": f"mallory{n}{tag}", "email": f"m{n}{tag}@example.com"},
            REMOTE_ADDR=address)
        statuses.append(response.status_code)
    assert statuses == [302, 302, 429]
    assert "Too many accounts" in response.content.decode()
    assert int(response["Retry-After"]) > 0
    assert not User.objects.filter(username=f"mallory2{tag}").exists()
    client.logout()
    other = client.post("/account/signup/", {**SIGNUP, "username": f"nina{tag}",
                                              "email": f"n{tag}@example.com"},
                        REMOTE_ADDR="203.0.113.9")
    assert other.status_code == 302  # another address is not held back


def test_the_key_page_says_when_the_account_has_all_the_keys_it_may_hold(
        alice_client, alice, settings):
    settings.ACCOUNTS_MAX_API_KEYS = ApiKey.objects.filter(user=alice).count()
    response = alice_client.post("/account/keys/", {"name": "one more", "scopes": ["inference"]})
    assert response.status_code == 400
    assert "revoke one first" in response.content.decode()
