"""The ASGI handler's shorter way for POST /v1/inference and /v1/chat/completions
(config.handler): it must answer exactly as Django's full request cycle does — the same
statuses, codes, headers and money — for every kind of request, and serve them itself.

Each case goes once through the handler (httpx's ASGI transport on config.handler.Handler,
the application uvicorn serves) and once through Django's test client (Django's own
handler and middleware chain), against the same database, Redis and upstream."""

from __future__ import annotations

import json

import httpx
import pytest
from asgiref.sync import sync_to_async
from django.test import AsyncClient

from accounts.selectors import ledger_invariant_violations
from accounts.services import account_set_tier, api_key_create, balance_adjust
from config.handler import API_LANE, Handler
from gateway.conn import gateway_connections_close
from gateway.upstream import upstream_close
from tests.conftest import MODEL
from tests.gateway.conftest import nonce

pytestmark = pytest.mark.django_db(transaction=True)

# Headers both ways must set; their values may differ (ids, counts).
SHARED_HEADERS = ("content-type", "x-request-id", "x-ratelimit-limit",
                  "x-ratelimit-remaining", "x-ratelimit-reset", "x-content-type-options",
                  "x-frame-options", "referrer-policy", "cross-origin-opener-policy")


@pytest.fixture
async def lane():
    handler = Handler()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=handler),
                                 base_url="http://testserver") as client:
        client.handler = handler
        yield client
    await gateway_connections_close()
    await upstream_close()


async def through_django(path: str, content: bytes, headers: dict):
    response = await AsyncClient().post(path, data=content, headers=headers,
                                        content_type="application/json")
    return response.status_code, dict(response.headers.items()), response.content


async def through_lane(lane, path: str, content: bytes, headers: dict):
    response = await lane.post(path, content=content,
                               headers={"Content-Type": "application/json", **headers})
    return response.status_code, dict(response.headers.items()), response.content


def shape(status: int, headers: dict, content: bytes):
    """What must be the same both ways: the status, the header names, the body's keys
    and, for an error, its code (ids, counts and timings differ)."""
    lowered = {name.lower() for name in headers}
    present = tuple(name for name in SHARED_HEADERS if name in lowered)
    body = json.loads(content)
    error = body.get("error")
    code = error.get("code") if isinstance(error, dict) else None
    return status, present, sorted(body), code


def inference(**fields) -> bytes:
    return json.dumps({"model": MODEL, "prompt": f"Say hi. ({nonce()})", "max_tokens": 4,
                       "temperature": 0.0, **fields}).encode()


def chat(**fields) -> bytes:
    return json.dumps({"model": MODEL, "max_tokens": 4, "messages": [
        {"role": "user", "content": f"Say hi. ({nonce()})"}], **fields}).encode()


CASES = {
    "a completion": ("/v1/inference", lambda: inference(), 200, None),
    "a chat completion": ("/v1/chat/completions", lambda: chat(), 200, None),
    "not JSON": ("/v1/inference", lambda: b"{model:", 400, "INVALID_REQUEST"),
    "no body": ("/v1/inference", lambda: b"", 400, "INVALID_REQUEST"),
    "no prompt": ("/v1/inference", lambda: json.dumps({"model": MODEL}).encode(), 400,
                  "INVALID_REQUEST"),
    "an unknown model": ("/v1/inference", lambda: inference(model="gpt-9"), 400,
                         "UNKNOWN_MODEL"),
    "a temperature of 3": ("/v1/inference", lambda: inference(temperature=3), 400,
                           "INVALID_TEMPERATURE"),
    "no max tokens": ("/v1/inference", lambda: inference(max_tokens=0), 400,
                      "INVALID_MAX_TOKENS"),
    # (In upstream mode, which this runs in, any message may come last: the upstream's
    # chat template decides.)
    "a chat without messages": ("/v1/chat/completions", lambda: chat(messages=[]), 400,
                                "INVALID_REQUEST"),
    "a body over the limit": ("/v1/inference", lambda: inference(prompt="x" * 3000), 413,
                              "PAYLOAD_TOO_LARGE"),
}


@pytest.mark.parametrize("case", list(CASES))
async def test_each_kind_of_request_is_answered_as_django_answers_it(
        case, lane, upstream, alice, settings):
    settings.GATEWAY_MAX_BODY_BYTES = 2000
    await sync_to_async(account_set_tier)(await sync_to_async(lambda: alice.account)(),
                                          tier="premium")
    path, body, status, code = CASES[case]
    by_django = await through_django(path, body(), alice.headers)
    by_lane = await through_lane(lane, path, body(), alice.headers)
    assert by_lane[0] == by_django[0] == status, (by_lane[2], by_django[2])
    assert shape(*by_lane) == shape(*by_django)
    assert shape(*by_lane)[3] == code
    if status != 413:  # (refused by the middleware, before any route)
        assert path in lane.handler._lane_routes  # the lane served it, not Django's cycle
    assert await sync_to_async(ledger_invariant_violations)() == []


async def test_callers_without_a_key_or_its_scope_or_its_money_are_refused_alike(
        lane, upstream, alice, bob):
    usage_only = await sync_to_async(api_key_create)(user=bob.user, name="usage only",
                                                     scopes=["usage:read"])
    account = await sync_to_async(lambda: alice.account)()
    await sync_to_async(balance_adjust)(account, amount_wei=-(account.balance_wei - 1000),
                                        memo="test: nearly empty")
    for headers, status, code in (
            ({}, 401, "UNAUTHENTICATED"),
            ({"X-API-Key": "sk_" + "0" * 64}, 401, "UNAUTHENTICATED"),
            ({"X-API-Key": usage_only.raw}, 403, "FORBIDDEN"),
            (alice.headers, 402, "INSUFFICIENT_FUNDS")):
        for path, body in (("/v1/inference", inference()), ("/v1/chat/completions", chat())):
            by_django = await through_django(path, body, headers)
            by_lane = await through_lane(lane, path, body, headers)
            assert by_lane[0] == by_django[0] == status, (path, by_lane[2])
            assert shape(*by_lane) == shape(*by_django)
            assert shape(*by_lane)[3] == code
    refusal = json.loads(by_lane[2])["error"]
    assert refusal["available"] == "1000" and int(refusal["required"]) > 1000
    assert not upstream.requests  # nothing was run for any of them


async def test_the_rate_limit_is_counted_once_for_both_ways(lane, upstream, bob):
    # bob is on the free tier: 10 a minute, whichever way the requests come.
    statuses = []
    for number in range(12):
        if number % 2:
            statuses.append((await through_lane(lane, "/v1/inference", inference(),
                                                bob.headers))[0])
        else:
            statuses.append((await through_django("/v1/inference", inference(),
                                                  bob.headers))[0])
    assert statuses == [200] * 10 + [429, 429]
    response = await lane.post("/v1/inference", content=inference(), headers=bob.headers)
    assert response.status_code == 429
    assert response.json()["error"]["code"] == "RATE_LIMITED"
    assert int(response.headers["Retry-After"]) >= 1
    assert response.headers["X-RateLimit-Remaining"] == "0"


async def test_a_streamed_chat_through_the_lane_is_billed_for_every_token(
        lane, upstream, alice):
    async with lane.stream("POST", "/v1/chat/completions", content=chat(stream=True),
                           headers=alice.headers) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        events = [line[len("data: "):] async for line in response.aiter_lines()
                  if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(event) for event in events[:-1]]
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks
                   if c["choices"])
    usage = chunks[-1]["usage"]
    assert text == "w0 w1 w2 w3 " and usage["completion_tokens"] == 4
    assert int(chunks[-1]["cost"]) > 0
    assert "/v1/chat/completions" in lane.handler._lane_routes
    assert await sync_to_async(ledger_invariant_violations)() == []


async def test_other_api_requests_take_djangos_whole_cycle(lane, alice):
    assert API_LANE == {"/v1/inference", "/v1/chat/completions"}
    response = await lane.get("/v1/usage", headers=alice.headers)
    assert response.status_code == 200 and response.json()["object"] == "usage"
    response = await lane.get("/v1/inference", headers=alice.headers)
    assert response.status_code == 405
    assert response.json()["error"]["code"] == "METHOD_NOT_ALLOWED"
    assert lane.handler._lane_routes == {}
