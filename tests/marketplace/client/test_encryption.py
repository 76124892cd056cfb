"""End-to-end encryption between our runner and real host processes (`manage.py runhost`,
the bundled model), with a recording proxy on the path (the host registers the proxy's
URL, so every byte between them crosses it): nothing on the path reads a prompt or a
token, and a path that tampers with the stream or a host whose key is not its registered
address's costs the job nothing but a failover."""

from __future__ import annotations

import asyncio
import base64
import json
import string

import pytest
from asgiref.sync import sync_to_async

from marketplace.chain.contracts import JobStatus
from marketplace.client import discovery
from marketplace.e2e import compressed, new_ephemeral
from marketplace.models import AttemptState, Job, JobAttempt, VerificationRecord
from marketplace.services import JobSpec, run_job
from marketplace.wallet import platform_chain
from tests.conftest import MODEL
from tests.marketplace.client.test_hostile_hosts import settled_unpaid
from tests.marketplace.proxy import CLIENT, HOST, RecordingProxy

pytestmark = pytest.mark.django_db(transaction=True)

PROMPT = "Write two sentences about a lighthouse keeper who collects seashells."
CHEAP, DEAR = 10**9, 2 * 10**9
HEX = set(string.hexdigits + "x")
BASE64 = set(string.ascii_letters + string.digits + "+/=")


async def proxied_host(network, role: str, price: int, rewrite=None) -> RecordingProxy:
    """A host process whose registered URL is a recording proxy in front of it."""
    proxy = RecordingProxy("", rewrite=rewrite)
    (host,) = network.start_hosts({role: price}, args={role: ["--public-url", proxy.url]})
    proxy.target = host.url
    proxy.address = host.address
    return await proxy.start()


async def discovered(count: int) -> None:
    """Wait until discovery sees `count` hosts (a host just started may miss its first
    probe on a busy machine); the runner then uses what it found."""
    for _ in range(30):
        if len(await discovery.candidates(MODEL, fresh=True)) == count:
            return
        await asyncio.sleep(0.5)
    raise AssertionError(f"discovery never saw {count} hosts")


def forms(text: str) -> list[bytes]:
    """What `text` may look like in a frame: UTF-8, JSON-escaped, and base64 at each of
    the three alignments (whole 4-character groups only)."""
    raw = text.encode()
    found = [raw, json.dumps(text)[1:-1].encode()]
    for start in range(3):
        encoded = base64.b64encode(raw[start:])
        found.append(encoded[:len(encoded) // 4 * 4 - 4])
    return [f for f in found if len(f) >= 8]


def assert_handshake_only(text_frames: list[str]) -> None:
    """The frames in clear are the challenge and the init: random hex and base64, never
    text (a refusal of the init would be the one other, and there is none here)."""
    for frame in text_frames:
        message = json.loads(frame)
        if message["type"] == "challenge":
            assert set(message) == {"type", "nonce", "version", "publicKey"}
        else:
            assert message["type"] == "init"
            assert set(message) == {"type", "version", "jobId", "nodeId", "checkpoint",
                                    "ephemeralKey", "salt", "signature", "sealed"}
            assert set(message["sealed"]) <= BASE64
        for key in ("nonce", "publicKey", "ephemeralKey", "salt", "signature", "nodeId"):
            assert key not in message or set(message[key]) <= HEX


async def test_nothing_on_the_path_reads_the_prompt_or_any_token(network, settings):
    proxy = await proxied_host(network, "host-1", CHEAP)
    await discovered(1)
    try:
        outcome = await run_job(JobSpec(model=MODEL, prompt=PROMPT, max_tokens=48,
                                        temperature=0.7))
    finally:
        await proxy.stop()
    assert outcome.host.lower() == proxy.address.lower() and outcome.verified
    attempt = await JobAttempt.objects.aget(job_id=outcome.job_id)
    record = await VerificationRecord.objects.aget(attempt=attempt)
    pieces = [token[2] for token in record.tokens]
    assert "".join(pieces) == outcome.text and len(pieces) > 10

    assert proxy.connections >= 1
    text_frames = [f.data for f in proxy.frames if isinstance(f.data, str)]
    binary = [f.data for f in proxy.frames if isinstance(f.data, bytes)]
    assert_handshake_only(text_frames)
    assert binary, "the stream crossed the proxy"
    everything = [*binary, *(t.encode() for t in text_frames), *proxy.bodies]
    for secret in (PROMPT, outcome.text, *PROMPT.split(". ")):
        for form in forms(secret):
            assert not any(form in data for data in everything), secret
    # Each token, as UTF-8, in the sealed frames (four bytes and more: shorter strings
    # turn up in random bytes by chance).
    for piece in {p for p in pieces if len(p.encode()) >= 4}:
        assert not any(piece.encode() in data for data in binary), piece


async def test_the_same_proxy_reads_everything_of_a_plaintext_stream(network, settings):
    """The check above can fail: with encryption off, the proxy sees it all."""
    settings.MARKETPLACE_STREAM_ENCRYPTION = False
    proxy = await proxied_host(network, "host-1", CHEAP)
    await discovered(1)
    try:
        outcome = await run_job(JobSpec(model=MODEL, prompt=PROMPT, max_tokens=16,
                                        temperature=0.0))
    finally:
        await proxy.stop()
    seen = b"".join(f.data.encode() if isinstance(f.data, str) else f.data
                    for f in proxy.frames)
    assert PROMPT.encode() in seen
    attempt = await JobAttempt.objects.aget(job_id=outcome.job_id)
    record = await VerificationRecord.objects.aget(attempt=attempt)
    pieces = [token[2] for token in record.tokens]
    assert "".join(pieces) == outcome.text
    for piece in pieces:
        assert f'"content": {json.dumps(piece)}'.encode() in seen


def tamper_with_a_token(sender, connection, index, data):
    if sender == HOST and index == 4:
        return [data[:-1] + bytes([data[-1] ^ 1])]
    return [data]


def swap_the_key(sender, connection, index, data):
    if sender == HOST and index == 0:
        return [json.dumps({**json.loads(data),
                            "publicKey": "0x" + compressed(new_ephemeral()).hex()})]
    return [data]


@pytest.mark.parametrize(("rewrite", "code"), [
    (tamper_with_a_token, "E2E_TAMPERED"),
    (swap_the_key, "HOST_KEY_MISMATCH"),
], ids=["tampered", "key-mismatch"])
async def test_a_broken_stream_fails_over_to_the_next_host_and_costs_nothing(
        network, settings, rewrite, code):
    bad = await proxied_host(network, "host-1", CHEAP, rewrite=rewrite)
    (good,) = network.start_hosts({"host-2": DEAR})
    chain = await platform_chain()
    await discovered(2)
    try:
        outcome = await run_job(JobSpec(model=MODEL, prompt="Name three birds.",
                                        max_tokens=16, temperature=0.0))
    finally:
        await bad.stop()
    assert outcome.host == good.address and outcome.verified
    job = await Job.objects.aget(pk=outcome.job_id)
    first, second = [a async for a in job.attempts.order_by("number")]
    assert (first.host_address.lower(), first.state, first.error_code) == (
        bad.address.lower(), AttemptState.ABANDONED, code)
    assert second.state == AttemptState.ACCEPTED
    assert outcome.cost_wei == second.tokens_billed * DEAR == int(job.paid_wei)
    if code == "HOST_KEY_MISMATCH":
        # Not a byte was sent to it: it never had the request, and generated nothing.
        assert bad.sent_by(CLIENT) == []
        assert (await chain.get_job(first.chain_job_id)).status in (JobStatus.POSTED,
                                                                    JobStatus.CLAIMED)
        assert await chain.withdrawable(first.host_address) == 0
    else:
        await settled_unpaid(chain, await sync_to_async(JobAttempt.objects.get)(pk=first.pk))
