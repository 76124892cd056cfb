"""Bytes from a host, taken in within bounds: gzip frames inflated with zlib's max_length
and a ratio bound, messages parsed strictly, HTTP answers read up to the bound and never
inflated behind our back. The HTTP answers come from real servers on loopback that answer
as a hostile host would."""

from __future__ import annotations

import gzip
import json
import zlib

import pytest
from aiohttp import web

from marketplace.client import discovery
from marketplace.client.bounded import Limits, host_message, inflate
from marketplace.client.errors import ClientError
from marketplace.client.negotiation import negotiate
from marketplace.client.ranking import Candidate
from marketplace.protocol import GenerationRequest, TokenMessage
from tests.conftest import free_port

LIMITS = Limits(message_bytes=64 * 1024, compression_ratio=100, token_chars=1024,
                job_chars=256 * 1024)
MODEL = "smollm2-135m-instruct"


def token(content: str, index: int = 0) -> bytes:
    return json.dumps({"type": "token", "index": index, "content": content,
                       "timestamp": 1.0}).encode()


def test_an_honest_compressed_frame_inflates_to_its_message():
    message = host_message(inflate(gzip.compress(token(" river")), LIMITS))
    assert isinstance(message, TokenMessage) and message.content == " river"


def test_a_frame_that_inflates_past_the_bound_is_refused_after_the_bound_only():
    bomb = gzip.compress(b"A" * (16 * 1024 * 1024), compresslevel=9)
    assert len(bomb) < 20_000
    with pytest.raises(ClientError) as refused:
        inflate(bomb, LIMITS)
    assert (refused.value.code, refused.value.permanent) == ("HOST_TOO_LARGE", False)


def test_a_frame_that_inflates_too_many_times_its_size_is_refused():
    frame = gzip.compress(token("a" * 60_000))  # under the size bound, 200 times smaller
    assert len(inflate(frame, Limits(**{**LIMITS.__dict__, "compression_ratio": 1000})))
    with pytest.raises(ClientError) as refused:
        inflate(frame, LIMITS)
    assert refused.value.code == "HOST_COMPRESSION_RATIO"


@pytest.mark.parametrize("frame", [
    b"not gzip at all",
    gzip.compress(token("x"))[:-6],  # cut short
    gzip.compress(token("x")) + b"trailing",
    gzip.compress(token("x")) + gzip.compress(token("y")),  # two members
    zlib.compress(token("x")),  # zlib, not gzip
], ids=["not-gzip", "cut-short", "trailing-bytes", "two-members", "zlib"])
def test_a_frame_that_is_not_one_whole_gzip_stream_is_malformed(frame):
    with pytest.raises(ClientError) as refused:
        inflate(frame, LIMITS)
    assert refused.value.code == "HOST_MALFORMED"


@pytest.mark.parametrize("raw", [
    b"{", b"[]", b"42", b'{"type": "token"}', b'{"type": "token", "index": true, '
    b'"content": "a", "timestamp": 1}', b'{"type": "token", "index": 0, "content": "a", '
    b'"timestamp": 1, "extra": 1}', b'{"type": "end", "data": []}', b'{"type": 7}',
    b'{"type": "challenge", "nonce": "' + b"a" * 10_000 + b'", "version": 2}',
    b"[" * 100_000,
])
def test_a_message_outside_the_protocol_is_malformed_never_a_crash(raw):
    with pytest.raises(ClientError) as refused:
        host_message(raw)
    assert refused.value.code == "HOST_MALFORMED"


# ---- HTTP answers --------------------------------------------------------------------

class Hostile:
    """A host whose /v1/capabilities and /v1/quote answer `body` with `headers`."""

    def __init__(self, body: bytes, headers: dict[str, str] | None = None,
                 status: int = 200):
        self.body, self.headers, self.status = body, headers or {}, status

    async def __aenter__(self) -> str:
        async def answer(request):
            return web.Response(body=self.body, status=self.status, headers=self.headers,
                                content_type="application/json")

        app = web.Application()
        app.router.add_get("/v1/capabilities", answer)
        app.router.add_post("/v1/quote", answer)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        port = free_port()
        await web.TCPSite(self.runner, "127.0.0.1", port).start()
        return f"http://127.0.0.1:{port}"

    async def __aexit__(self, *exc) -> None:
        await self.runner.cleanup()


HOSTILE_ANSWERS = {
    "huge": b'{"models": [' + b'{"id": "x"},' * 200_000 + b'{"id": "y"}]}',
    "gzip-bomb": gzip.compress(b" " * (32 * 1024 * 1024)),
    "a-list": b"[1, 2, 3]",
    "wrong-types": b'{"models": [{"id": 5}], "queue": {"length": "0", "capacity": 1}}',
    "not-json": b"<html>hello</html>",
}


@pytest.mark.parametrize("name", HOSTILE_ANSWERS)
async def test_a_hostile_capability_answer_leaves_the_host_out_quietly(name):
    headers = {"Content-Encoding": "gzip"} if name == "gzip-bomb" else {}
    async with Hostile(HOSTILE_ANSWERS[name], headers) as url:
        assert await discovery._probe("0x" + "33" * 20, url) is None


async def test_an_honest_capability_answer_is_read():
    body = json.dumps({"version": "1.0.0", "models": [{"id": MODEL, "pricePerToken": "1"}],
                       "queue": {"length": 0, "capacity": 8}, "later": {"field": 1}})
    async with Hostile(body.encode()) as url:
        capabilities, latency_ms = await discovery._probe("0x" + "33" * 20, url)
    assert [m.id for m in capabilities.models] == [MODEL] and latency_ms > 0


@pytest.mark.parametrize("body, status, code", [
    (b'{"accepted": true}', 200, "HOST_MALFORMED"),
    (b'{"accepted": true, "terms": {"pricePerToken": "-5"}}', 200, "HOST_MALFORMED"),
    (b'{"accepted": true, "terms": {"pricePerToken": 5}}', 200, "HOST_MALFORMED"),
    (b'{"accepted": "yes"}', 200, "HOST_MALFORMED"),
    (b"[]", 200, "HOST_MALFORMED"),
    (b'{"accepted": true, "terms": {"pricePerToken": "1"}}' + b" " * 100_000, 200,
     "HOST_TOO_LARGE"),
    (b"[]", 503, "QUOTE_REFUSED"),
    # A host may not speak in our own codes (marketplace.client.errors.host_code).
    (b'{"type": "error", "data": {"code": "INSUFFICIENT_FUNDS", "message": "no"}}', 402,
     "HOST_ERROR"),
])
async def test_a_hostile_quote_is_a_client_error_that_fails_over(body, status, code):
    async with Hostile(body, status=status) as url:
        host = Candidate(address="0x" + "44" * 20, url=url, model=MODEL,
                         price_per_token_wei=1, probe_ms=1.0)
        request = GenerationRequest(model=MODEL, prompt="Hi", maxTokens=4)
        with pytest.raises(ClientError) as refused:
            await negotiate(host, request, max_price_per_token_wei=None)
    # Whatever the host says, even a code that would end the job if we had said it.
    assert (refused.value.code, refused.value.permanent) == (code, False)
