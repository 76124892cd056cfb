import asyncio
import hashlib

import aiohttp
import pytest

from marketplace.client.stream import stream_job, ws_url
from marketplace.e2e import result_commitment, result_key
from marketplace.host.cid import cid_for
from tests.marketplace.host.conftest import post_for, request_for, signer_for, stored_text


async def collect(host, client, posted, request, **kwargs):
    pieces = []

    async def on_token(piece):
        pieces.append(piece)

    end = await stream_job(host.url, chain_job_id=posted.job_id,
                           chain_id=client.deployment.chain_id, node_id=host.address,
                           request=request, signer=signer_for(client), on_token=on_token,
                           **kwargs)
    return pieces, end


async def submitted(client, job_id):
    for _ in range(200):
        result = await client.submitted_result(job_id)
        if result is not None:
            return result
        await asyncio.sleep(0.05)
    raise AssertionError("the host never submitted its result")


async def test_a_streamed_job_matches_the_stored_result_and_its_hash_on_chain(on_anvil, host):
    client = on_anvil.chain("platform")
    request = request_for("Name three colours of the rainbow.")
    posted = await post_for(client, host.address, request)
    pieces, end = await collect(host, client, posted, request)
    text = "".join(pieces)
    assert text.strip()
    assert end.tokens == len(pieces) <= request.max_tokens
    # Stored sealed, under the hash of the ciphertext: the plaintext is not on disk.
    assert stored_text(host, end.cid, request, posted.job_id) == text
    assert end.cid == cid_for(host.node.store.get(end.cid))
    assert text.encode() not in host.node.store.get(end.cid)
    result = await submitted(client, posted.job_id)
    # On chain, the keyed commitment to the text: not its bare hash.
    key = result_key(bytes.fromhex(request.seed), client.deployment.chain_id, posted.job_id)
    assert result.result_hash == "0x" + result_commitment(text, key)
    assert result.result_hash != "0x" + hashlib.sha256(text.encode()).hexdigest()
    assert (result.cid, result.tokens_used) == (end.cid, len(pieces))


async def test_a_client_that_drops_after_n_tokens_resumes_with_exactly_the_rest(on_anvil, host):
    client = on_anvil.chain("platform")
    request = request_for("Describe a quiet morning in a small town.", max_tokens=40)
    posted = await post_for(client, host.address, request)
    sign = signer_for(client)
    first: list[str] = []
    async with aiohttp.ClientSession() as http, http.ws_connect(ws_url(host.url)) as ws:
        challenge = await ws.receive_json()
        from marketplace.protocol import challenge_message

        await ws.send_json({"type": "init", "version": 2, "jobId": posted.job_id,
                            "nodeId": host.address, "request": request.model_dump(by_alias=True),
                            "signature": sign(challenge_message(challenge["nonce"],
                                                                posted.job_id, host.address))})
        while len(first) < 10:
            message = await ws.receive_json()
            if message["type"] == "token":
                assert message["index"] == len(first)
                first.append(message["content"])
    # Disconnected after 10 tokens (indexes 0..9); resume from checkpoint 9.
    rest: list[str] = []
    async with aiohttp.ClientSession() as http, http.ws_connect(ws_url(host.url)) as ws:
        challenge = await ws.receive_json()
        await ws.send_json({"type": "init", "version": 2, "jobId": posted.job_id,
                            "nodeId": host.address, "checkpoint": 9,
                            "signature": sign(challenge_message(challenge["nonce"],
                                                                posted.job_id, host.address))})
        indexes = []
        while True:
            message = await ws.receive_json()
            if message["type"] == "token":
                indexes.append(message["index"])
                rest.append(message["content"])
            elif message["type"] == "end":
                break
            assert message["type"] != "error", message
    assert indexes == list(range(10, 10 + len(rest)))
    whole = stored_text(host, message["data"]["cid"], request, posted.job_id)
    assert "".join(first) + "".join(rest) == whole


async def test_two_clients_at_once_each_get_their_own_text(on_anvil, host):
    client = on_anvil.chain("platform")
    other = on_anvil.chain("host-4")  # any funded account can be a client
    req_a = request_for("List two fruits.", max_tokens=16)
    req_b = request_for("Write a greeting for a birthday card.", max_tokens=16)
    posted_a = await post_for(client, host.address, req_a)
    posted_b = await post_for(other, host.address, req_b)
    (a, end_a), (b, end_b) = await asyncio.gather(
        collect(host, client, posted_a, req_a), collect(host, other, posted_b, req_b))
    assert stored_text(host, end_a.cid, req_a, posted_a.job_id) == "".join(a)
    assert stored_text(host, end_b.cid, req_b, posted_b.job_id) == "".join(b)
    assert "".join(a) != "".join(b)


async def test_a_gzip_stream_delivers_the_same_text(on_anvil, host):
    client = on_anvil.chain("platform")
    request = request_for("Name a planet.", max_tokens=12)
    posted = await post_for(client, host.address, request)
    pieces, end = await collect(host, client, posted, request, compression="gzip",
                                encrypt=False)
    assert stored_text(host, end.cid, request, posted.job_id) == "".join(pieces)


async def test_capabilities_name_the_model_price_load_and_key(host):
    async with aiohttp.ClientSession() as http, http.get(f"{host.url}/v1/capabilities") as r:
        body = await r.json()
    assert body["models"] == [{"id": "smollm2-135m-instruct", "pricePerToken": "1000000000"}]
    assert body["address"] == host.address
    assert body["publicKey"].startswith("0x")
    assert body["queue"] == {"length": 0, "capacity": 8}


async def test_the_host_is_registered_on_chain_with_its_url_and_key(on_anvil, host):
    node = await on_anvil.chain("platform").get_node(host.address,
                                                     "smollm2-135m-instruct")
    assert node.url == host.url
    assert node.price_per_token_wei == 10**9
    assert node.metadata["publicKey"] == host.node.public_key


async def test_a_client_gone_past_the_grace_period_stops_the_generation(
        on_anvil, host, monkeypatch):
    from marketplace.host import sessions
    from marketplace.protocol import challenge_message

    monkeypatch.setattr(sessions, "GRACE_S", 0.2)
    client = on_anvil.chain("platform")
    request = request_for("Tell a very long story about a dragon and a knight.",
                          max_tokens=1500)
    posted = await post_for(client, host.address, request)
    sign = signer_for(client)
    async with aiohttp.ClientSession() as http, http.ws_connect(ws_url(host.url)) as ws:
        challenge = await ws.receive_json()
        await ws.send_json({"type": "init", "version": 2, "jobId": posted.job_id,
                            "nodeId": host.address, "request": request.model_dump(by_alias=True),
                            "signature": sign(challenge_message(challenge["nonce"],
                                                                posted.job_id, host.address))})
        while (await ws.receive_json())["type"] != "token":
            pass
    session = host.node.sessions[posted.job_id]
    for _ in range(100):
        if session.done:
            break
        await asyncio.sleep(0.05)
    assert session.done and session.reaped
    assert len(session.tokens) < 1500
    assert await client.submitted_result(posted.job_id) is None


async def test_a_client_that_stops_acknowledging_is_paused_and_resumed(
        on_anvil, host, monkeypatch):
    from marketplace.host import server
    from marketplace.protocol import challenge_message

    monkeypatch.setattr(server, "HIGH_WATERMARK", 8)
    monkeypatch.setattr(server, "LOW_WATERMARK", 2)
    client = on_anvil.chain("platform")
    request = request_for("Describe a quiet morning in a small town.", max_tokens=40)
    posted = await post_for(client, host.address, request)
    sign = signer_for(client)
    async with aiohttp.ClientSession() as http, http.ws_connect(ws_url(host.url)) as ws:
        challenge = await ws.receive_json()
        await ws.send_json({"type": "init", "version": 2, "jobId": posted.job_id,
                            "nodeId": host.address, "request": request.model_dump(by_alias=True),
                            "signature": sign(challenge_message(challenge["nonce"],
                                                                posted.job_id, host.address))})
        indexes = []
        while (message := await ws.receive_json())["type"] != "pause":
            if message["type"] == "token":
                indexes.append(message["index"])
        assert indexes == list(range(8))  # eight unacknowledged tokens, then the pause
        with pytest.raises(TimeoutError):  # nothing more while paused
            await ws.receive_json(timeout=0.5)
        await ws.send_json({"type": "ack", "index": indexes[-1]})
        assert (await ws.receive_json())["type"] == "resume"
        while (message := await ws.receive_json())["type"] != "end":
            if message["type"] == "token":
                indexes.append(message["index"])
                await ws.send_json({"type": "ack", "index": message["index"]})
    assert indexes == list(range(len(indexes)))
    assert len(indexes) == message["data"]["tokens"]
