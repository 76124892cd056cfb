"""Sign-up: no free money unless the settings give it, and a bound on accounts per address
that a stranger cannot talk their way around."""

import uuid

import pytest
from limits import RateLimitItemPerHour

from accounts.models import User
from accounts.ratelimit import window_clear
from accounts.views import SIGNUP_RATE_LIMITED
from observability.net import client_network

pytestmark = pytest.mark.django_db


def form(tag: str) -> dict:
    return {"username": f"m{tag}", "email": f"m{tag}@example.com",
            "password1": "a-long-password-9", "password2": "a-long-password-9"}


def sign_up(client, name: str, address: str):
    client.logout()
    return client.post("/account/signup/", form(name), REMOTE_ADDR=address)


@pytest.fixture
def one_sign_up_an_hour(settings):
    settings.ACCOUNTS_SIGNUPS_PER_IP_PER_HOUR = 1
    addresses = ("198.51.100.21", "198.51.100.22", "2001:db8::1", "2001:db8::2",
                 "2001:db8:0:1::1")
    for address in addresses:  # counts of earlier runs, kept in Redis an hour
        window_clear(RateLimitItemPerHour(1), "signup", client_network(address))
    return addresses


def test_with_no_credit_a_new_account_starts_empty_and_is_told_to_add_funds(client, settings):
    settings.ACCOUNTS_SIGNUP_CREDIT_WEI = 0
    page = client.get("/account/signup/").content.decode()
    assert "starts with" not in page and "fund your account" in page
    response = client.post("/account/signup/", form("zero"), follow=True)
    user = User.objects.get(username="mzero")
    assert user.account.balance_wei == 0
    assert not user.account.entries.exists()  # no deposit entry of nothing
    assert "Add funds to your account" in response.content.decode()


def test_a_sign_up_credit_is_shown_as_an_amount(client, settings):
    settings.ACCOUNTS_SIGNUP_CREDIT_WEI = 2 * 10**15
    page = client.get("/account/signup/").content.decode()
    assert 'title="2,000,000,000,000,000 wei">0.002 ETH</span>' in page
    response = client.post("/account/signup/", form("credit"), follow=True)
    assert "starts with 0.002 ETH" in response.content.decode()


def test_a_sign_up_over_the_limit_is_a_429_with_a_code(client, one_sign_up_an_hour):
    address = one_sign_up_an_hour[0]
    tag = uuid.uuid4().hex[:8]
    assert sign_up(client, f"a{tag}", address).status_code == 302
    refused = sign_up(client, f"b{tag}", address)
    assert refused.status_code == 429
    page = refused.content.decode()
    assert f'data-code="{SIGNUP_RATE_LIMITED}"' in page
    assert "Too many accounts were made from your network" in page
    assert refused.context["form"].non_field_errors().as_data()[0].code == SIGNUP_RATE_LIMITED
    assert int(refused["Retry-After"]) > 0
    assert not User.objects.filter(username=f"mb{tag}").exists()


def test_a_forwarded_for_header_buys_no_fresh_allowance(client, one_sign_up_an_hour):
    """The attack: claim to be somebody else's address in a header the client writes."""
    address = one_sign_up_an_hour[1]
    tag = uuid.uuid4().hex[:8]
    client.post("/account/signup/", form(f"c{tag}"), REMOTE_ADDR=address)
    client.logout()
    refused = client.post("/account/signup/", form(f"d{tag}"), REMOTE_ADDR=address,
                          HTTP_X_FORWARDED_FOR="203.0.113.50", HTTP_X_REAL_IP="203.0.113.51")
    assert refused.status_code == 429


def test_a_refused_sign_up_still_counts_no_account_and_no_money(client, one_sign_up_an_hour):
    """Hammering the form past the limit makes nothing: no user, no account, no ledger."""
    address = one_sign_up_an_hour[0]
    tag = uuid.uuid4().hex[:8]
    before = User.objects.count()
    statuses = [sign_up(client, f"e{n}{tag}", address).status_code for n in range(5)]
    assert statuses == [302, 429, 429, 429, 429]
    assert User.objects.count() == before + 1


def test_an_ipv6_client_cannot_spread_over_its_own_addresses(client, one_sign_up_an_hour):
    """The attack: one subscriber's /64 holds 2**64 addresses; it is one network."""
    first, second = one_sign_up_an_hour[2:4]
    tag = uuid.uuid4().hex[:8]
    assert sign_up(client, f"f{tag}", first).status_code == 302
    assert sign_up(client, f"g{tag}", second).status_code == 429
    # The next /64 is somebody else.
    assert sign_up(client, f"h{tag}", "2001:db8:0:1::1").status_code == 302
