"""The error shape's reference, the unexpected-500 page, and URLs cut to their host."""

import pytest
from django.test import Client
from django.urls import get_resolver

from observability.errors import error_body, server_error, urls_redacted
from observability.logging import request_id_var


def test_an_error_body_carries_the_requests_id():
    token = request_id_var.set("req-7")
    try:
        assert error_body("NOT_FOUND", "no such job", extra=1) == {
            "error": {"code": "NOT_FOUND", "message": "no such job", "extra": 1,
                      "request_id": "req-7"}}
    finally:
        request_id_var.reset(token)
    assert "request_id" not in error_body("NOT_FOUND", "no such job")["error"]


@pytest.mark.parametrize(("text", "shown"), [
    ("http://127.0.0.1:9/key-SECRET123: Cannot connect", "http://127.0.0.1:9/… Cannot connect"),
    ("500 Server Error for url: https://user:pw@rpc.example.org/v3/abc?key=SECRET123, again",
     "500 Server Error for url: https://rpc.example.org/…, again"),
    ("Cannot connect to host 127.0.0.1:8545 ssl:default", "Cannot connect to host "
     "127.0.0.1:8545 ssl:default"),
    ("wss://node.example:8546", "wss://node.example:8546"),
])
def test_urls_are_cut_to_scheme_host_and_port(text, shown):
    assert urls_redacted(text) == shown


def test_an_unexpected_failure_is_a_page_with_the_request_id_and_nothing_of_the_failure(
        settings, db):
    assert get_resolver().resolve_error_handler(500) is server_error
    client = Client(raise_request_exception=False)
    settings.ROOT_URLCONF = "tests.observability.crashing_urls"
    response = client.get("/crash", headers={"X-Request-ID": "req-500"})
    assert response.status_code == 500
    page = response.content.decode()
    assert "<code>req-500</code>" in page
    for leak in ("SECRET123", "RuntimeError", "Traceback"):
        assert leak not in page
