"""The published schema of /v1 is exact: schemathesis reads /v1/openapi.json from a live
server (uvicorn on config.asgi, the test database) and sends it requests made from that
schema, valid and invalid, authenticated with a real API key. Each answer must be a status
the schema names for the operation, with a body (or stream of events) of the schema's
shape; a valid request must be accepted and an invalid one refused; a request without
the key must be a 401.

Twice: with no host on the marketplace (a real chain with our contracts, where no host
has registered), where a valid request for text is answered 503 NO_HOSTS_AVAILABLE; and
with an OpenAI-compatible upstream that answers, where it gets its text (200, JSON or a
stream) and no 5xx at all is allowed."""

from __future__ import annotations

import json
import re

import pytest
from django.test import AsyncClient

from accounts.models import WalletLink
from gateway import batch
from gateway.api.auth import ApiKeyHeader, BearerKey
from gateway.api.batch import BatchIn
from gateway.models import Batch
from tests.apischema import config, results_forget, schemathesis_run
from tests.conftest import MODEL
from tests.gateway.conftest import network_env
from tests.gateway.schema_hooks import LINKED_WALLET

pytestmark = pytest.mark.django_db(transaction=True)

# Thousands of requests a minute from one key and one address: the rate limit would
# answer most of them (its 429 is in the schema, but says nothing of the rest). A valid
# withdrawal (schema_hooks) is 1 wei, which the smallest allowed must admit.
UNLIMITED = {"ACCOUNTS_FREE_RPM": "1000000", "FUNDS_WITHDRAWAL_MIN_WEI": "1"}


@pytest.fixture
def linked(alice):
    WalletLink.objects.create(user=alice.user, address=LINKED_WALLET)
    return alice


@pytest.fixture(autouse=True)
def fresh_results():
    results_forget("*gateway:result:*")
    yield
    results_forget("*gateway:result:*")


def v1_config(api_key: str, *, server_errors: list[str] = ()) -> str:
    # The key goes in either of its two places, as the schema's alternatives allow.
    return config(auth={"ApiKeyHeader": {"api_key": api_key},
                        "BearerKey": {"bearer": api_key}},
                  server_errors=server_errors, hooks="tests.gateway.schema_hooks")


def test_without_hosts_every_answer_of_v1_is_one_its_schema_names(network, servers, linked,
                                                                   alice, tmp_path):
    url = servers.start({**network_env(network), **UNLIMITED})

    report = schemathesis_run(schema_url=f"{url}/v1/openapi.json", tmp_path=tmp_path,
                              config=v1_config(alice.raw, server_errors=["503"]))

    assert "Operations:       13 selected / 13 total" in report


def test_with_answers_every_answer_of_v1_is_one_its_schema_names(upstream, servers, linked,
                                                                 alice, tmp_path):
    url = servers.start({"GATEWAY_UPSTREAM_URL": upstream.url, **UNLIMITED})

    report = schemathesis_run(schema_url=f"{url}/v1/openapi.json", tmp_path=tmp_path,
                              config=v1_config(alice.raw))

    assert "Operations:       13 selected / 13 total" in report
    assert len(upstream.requests) > 20  # valid requests for text were answered


# ---- What the runs above rely on, one by one ----------------------------------------


@pytest.fixture
def many_requests(settings):
    settings.ACCOUNTS_TIERS = {**settings.ACCOUNTS_TIERS, "free": {
        **settings.ACCOUNTS_TIERS["free"], "requests_per_minute": 100}}


async def schema() -> dict:
    return (await AsyncClient().get("/v1/openapi.json")).json()


async def post(alice, path: str, body) -> tuple[int, dict]:
    response = await AsyncClient().post(path, headers=alice.headers, data=body,
                                        content_type="application/json")
    return response.status_code, response.json()


async def test_the_schema_offers_the_key_in_either_header_as_alternatives(alice):
    published = await schema()

    assert published["components"]["securitySchemes"] == {
        "ApiKeyHeader": {"type": "apiKey", "in": "header", "name": "X-API-Key",
                         "description": ApiKeyHeader.openapi_description},
        "BearerKey": {"type": "http", "scheme": "bearer",
                      "bearerFormat": BearerKey.openapi_bearerFormat,
                      "description": BearerKey.openapi_description}}
    for path, operations in published["paths"].items():
        for method, operation in operations.items():
            assert operation["security"] == [{"ApiKeyHeader": []}, {"BearerKey": []}], path
            # Before any view: no key, the rate limit, a bug; with a body, its size limit.
            expected = {"401", "429", "500"} | ({"413"} if method == "post" else set())
            assert expected <= set(operation["responses"]), (method, path)


async def test_the_schema_publishes_the_limits_the_settings_give_the_server(alice, settings):
    settings.GATEWAY_MODELS = [MODEL, "tinyllama-1b"]
    settings.GATEWAY_MAX_PROMPT_CHARS = 1000
    settings.GATEWAY_MAX_TOKENS = 64
    settings.BATCH_MAX_ITEMS = 7

    shapes = (await schema())["components"]["schemas"]

    fields = shapes["InferenceIn"]["properties"]
    assert fields["model"]["enum"] == [MODEL, "tinyllama-1b"]
    assert (fields["prompt"]["minLength"], fields["prompt"]["maxLength"]) == (1, 1000)
    assert (fields["max_tokens"]["minimum"], fields["max_tokens"]["maximum"]) == (1, 64)
    assert (fields["temperature"]["minimum"], fields["temperature"]["maximum"]) == (0, 2)
    assert shapes["BatchIn"]["properties"]["requests"]["maxItems"] == 7
    status, body = await post(alice, "/v1/inference", {"model": MODEL, "prompt": "x" * 1001})
    assert (status, body["error"]["code"]) == (400, "PROMPT_TOO_LONG")
    status, body = await post(alice, "/v1/inference", {"model": MODEL, "prompt": "hi",
                                                       "max_tokens": 65})
    assert (status, body["error"]["code"]) == (400, "INVALID_MAX_TOKENS")


@pytest.mark.parametrize("prompt", ["a\x00b", "a\ud800b"])
async def test_a_nul_or_an_unpaired_surrogate_in_a_prompt_is_a_400_not_a_500(
        alice, many_requests, prompt):
    # As JSON sends them: \u0000 and a lone \ud800 (PostgreSQL and UTF-8 hold neither).
    raw = json.dumps(prompt)
    bodies = {
        "/v1/inference": f'{{"model": "{MODEL}", "prompt": {raw}}}',
        "/v1/chat/completions": f'{{"model": "{MODEL}", "messages": [{{"role": "user", '
                                f'"content": [{{"type": "text", "text": {raw}}}]}}]}}',
        "/v1/batch": f'{{"requests": [{{"model": "{MODEL}", "prompt": {raw}}}]}}'}
    for path, body in bodies.items():
        status, answer = await post(alice, path, body)
        assert (status, answer["error"]["code"]) == (400, "INVALID_REQUEST"), path
    assert not await Batch.objects.aexists()


async def test_a_chat_max_tokens_of_zero_is_refused_not_read_as_unset(alice):
    status, body = await post(alice, "/v1/chat/completions", {
        "model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 0})

    assert (status, body["error"]["code"]) == (400, "INVALID_MAX_TOKENS")


@pytest.mark.parametrize(("field", "value"), [
    ("max_tokens", "8"), ("max_tokens", True), ("max_tokens", 8.5), ("temperature", "0.5"),
    ("temperature", True)])
async def test_a_value_of_the_wrong_json_type_is_refused_not_converted(alice, field, value):
    status, body = await post(alice, "/v1/inference", {"model": MODEL, "prompt": "hi",
                                                       field: value})

    assert (status, body["error"]["code"]) == (400, "INVALID_REQUEST")


def test_the_webhook_url_pattern_the_schema_publishes_is_the_one_the_server_checks():
    published = re.compile(BatchIn.model_json_schema()["properties"]["webhook_url"]["pattern"])
    for url in ("", "http://127.0.0.1:9/hook", "https://x.test/h?a=1#b",
                "https://user:secret@hooks.example.com:8443/in", "http://[::1]:8080/"):
        assert published.fullmatch(url), url
        if url:
            batch.webhook_url_check_syntax(url)
    for url in ("ftp://example", "http://", "http://a b/", " http://x.test", "http://x.test/\n",
                "HTTP://x.test", "http://[::1/", "http://exämple.test/"):
        assert not published.fullmatch(url), url
        with pytest.raises(batch.BatchError):
            batch.webhook_url_check_syntax(url)
