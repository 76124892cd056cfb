"""API keys: create, authenticate, revoke, expire."""

import hashlib
import re
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from accounts.models import ApiKey, Scope
from accounts.selectors import api_key_authenticate
from accounts.services import api_key_create, api_key_mark_used, api_key_revoke

pytestmark = pytest.mark.django_db


def test_a_new_key_is_sk_and_64_hex_digits_and_only_its_hash_is_stored(alice):
    key, raw = api_key_create(user=alice, name="blog build")
    assert re.fullmatch(r"sk_[0-9a-f]{64}", raw)
    stored = ApiKey.objects.get(pk=key.pk)
    assert stored.key_hash == hashlib.sha256(raw.encode()).hexdigest()
    assert stored.prefix == raw[:11]
    assert raw not in str(ApiKey.objects.filter(pk=key.pk).values().get())
    assert sorted(stored.scopes) == sorted(Scope.values)


def test_two_keys_are_never_the_same(alice):
    assert api_key_create(user=alice, name="a").raw != api_key_create(user=alice, name="b").raw


def test_a_key_authenticates_as_its_owner_with_its_scopes(alice):
    key, raw = api_key_create(user=alice, name="ci", scopes=["models:read"])
    found = api_key_authenticate(raw)
    assert found.pk == key.pk
    assert found.user == alice
    assert found.has_scope("models:read") and not found.has_scope("inference")


@pytest.mark.parametrize("raw", [None, "", "sk_", "sk_" + "0" * 64, "sk_" + "G" * 64,
                                 "pk_" + "0" * 64, "sk_" + "0" * 65])
def test_malformed_or_unknown_keys_authenticate_as_nobody(alice, raw):
    api_key_create(user=alice, name="real")
    assert api_key_authenticate(raw) is None


def test_a_key_that_differs_only_after_the_prefix_is_refused(alice):
    _, raw = api_key_create(user=alice, name="real")
    forged = raw[:-1] + ("0" if raw[-1] != "0" else "1")
    assert api_key_authenticate(forged) is None


def test_a_revoked_key_is_refused_and_revoking_again_keeps_the_first_time(alice):
    key, raw = api_key_create(user=alice, name="old")
    api_key_revoke(key)
    first = ApiKey.objects.get(pk=key.pk).revoked_at
    api_key_revoke(key)
    assert ApiKey.objects.get(pk=key.pk).revoked_at == first
    assert api_key_authenticate(raw) is None


def test_an_expired_key_is_refused(alice):
    key, raw = api_key_create(user=alice, name="short",
                              expires_at=timezone.now() + timedelta(days=1))
    assert api_key_authenticate(raw) is not None
    ApiKey.objects.filter(pk=key.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    assert api_key_authenticate(raw) is None


def test_the_key_of_a_deactivated_user_is_refused(alice):
    _, raw = api_key_create(user=alice, name="k")
    alice.is_active = False
    alice.save()
    assert api_key_authenticate(raw) is None


@pytest.mark.parametrize("kwargs", [{"scopes": ["root"]}, {"scopes": []},
                                    {"expires_at": timezone.now() - timedelta(days=1)}])
def test_unknown_scopes_no_scopes_or_a_past_expiry_are_refused(alice, kwargs):
    with pytest.raises(ValueError):
        api_key_create(user=alice, name="bad", **kwargs)


def test_last_used_is_written_at_most_once_a_minute(alice):
    key, raw = api_key_create(user=alice, name="busy")
    api_key_authenticate(raw)
    first = ApiKey.objects.get(pk=key.pk).last_used_at
    assert first is not None
    with CaptureQueriesContext(connection) as queries:
        for _ in range(5):
            api_key_authenticate(raw)
    assert not any(q["sql"].lstrip().upper().startswith("UPDATE") for q in queries)
    assert ApiKey.objects.get(pk=key.pk).last_used_at == first
    later = first + timedelta(seconds=61)
    assert api_key_mark_used(ApiKey.objects.get(pk=key.pk), now=later)
    assert ApiKey.objects.get(pk=key.pk).last_used_at == later


def test_authenticating_costs_one_query_when_last_used_is_fresh(alice):
    _, raw = api_key_create(user=alice, name="k")
    api_key_authenticate(raw)
    with CaptureQueriesContext(connection) as queries:
        key = api_key_authenticate(raw)
        assert key.user.account.tier == "free"
    assert len(queries) == 1
