"""GET /v1/usage: the caller's own tokens, cost and requests per model and per day."""

import pytest
from django.test import AsyncClient
from django.utils import timezone

from accounts.tiers import price_for
from tests.conftest import MODEL
from tests.gateway.conftest import nonce

pytestmark = pytest.mark.django_db(transaction=True)
OTHER = "smollm2-360m-instruct"


async def infer(who, model: str, prompt: str, max_tokens: int):
    response = await AsyncClient().post("/v1/inference", headers=who.headers, data={
        "model": model, "prompt": prompt, "max_tokens": max_tokens},
        content_type="application/json")
    assert response.status_code == 200, response.content
    return response.json()


async def test_usage_sums_the_callers_requests_per_model_and_per_day(upstream, alice, bob,
                                                                     settings):
    settings.GATEWAY_MODELS = [MODEL, OTHER]
    tag = nonce()
    await infer(alice, MODEL, f"one {tag}", 3)
    await infer(alice, MODEL, f"two {tag}", 5)
    await infer(alice, MODEL, f"one {tag}", 3)  # a cache hit: a request, free
    await infer(alice, OTHER, f"three {tag}", 2)
    await infer(bob, MODEL, f"four {tag}", 7)
    response = await AsyncClient().get("/v1/usage", headers=alice.headers)
    assert response.status_code == 200
    usage = response.json()
    cost = {n: price_for("free", 10**9, n).charge_wei for n in (2, 3, 5)}
    assert usage["by_model"] == [
        {"model": MODEL, "requests": 3, "tokens": 11, "cost": str(cost[3] + cost[5]),
         "cached": 1},
        {"model": OTHER, "requests": 1, "tokens": 2, "cost": str(cost[2]), "cached": 0}]
    today = timezone.localdate().isoformat()
    assert [(d["date"], d["model"], d["requests"]) for d in usage["by_day"]] == [
        (today, MODEL, 3), (today, OTHER, 1)]
    assert usage["total"] == {"requests": 4, "tokens": 13,
                              "cost": str(cost[2] + cost[3] + cost[5])}
    theirs = (await AsyncClient().get("/v1/usage", headers=bob.headers)).json()
    assert theirs["total"]["requests"] == 1 and theirs["total"]["tokens"] == 7


async def test_the_window_is_bounded(alice):
    response = await AsyncClient().get("/v1/usage?days=0", headers=alice.headers)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "INVALID_REQUEST"
