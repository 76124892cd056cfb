"""What a failing request answers: a stable code, a fixed message for people and the
request's id to quote; never the text of the failure (exception classes, stack details,
or the chain's RPC URL, which holds the provider's API key)."""

import pytest
from django.test import AsyncClient

from accounts.models import Reservation, ReservationState
from gateway.models import GatewayRequest
from marketplace.client.errors import public_message
from marketplace.models import Job, JobState
from tests.conftest import LEAKS, MODEL, RPC_SECRET
from tests.gateway.conftest import nonce

pytestmark = pytest.mark.django_db(transaction=True)


def assert_no_leak(text: str) -> None:
    for leak in LEAKS:
        assert leak not in text, leak


async def test_a_request_failing_on_a_secret_rpc_url_answers_the_code_and_the_request_id(
        secret_rpc, alice):
    response = await AsyncClient().post(
        "/v1/inference", headers={**alice.headers, "X-Request-ID": "req-attack-1"},
        data={"model": MODEL, "prompt": f"Hello ({nonce()})", "max_tokens": 8},
        content_type="application/json")
    assert response.status_code == 502, response.content
    error = response.json()["error"]
    assert error == {"code": "RPC_UNAVAILABLE", "message": public_message("RPC_UNAVAILABLE"),
                     "request_id": "req-attack-1"}
    assert response["X-Request-ID"] == "req-attack-1"
    assert_no_leak(response.content.decode())

    # The detail is kept where operators look: the marketplace job, with no secret either.
    job = await Job.objects.aget()
    assert (job.state, job.error_code) == (JobState.FAILED, "RPC_UNAVAILABLE")
    assert "127.0.0.1" in job.error_message and RPC_SECRET not in job.error_message
    # Polling the failed request says the same fixed message.
    record = await GatewayRequest.objects.aget()
    polled = await AsyncClient().get(f"/v1/inference/{record.id}", headers=alice.headers)
    assert polled.json()["error"] == {"code": "RPC_UNAVAILABLE",
                                      "message": public_message("RPC_UNAVAILABLE")}
    assert_no_leak(polled.content.decode())
    assert (await Reservation.objects.aget()).state == ReservationState.RELEASED


async def test_a_streamed_chat_failing_on_the_chain_ends_with_the_code_and_the_request_id(
        secret_rpc, alice):
    response = await AsyncClient().post(
        "/v1/chat/completions", headers={**alice.headers, "X-Request-ID": "req-attack-2"},
        data={"model": MODEL, "stream": True, "max_tokens": 8,
              "messages": [{"role": "user", "content": f"Hi ({nonce()})"}]},
        content_type="application/json")
    body = b"".join([chunk async for chunk in response.streaming_content]).decode()
    assert '"code": "RPC_UNAVAILABLE"' in body and '"request_id": "req-attack-2"' in body
    assert_no_leak(body)


async def test_every_refusal_carries_the_request_id(alice):
    response = await AsyncClient().post(
        "/v1/inference", headers={**alice.headers, "X-Request-ID": "req-attack-3"},
        data={"model": MODEL, "prompt": "", "max_tokens": 8}, content_type="application/json")
    assert response.status_code == 400
    error = response.json()["error"]
    assert (error["code"], error["request_id"]) == ("INVALID_REQUEST", "req-attack-3")
    assert error["message"] == "the prompt is empty"  # our own words about the request
    anonymous = await AsyncClient().get("/v1/usage")
    assert anonymous.json()["error"]["request_id"] == anonymous["X-Request-ID"]


async def test_an_upstream_url_with_a_key_is_never_named_in_an_answer(upstream, alice,
                                                                      settings):
    settings.GATEWAY_UPSTREAM_URL = f"{upstream.url}/{RPC_SECRET}/"
    response = await AsyncClient().post(
        "/v1/inference", headers=alice.headers,
        data={"model": MODEL, "prompt": f"Hello ({nonce()})", "max_tokens": 4},
        content_type="application/json")
    assert response.status_code == 200, response.content
    assert response.json()["host"] == f"{upstream.url}/…"
    assert_no_leak(response.content.decode())
    record = await GatewayRequest.objects.aget()
    assert RPC_SECRET not in record.host

    failing = await AsyncClient().post(
        "/v1/inference", headers=alice.headers,
        data={"model": MODEL, "prompt": f"[fail] ({nonce()})", "max_tokens": 4},
        content_type="application/json")
    assert failing.status_code == 502
    assert failing.json()["error"]["message"] == public_message("UPSTREAM_ERROR")
    assert "HTTP 500" not in failing.content.decode()
