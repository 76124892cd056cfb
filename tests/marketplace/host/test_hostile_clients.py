"""A host is a public server: strangers flood it, sign for jobs that are not theirs, hold
sockets open without a word, and send frames that never end. It refuses them cheaply
(no chain call before a signature is checked) and goes on serving everyone else.

Other client addresses are other loopback addresses (127.0.0.2, ...), which Linux routes
to the host like any peer. Chain calls are counted by a JSON-RPC proxy in front of anvil.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import struct
import time
from urllib.parse import urlsplit

import aiohttp
import pytest
from aiohttp import web
from web3 import AsyncWeb3

from marketplace.chain.connect import http_provider
from marketplace.chain.contracts import Chain
from marketplace.client.errors import ClientError
from marketplace.client.negotiation import negotiate
from marketplace.client.ranking import Candidate
from marketplace.client.stream import stream_job, ws_url
from marketplace.host.server import WS_READ_LIMIT
from marketplace.protocol import challenge_message
from tests.conftest import free_port
from tests.marketplace.host.conftest import (
    MODEL,
    PRICE,
    post_for,
    request_for,
    signer_for,
    start_host,
)


class CountingProxy:
    """Forwards JSON-RPC to anvil and keeps the method of every call that passed."""

    def __init__(self, upstream: str):
        self.upstream = upstream
        self.methods: list[str] = []

    async def start(self) -> str:
        self.http = aiohttp.ClientSession()
        app = web.Application()
        app.router.add_post("/", self.forward)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        port = free_port()
        await web.TCPSite(self.runner, "127.0.0.1", port).start()
        return f"http://127.0.0.1:{port}"

    async def forward(self, request: web.Request) -> web.Response:
        body = await request.read()
        payload = json.loads(body)
        for call in payload if isinstance(payload, list) else [payload]:
            self.methods.append(call.get("method"))
        async with self.http.post(self.upstream, data=body,
                                  headers={"Content-Type": "application/json"}) as answer:
            return web.Response(body=await answer.read(), status=answer.status,
                                content_type="application/json")

    async def stop(self) -> None:
        await self.runner.cleanup()
        await self.http.close()


@pytest.fixture
async def rpc(anvil):
    proxy = CountingProxy(anvil)
    proxy.url = await proxy.start()
    yield proxy
    await proxy.stop()


async def counted_host(on_anvil, llama, tmp_path, rpc, **config):
    """A host whose every chain call goes through the counting proxy; it does not watch
    the chain, so nothing but the streams' own work reaches the proxy."""
    w3 = AsyncWeb3(http_provider(rpc.url))
    chain = Chain(w3, on_anvil.deployment, on_anvil.sender("host-1", w3))
    return await start_host(on_anvil, llama, tmp_path=tmp_path, chain=chain,
                            watch_chain=False, **config)


@pytest.fixture
async def hosted(on_anvil, llama, tmp_path):
    """Start hosts with HostConfig overrides; all are stopped at the end."""
    started = []

    async def start(**config):
        running = await start_host(on_anvil, llama, tmp_path=tmp_path, **config)
        started.append(running)
        return running

    yield start
    for running in started:
        await running.runner.cleanup()


def from_address(ip: str) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(local_addr=(ip, 0)))


def init_message(host, job_id, signature, request=None, checkpoint=None) -> dict:
    return {"type": "init", "version": 2, "jobId": job_id, "nodeId": host.address,
            "checkpoint": checkpoint, "signature": signature,
            "request": request.model_dump(by_alias=True) if request else None}


async def answer_to(host, build, ip="127.0.0.1") -> dict:
    """Open a stream from `ip`, send `build(nonce)`, return the first error's data."""
    async with from_address(ip) as http, http.ws_connect(ws_url(host.url)) as ws:
        first = await ws.receive_json()
        if first["type"] == "error":
            return first["data"]
        await ws.send_json(build(first["nonce"]))
        while True:
            message = await ws.receive_json()
            if message["type"] == "error":
                return message["data"]


async def stream_everything(host, client, posted, request, ip="127.0.0.1") -> list[str]:
    sign = signer_for(client)
    pieces = []
    async with from_address(ip) as http, http.ws_connect(ws_url(host.url)) as ws:
        nonce = (await ws.receive_json())["nonce"]
        await ws.send_json(init_message(
            host, posted.job_id, sign(challenge_message(nonce, posted.job_id, host.address)),
            request))
        while True:
            message = await ws.receive_json()
            assert message["type"] != "error", message
            if message["type"] == "token":
                pieces.append(message["content"])
            if message["type"] == "end":
                return pieces


def signed_by(chain: Chain, host, job_id: int, **fields):
    sign = signer_for(chain)

    def build(nonce):
        return init_message(host, job_id, sign(challenge_message(nonce, job_id, host.address)),
                            **fields)

    return build


# ---- no chain call before the signature is checked --------------------------------------

async def test_a_bad_signature_is_refused_without_a_single_chain_call(on_anvil, llama,
                                                                      tmp_path, rpc):
    host = await counted_host(on_anvil, llama, tmp_path, rpc)
    try:
        client = on_anvil.chain("platform")
        mallory = on_anvil.chain("host-3")
        known_request = request_for("Say hello.", max_tokens=8)
        known = await post_for(client, host.address, known_request)
        await stream_everything(host, client, known, known_request)
        await host.node.sessions[known.job_id].submitted.wait()
        fresh_request = request_for("Count to three.", max_tokens=8)
        fresh = await post_for(client, host.address, fresh_request)
        before = len(rpc.methods)

        forged = "0x" + "ff" * 65  # does not recover to any address
        for job, request in ((known, known_request), (fresh, fresh_request)):
            answer = await answer_to(host, lambda nonce, job=job, request=request:
                                     init_message(host, job.job_id, forged, request))
            assert answer["code"] == "BAD_SIGNATURE"
        # Mallory's signature recovers, to Mallory: the host knows the job's client.
        answer = await answer_to(host, signed_by(mallory, host, known.job_id,
                                                 request=known_request))
        assert answer["code"] == "BAD_SIGNATURE"
        answer = await answer_to(host, signed_by(mallory, host, known.job_id, checkpoint=2))
        assert answer["code"] == "BAD_SIGNATURE"
        assert rpc.methods[before:] == []

        # The same count does see a stream that is allowed to cost the chain something.
        pieces = await stream_everything(host, client, fresh, fresh_request)
        assert pieces
        assert "eth_call" in rpc.methods[before:]
    finally:
        await host.runner.cleanup()


async def test_signing_for_jobs_the_host_does_not_know_costs_a_few_reads_then_busy(
        on_anvil, llama, tmp_path, rpc):
    host = await counted_host(on_anvil, llama, tmp_path, rpc, failed_handshakes_per_minute=5)
    try:
        mallory = on_anvil.chain("host-3")
        before = len(rpc.methods)
        codes = [(await answer_to(host, signed_by(mallory, host, 50_000 + n)))["code"]
                 for n in range(5)]
        assert codes == ["JOB_NOT_FOUND"] * 5
        assert rpc.methods[before:].count("eth_call") == 5  # one getJob a failure
        spent = len(rpc.methods)
        codes = [(await answer_to(host, signed_by(mallory, host, 60_000 + n)))["code"]
                 for n in range(20)]
        assert codes == ["BUSY"] * 20
        assert len(rpc.methods) == spent

        # The refusal is Mallory's address's, not everyone's.
        client = on_anvil.chain("platform")
        request = request_for("Say hello.", max_tokens=8)
        posted = await post_for(client, host.address, request)
        assert await stream_everything(host, client, posted, request, ip="127.0.0.2")
    finally:
        await host.runner.cleanup()


# ---- connection caps ----------------------------------------------------------------------

async def test_connections_beyond_the_per_address_cap_get_busy_while_others_are_served(
        on_anvil, hosted):
    host = await hosted(max_connections_per_ip=3, max_connections=5, handshake_timeout_s=60)
    async with from_address("127.0.0.1") as flood:
        held = [await flood.ws_connect(ws_url(host.url)) for _ in range(3)]
        for ws in held:
            assert (await ws.receive_json())["type"] == "challenge"

        async with flood.ws_connect(ws_url(host.url)) as ws:
            message = await ws.receive_json()
            assert message == {"type": "error", "data": {
                "code": "BUSY", "message": "more than 3 connections from your address"}}
            assert (await ws.receive()).type == aiohttp.WSMsgType.CLOSE
            assert ws.close_code == aiohttp.WSCloseCode.TRY_AGAIN_LATER
        async with flood.post(f"{host.url}/v1/quote", json={
                "model": MODEL, "maxTokens": 8, "maxPricePerToken": str(PRICE)}) as r:
            assert r.status == 503
            assert r.headers["Retry-After"] == "5"
            assert (await r.json())["data"]["code"] == "BUSY"
        async with flood.get(f"{host.url}/health") as r:
            assert r.status == 200  # an orchestrator's probe is never refused

        client = on_anvil.chain("platform")
        request = request_for("Say hello.", max_tokens=8)
        posted = await post_for(client, host.address, request)
        assert await stream_everything(host, client, posted, request, ip="127.0.0.2")

        # Two more from a second address fill the host's total of five: a third address
        # is refused too.
        async with from_address("127.0.0.2") as second:
            more = [await second.ws_connect(ws_url(host.url)) for _ in range(2)]
            for ws in more:
                await ws.receive_json()
            answer = await answer_to(host, lambda nonce: {}, ip="127.0.0.3")
            assert answer == {"code": "BUSY", "message": "the host is at its connection limit"}
            for ws in more:
                await ws.close()

        for ws in held:
            await ws.close()
    async with from_address("127.0.0.1") as again:
        for _ in range(20):  # the host counts a stream out once its handler has returned
            async with again.get(f"{host.url}/v1/capabilities") as r:
                if r.status == 200:
                    break
            await asyncio.sleep(0.05)
        assert r.status == 200


async def test_the_client_takes_busy_as_a_reason_to_try_another_host(on_anvil, hosted):
    host = await hosted(max_connections_per_ip=1, handshake_timeout_s=60)
    client = on_anvil.chain("platform")
    request = request_for("Say hello.", max_tokens=8)
    posted = await post_for(client, host.address, request)
    async with from_address("127.0.0.1") as holder, holder.ws_connect(ws_url(host.url)) as ws:
        await ws.receive_json()
        with pytest.raises(ClientError) as refused:
            await stream_job(host.url, chain_job_id=posted.job_id,
                             chain_id=client.deployment.chain_id, node_id=host.address,
                             request=request, signer=signer_for(client),
                             on_token=lambda piece: asyncio.sleep(0))
        assert (refused.value.code, refused.value.permanent) == ("BUSY", False)
        candidate = Candidate(address=host.address, url=host.url, model=MODEL,
                              price_per_token_wei=PRICE, probe_ms=1.0)
        with pytest.raises(ClientError) as refused:
            await negotiate(candidate, request, max_price_per_token_wei=None)
        assert (refused.value.code, refused.value.permanent) == ("BUSY", False)


# ---- the unauthenticated handshake -------------------------------------------------------

async def raw_stream(url: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A WebSocket opened by hand, so frames can be written the way no library would."""
    where = urlsplit(url)
    reader, writer = await asyncio.open_connection(where.hostname, where.port)
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write((f"GET /v1/stream HTTP/1.1\r\nHost: {where.netloc}\r\nUpgrade: websocket\r\n"
                  f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                  "Sec-WebSocket-Version: 13\r\n\r\n").encode())
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 101"), head
    return reader, writer


def frame_header(length: int) -> bytes:
    """A final text frame's header, masked with a zero key (so the payload goes as is)."""
    if length < 126:
        head = struct.pack("!BB", 0x81, 0x80 | length)
    elif length < 1 << 16:
        head = struct.pack("!BBH", 0x81, 0x80 | 126, length)
    else:
        head = struct.pack("!BBQ", 0x81, 0x80 | 127, length)
    return head + b"\0\0\0\0"


async def read_frame(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    first, second = await reader.readexactly(2)
    length = second & 0x7F
    if length == 126:
        (length,) = struct.unpack("!H", await reader.readexactly(2))
    elif length == 127:
        (length,) = struct.unpack("!Q", await reader.readexactly(8))
    return first & 0x0F, await reader.readexactly(length)


async def test_a_client_that_never_answers_the_challenge_is_dropped(hosted):
    host = await hosted(handshake_timeout_s=1)
    async with aiohttp.ClientSession() as http, http.ws_connect(ws_url(host.url)) as ws:
        assert (await ws.receive_json())["type"] == "challenge"
        started = time.monotonic()
        message = await ws.receive_json(timeout=5)
        assert message["data"]["code"] == "HANDSHAKE_TIMEOUT"
        assert (await ws.receive(timeout=5)).type == aiohttp.WSMsgType.CLOSE
        assert 0.8 < time.monotonic() - started < 3


async def test_a_first_message_trickled_byte_by_byte_is_cut_off_at_the_timeout(hosted):
    host = await hosted(handshake_timeout_s=1)
    reader, writer = await raw_stream(host.url)
    try:
        opcode, challenge = await read_frame(reader)
        assert json.loads(challenge)["type"] == "challenge"
        started = time.monotonic()
        writer.write(frame_header(1000))

        async def trickle():
            for _ in range(100):
                writer.write(b" ")
                await asyncio.sleep(0.1)

        trickling = asyncio.create_task(trickle())
        opcode, payload = await asyncio.wait_for(read_frame(reader), 5)
        assert json.loads(payload)["data"]["code"] == "HANDSHAKE_TIMEOUT"
        opcode, payload = await asyncio.wait_for(read_frame(reader), 5)
        assert opcode == 0x8  # close
        assert 0.8 < time.monotonic() - started < 3
        trickling.cancel()
    finally:
        writer.close()


async def test_an_oversized_first_message_is_refused_before_it_is_read(hosted):
    host = await hosted()
    reader, writer = await raw_stream(host.url)
    try:
        await read_frame(reader)  # the challenge
        # A header announcing 100 MiB and not one byte of it: the host does not wait.
        writer.write(frame_header(100 * 1024 * 1024))
        await writer.drain()
        opcode, payload = await asyncio.wait_for(read_frame(reader), 5)
        assert opcode == 0x8
        assert struct.unpack("!H", payload[:2])[0] == aiohttp.WSCloseCode.MESSAGE_TOO_BIG
    finally:
        writer.close()
    # Between the protocol's limit and aiohttp's buffer the refusal names the limit.
    async with aiohttp.ClientSession() as http, http.ws_connect(ws_url(host.url)) as ws:
        await ws.receive_json()
        await ws.send_str(" " * (WS_READ_LIMIT - 10))
        assert (await ws.receive_json())["data"]["code"] == "TOO_LARGE"


async def test_a_connection_that_never_finishes_its_request_is_closed(hosted):
    host = await hosted(idle_timeout_s=1)
    where = urlsplit(host.url)
    reader, writer = await asyncio.open_connection(where.hostname, where.port)
    try:
        started = time.monotonic()
        writer.write(b"GET /v1/capabilities HTTP/1.1\r\n")
        for _ in range(30):
            if reader.at_eof():
                break
            writer.write(b"X-Slow: 1\r\n")
            await asyncio.sleep(0.1)
        assert await asyncio.wait_for(reader.read(), 5) == b""
        assert time.monotonic() - started < 3
    finally:
        writer.close()
