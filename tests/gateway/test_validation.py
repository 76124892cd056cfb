"""Bad input to /v1 gets a 400 with a code of its own, in the one error shape; nothing is
reserved or run for it."""

import pytest
from django.test import AsyncClient

from accounts.models import Reservation
from tests.conftest import MODEL

pytestmark = pytest.mark.django_db(transaction=True)


async def post(alice, path: str, body):
    return await AsyncClient().post(path, headers=alice.headers, data=body,
                                    content_type="application/json")


INFERENCE_CASES = [
    ({"model": "no-such-model"}, "UNKNOWN_MODEL"),
    ({"prompt": "x" * 16_001}, "PROMPT_TOO_LONG"),
    ({"prompt": "   "}, "INVALID_REQUEST"),
    ({"temperature": 2.5}, "INVALID_TEMPERATURE"),
    ({"temperature": -0.1}, "INVALID_TEMPERATURE"),
    ({"max_tokens": 0}, "INVALID_MAX_TOKENS"),
    ({"max_tokens": 4097}, "INVALID_MAX_TOKENS"),
    ({"max_tokens": "many"}, "INVALID_REQUEST"),
    ({"prompt": ["not", "a", "string"]}, "INVALID_REQUEST"),
]
async def test_a_missing_field_and_malformed_json_are_invalid_requests(alice):
    missing = await post(alice, "/v1/inference", {"model": MODEL})
    assert missing.status_code == 400
    error = missing.json()["error"]
    assert error["code"] == "INVALID_REQUEST" and "prompt" in error["message"]
    broken = await post(alice, "/v1/inference", "{not json")
    assert broken.status_code == 400 and broken.json()["error"]["code"] == "INVALID_REQUEST"


CHAT_CASES = [
    ({"model": MODEL, "messages": []}, "INVALID_REQUEST"),
    ({"model": MODEL, "messages": [{"role": "wizard", "content": "hi"}]}, "INVALID_REQUEST"),
    ({"model": MODEL, "messages": [{"role": "user", "content": "hi"},
                                   {"role": "assistant", "content": "hello"}]},
     "INVALID_REQUEST"),
    ({"model": "gpt-4", "messages": [{"role": "user", "content": "hi"}]}, "UNKNOWN_MODEL"),
    ({"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "temperature": 3},
     "INVALID_TEMPERATURE"),
    ({"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": -1},
     "INVALID_MAX_TOKENS"),
]


async def test_each_invalid_inference_request_has_its_code(alice, settings):
    settings.ACCOUNTS_TIERS = {**settings.ACCOUNTS_TIERS, "free": {
        **settings.ACCOUNTS_TIERS["free"], "requests_per_minute": 100}}
    for change, code in INFERENCE_CASES:
        body = {"model": MODEL, "prompt": "Say hello.", "max_tokens": 8, "temperature": 0.5,
                **change}
        response = await post(alice, "/v1/inference", body)
        assert response.status_code == 400, change
        error = response.json()["error"]
        assert error["code"] == code, change
        assert error["message"]
    assert not await Reservation.objects.aexists()


async def test_each_invalid_chat_request_has_its_code(alice, settings):
    settings.ACCOUNTS_TIERS = {**settings.ACCOUNTS_TIERS, "free": {
        **settings.ACCOUNTS_TIERS["free"], "requests_per_minute": 100}}
    for body, code in CHAT_CASES:
        response = await post(alice, "/v1/chat/completions", body)
        assert response.status_code == 400, body
        assert response.json()["error"]["code"] == code, body


async def test_a_wrong_method_is_a_405_in_the_one_shape(alice):
    response = await AsyncClient().get("/v1/inference", headers=alice.headers)
    assert response.status_code == 405
    assert response.json()["error"]["code"] == "METHOD_NOT_ALLOWED"


async def test_the_openapi_docs_are_served(alice):
    schema = await AsyncClient().get("/v1/openapi.json")
    assert schema.status_code == 200
    paths = schema.json()["paths"]
    assert {"/v1/inference", "/v1/chat/completions", "/v1/models", "/v1/usage"} <= set(paths)
    docs = await AsyncClient().get("/v1/docs")
    assert docs.status_code == 200 and b"openapi.json" in docs.content
