"""Every bad input gets an error with a code, and the host keeps serving everyone else."""

import json

import aiohttp
import pytest

from marketplace.chain.contracts import JobStatus
from marketplace.client.stream import ws_url
from marketplace.protocol import MAX_MESSAGE_BYTES, challenge_message
from tests.marketplace.host.conftest import post_for, request_for, signer_for, start_host
from tests.marketplace.host.test_streaming import collect


async def refusal(host, build_init, raw: str | None = None) -> dict:
    """Open a stream, send what `build_init(nonce)` returns (or `raw`), return the reply."""
    async with aiohttp.ClientSession() as http, http.ws_connect(ws_url(host.url)) as ws:
        challenge = await ws.receive_json()
        if raw is not None:
            await ws.send_str(raw)
        else:
            await ws.send_json(build_init(challenge["nonce"]))
        while True:
            message = await ws.receive_json()
            if message["type"] == "error":
                return message["data"]
            assert message["type"] in ("checkpoint", "token", "resume"), message


def init_for(host, client, posted, request, *, checkpoint=None, signer=None, job_id=None):
    sign = signer or signer_for(client)
    job = job_id or posted.job_id

    def build(nonce):
        return {"type": "init", "version": 2, "jobId": job, "nodeId": host.address,
                "checkpoint": checkpoint,
                "request": request.model_dump(by_alias=True) if request else None,
                "signature": sign(challenge_message(nonce, job, host.address))}

    return build


@pytest.fixture
async def job(on_anvil, host):
    client = on_anvil.chain("platform")
    request = request_for("Say hello.", max_tokens=8)
    posted = await post_for(client, host.address, request)
    return client, posted, request


async def still_serves(on_anvil, host):
    client = on_anvil.chain("platform")
    request = request_for("Count to three.", max_tokens=8)
    posted = await post_for(client, host.address, request)
    pieces, end = await collect(host, client, posted, request)
    assert pieces and end.tokens == len(pieces)


async def test_malformed_json_is_refused(on_anvil, host):
    assert (await refusal(host, None, raw="{not json"))["code"] == "MALFORMED"
    assert (await refusal(host, None, raw="[1, 2]"))["code"] == "MALFORMED"
    assert (await refusal(host, None, raw='{"type": "init"}'))["code"] == "MALFORMED"
    await still_serves(on_anvil, host)


async def test_a_message_over_the_size_limit_is_refused(on_anvil, host):
    raw = json.dumps({"type": "init", "padding": "x" * (MAX_MESSAGE_BYTES + 10)})
    assert (await refusal(host, None, raw=raw))["code"] == "TOO_LARGE"
    await still_serves(on_anvil, host)


async def test_a_job_that_is_not_on_chain_is_refused(on_anvil, host, job):
    client, posted, request = job
    reply = await refusal(host, init_for(host, client, posted, request, job_id=99_999))
    assert reply["code"] == "JOB_NOT_FOUND"


async def test_a_job_assigned_to_another_host_is_refused(on_anvil, host):
    client = on_anvil.chain("platform")
    request = request_for("Say hello.", max_tokens=8)
    other = on_anvil.chain("host-2").address
    posted = await post_for(client, other, request)
    reply = await refusal(host, init_for(host, client, posted, request))
    assert reply["code"] == "NOT_YOUR_JOB"
    await still_serves(on_anvil, host)


async def test_a_signature_from_someone_other_than_the_client_is_refused(on_anvil, host, job):
    client, posted, request = job
    mallory = signer_for(on_anvil.chain("host-3"))
    reply = await refusal(host, init_for(host, client, posted, request, signer=mallory))
    assert reply["code"] == "BAD_SIGNATURE"


async def test_a_replayed_signature_is_refused(on_anvil, host, job):
    client, posted, request = job
    sign = signer_for(client)
    used = {}

    def first(nonce):
        used["signature"] = sign(challenge_message(nonce, posted.job_id, host.address))
        return {"type": "init", "version": 2, "jobId": posted.job_id, "nodeId": host.address,
                "request": request.model_dump(by_alias=True), "signature": used["signature"]}

    async with aiohttp.ClientSession() as http, http.ws_connect(ws_url(host.url)) as ws:
        challenge = await ws.receive_json()
        await ws.send_json(first(challenge["nonce"]))
        while (await ws.receive_json())["type"] != "end":
            pass
    old = used["signature"]
    reply = await refusal(host, lambda nonce: {**first(nonce), "signature": old})
    assert reply["code"] == "REPLAYED_NONCE"


async def test_a_request_that_does_not_match_the_prompt_hash_is_refused(on_anvil, host, job):
    client, posted, _ = job
    other = request_for("Something else entirely.", max_tokens=8)
    reply = await refusal(host, init_for(host, client, posted, other))
    assert reply["code"] == "PROMPT_MISMATCH"


async def test_an_unknown_model_is_refused_at_quote_and_stream(on_anvil, host):
    async with aiohttp.ClientSession() as http, http.post(
            f"{host.url}/v1/quote",
            json={"model": "gpt-9", "maxTokens": 10, "maxPricePerToken": "5"}) as r:
        assert r.status == 404
        assert (await r.json())["data"]["code"] == "INVALID_MODEL"
    client = on_anvil.chain("platform")
    request = request_for("Hi.", max_tokens=8).model_copy(update={"model": "gpt-9"})
    posted = await client.post_job(model="gpt-9", prompt_hash=request.digest(), max_tokens=8,
                                   max_price_per_token_wei=10**9,
                                   deadline=await client.block_time() + 300, host=host.address)
    reply = await refusal(host, init_for(host, client, posted, request))
    assert reply["code"] == "INVALID_MODEL"


async def test_a_resume_index_beyond_what_exists_is_refused(on_anvil, host, job):
    client, posted, request = job
    await collect(host, client, posted, request)
    reply = await refusal(host, init_for(host, client, posted, None, checkpoint=500))
    assert reply["code"] == "BAD_CHECKPOINT"


async def test_a_quote_below_the_price_gets_a_counter_offer(host):
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{host.url}/v1/quote", json={
                "model": "smollm2-135m-instruct", "maxTokens": 10,
                "maxPricePerToken": "5"}) as r:
            body = await r.json()
        assert body["accepted"] is False
        assert body["counter"]["pricePerToken"] == "1000000000"
        async with http.post(f"{host.url}/v1/quote", json={
                "model": "smollm2-135m-instruct", "maxTokens": 10,
                "maxPricePerToken": "2000000000"}) as r:
            assert (await r.json())["accepted"] is True
        async with http.post(f"{host.url}/v1/quote", data=b"nope") as r:
            assert r.status == 400
            assert (await r.json())["data"]["code"] == "MALFORMED"


async def test_a_full_host_answers_busy_and_leaves_the_job_open(on_anvil, llama, tmp_path):
    full = await start_host(on_anvil, llama, role="host-2", capacity=0, tmp_path=tmp_path)
    try:
        async with aiohttp.ClientSession() as http, http.post(
                f"{full.url}/v1/quote", json={"model": "smollm2-135m-instruct",
                                              "maxTokens": 10,
                                              "maxPricePerToken": "2000000000"}) as r:
            assert r.status == 503
            assert (await r.json())["data"]["code"] == "BUSY"
        client = on_anvil.chain("platform")
        request = request_for("Say hello.", max_tokens=8)
        posted = await post_for(client, full.address, request)
        reply = await refusal(full, init_for(full, client, posted, request))
        assert reply["code"] == "BUSY"
        assert (await client.get_job(posted.job_id)).status == JobStatus.POSTED
    finally:
        await full.runner.cleanup()
