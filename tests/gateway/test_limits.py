"""Request limits on /v1: the tier's rate per minute (429 with Retry-After, X-RateLimit-*
headers on every answer) and bodies over 10 MB (413), each in the one error shape."""

import json

import httpx
import pytest
from asgiref.sync import sync_to_async
from django.test import AsyncClient

from accounts.errors import TooManyKeys
from accounts.services import account_set_tier, api_key_create, api_key_revoke

pytestmark = pytest.mark.django_db(transaction=True)
TEN_MB = 10 * 1024 * 1024


async def test_the_eleventh_request_in_a_minute_on_the_free_tier_is_a_429(alice):
    client = AsyncClient()
    for number in range(10):
        response = await client.get("/v1/usage", headers=alice.headers)
        assert response.status_code == 200
        assert response["X-RateLimit-Limit"] == "10"
        assert response["X-RateLimit-Remaining"] == str(9 - number)
    refused = await client.get("/v1/usage", headers=alice.headers)
    assert refused.status_code == 429
    body = refused.json()["error"]
    assert body["code"] == "RATE_LIMITED" and body["limit"] == 10
    assert 1 <= int(refused["Retry-After"]) <= 60
    assert refused["X-RateLimit-Remaining"] == "0"


async def test_the_limit_follows_the_tier_and_is_counted_per_key(alice, bob):
    account = await sync_to_async(lambda: alice.account)()
    await sync_to_async(account_set_tier)(account, tier="basic")
    client = AsyncClient()
    for _ in range(12):
        assert (await client.get("/v1/usage", headers=alice.headers)).status_code == 200
    response = await client.get("/v1/usage", headers=alice.headers)
    assert response["X-RateLimit-Limit"] == "100"
    # Bob's count is his own.
    assert (await client.get("/v1/usage", headers=bob.headers))["X-RateLimit-Remaining"] \
        == "9"


async def test_more_keys_do_not_buy_more_requests_the_limit_is_the_accounts(alice):
    """The attack: make a second key (and a third...) to get the tier's rate again."""
    second = await sync_to_async(api_key_create)(user=alice.user, name="second key")
    client = AsyncClient()
    statuses = []
    for number in range(12):
        headers = alice.headers if number % 2 else {"X-API-Key": second.raw}
        statuses.append((await client.get("/v1/usage", headers=headers)).status_code)
    assert statuses == [200] * 10 + [429] * 2


def test_an_account_cannot_hold_more_keys_than_its_cap(alice, settings):
    settings.ACCOUNTS_MAX_API_KEYS = 3
    made = [api_key_create(user=alice.user, name=f"k{n}") for n in range(2)]  # alice had 1
    with pytest.raises(TooManyKeys):
        api_key_create(user=alice.user, name="one too many")
    api_key_revoke(made[0].key)
    assert api_key_create(user=alice.user, name="after a revoke").key.pk


async def test_requests_without_a_key_are_limited_by_address(alice):
    client = AsyncClient()
    statuses = [(await client.get("/v1/usage")).status_code for _ in range(11)]
    assert statuses == [401] * 10 + [429]
    # A request with a key is counted against the key, not the address.
    assert (await client.get("/v1/usage", headers=alice.headers)).status_code == 200


async def test_every_answer_carries_the_rate_limit_headers(alice):
    client = AsyncClient()
    answers = [await client.get("/v1/usage", headers=alice.headers),
               await client.get("/v1/usage"),
               await client.get("/v1/no-such-endpoint", headers=alice.headers),
               await client.post("/v1/inference", headers=alice.headers, data="{",
                                 content_type="application/json")]
    assert [a.status_code for a in answers] == [200, 401, 404, 400]
    for answer in answers:
        assert {"X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset"} <= set(
            answer.headers)
    assert answers[2].json()["error"]["code"] == "NOT_FOUND"


async def test_a_body_over_10_mb_is_a_413_in_the_one_shape(alice):
    body = json.dumps({"model": "m", "prompt": "x" * TEN_MB})
    response = await AsyncClient().post("/v1/inference", headers=alice.headers, data=body,
                                        content_type="application/json")
    assert response.status_code == 413
    error = response.json()["error"]
    assert error["code"] == "PAYLOAD_TOO_LARGE" and error["max_bytes"] == TEN_MB


async def test_a_body_under_10_mb_but_over_djangos_own_limit_gets_through(alice):
    # 5 MB: Django alone would refuse it (a 400); the gateway reads it and answers for
    # what it is, a prompt too long.
    body = json.dumps({"model": "smollm2-135m-instruct", "prompt": "x" * (5 * 1024 * 1024)})
    response = await AsyncClient().post("/v1/inference", headers=alice.headers, data=body,
                                        content_type="application/json")
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "PROMPT_TOO_LONG"


def test_a_chunked_body_without_a_length_is_cut_off_at_the_limit(alice, servers):
    url = servers.start({"GATEWAY_MAX_BODY_BYTES": "1000"})

    def chunks():
        for _ in range(20):
            yield b"x" * 100

    response = httpx.post(f"{url}/v1/inference", headers=alice.headers, content=chunks())
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "PAYLOAD_TOO_LARGE"
    assert "X-RateLimit-Remaining" in response.headers


def test_the_limit_holds_across_two_server_processes(alice, servers):
    first, second = servers.start(), servers.start()
    answers = [httpx.get(f"{url}/v1/usage", headers=alice.headers)
               for url in [first, second] * 8]
    statuses = [a.status_code for a in answers]
    assert statuses.count(200) == 10 and statuses.count(429) == 6
    assert statuses[:10] == [200] * 10  # in order: the count is one, shared in Redis
    # Both processes served some and refused some.
    assert {200, 429} <= set(statuses[0::2]) and {200, 429} <= set(statuses[1::2])
    assert all(a.json()["error"]["code"] == "RATE_LIMITED" for a in answers[10:])
