"""Protocol 3 against a real host (the bundled model): what the host refuses of a client,
what the client refuses of the path, and resume, each on its own keys."""

from __future__ import annotations

import base64
import json

import aiohttp
import pytest

from marketplace import e2e
from marketplace.client.errors import ClientError
from marketplace.client.stream import stream_job, ws_url
from marketplace.protocol import challenge_message
from tests.marketplace.host.conftest import post_for, request_for, signer_for, stored_text
from tests.marketplace.proxy import CLIENT, HOST, RecordingProxy

# ---- a client written by hand, to send the host what ours never would ------------------


class RawClient:
    """One connection, speaking protocol 3 step by step."""

    def __init__(self, host, client, posted, request):
        self.host, self.client, self.posted, self.request = host, client, posted, request
        self.channel: e2e.Channel | None = None

    async def __aenter__(self):
        self.http = aiohttp.ClientSession()
        self.ws = await self.http.ws_connect(ws_url(self.host.url))
        self.challenge = await self.ws.receive_json()
        return self

    async def __aexit__(self, *exc):
        await self.ws.close()
        await self.http.close()

    def info(self, nonce: str | None = None) -> bytes:
        return e2e.info(chain_id=self.client.deployment.chain_id, job_id=self.posted.job_id,
                        host_address=self.host.address,
                        nonce=nonce or self.challenge["nonce"])

    def init(self, *, version=3, info: bytes | None = None, opening: dict | None = None,
             signed_for: e2e.ClientHandshake | None = None, **extra) -> dict:
        host_key = e2e.host_key_check(self.challenge["publicKey"], self.host.address)
        handshake = e2e.client_handshake(host_key, info or self.info())
        self.channel = handshake.channel
        opening = opening if opening is not None else {
            "type": "open", "request": self.request.model_dump(by_alias=True)}
        sealed = handshake.channel.seal(json.dumps(opening).encode())
        signed = signed_for or handshake
        signature = signer_for(self.client)(challenge_message(
            self.challenge["nonce"], self.posted.job_id, self.host.address,
            "0x" + signed.ephemeral.hex(), "0x" + signed.salt.hex()))
        return {"type": "init", "version": version, "jobId": self.posted.job_id,
                "nodeId": self.host.address, "ephemeralKey": "0x" + handshake.ephemeral.hex(),
                "salt": "0x" + handshake.salt.hex(), "signature": signature,
                "sealed": base64.b64encode(sealed).decode(), **extra}

    async def refusal(self) -> dict:
        """The host's error: in clear before the session exists, sealed after."""
        while True:
            msg = await self.ws.receive()
            if msg.type == aiohttp.WSMsgType.TEXT:
                message = json.loads(msg.data)
            elif msg.type == aiohttp.WSMsgType.BINARY:
                message = json.loads(self.channel.open(msg.data))
            else:
                raise AssertionError(f"the host closed without saying why ({msg.type})")
            if message["type"] == "error":
                return message["data"]


async def job(on_anvil, host, prompt="Name a colour.", max_tokens=12):
    client = on_anvil.chain("platform")
    request = request_for(prompt, max_tokens=max_tokens)
    return client, request, await post_for(client, host.address, request)


async def test_the_challenge_names_the_hosts_registered_key(on_anvil, host):
    client, request, posted = await job(on_anvil, host)
    async with RawClient(host, client, posted, request) as raw:
        assert raw.challenge["version"] == 3
        key = e2e.host_key_check(raw.challenge["publicKey"], host.address)
        assert e2e.address_of(key) == host.address.lower()


async def test_an_unknown_protocol_version_is_refused(on_anvil, host):
    client, request, posted = await job(on_anvil, host)
    async with RawClient(host, client, posted, request) as raw:
        await raw.ws.send_json(raw.init(version=4))
        assert (await raw.refusal())["code"] == "UNSUPPORTED_VERSION"


async def test_a_request_sealed_under_other_keys_is_refused(on_anvil, host):
    client, request, posted = await job(on_anvil, host)
    async with RawClient(host, client, posted, request) as raw:
        # Keys for another challenge than this connection's.
        await raw.ws.send_json(raw.init(info=raw.info(nonce="00" * 16)))
        assert (await raw.refusal())["code"] == "E2E_BAD_KEY"


async def test_an_ephemeral_key_swapped_on_the_path_fails_the_signature(on_anvil, host):
    """Someone on the path who swaps in their own key and salt (and seals a resume
    under them, to read the tokens) does not hold the client's signature over them."""
    client, request, posted = await job(on_anvil, host)
    host_key = e2e.public_key(bytes.fromhex(host.node.public_key[2:]))
    async with RawClient(host, client, posted, request) as raw:
        theirs = e2e.client_handshake(host_key, raw.info())
        await raw.ws.send_json(raw.init(signed_for=theirs))
        assert (await raw.refusal())["code"] == "BAD_SIGNATURE"


async def test_a_key_that_is_no_point_on_the_curve_is_refused(on_anvil, host):
    client, request, posted = await job(on_anvil, host)
    async with RawClient(host, client, posted, request) as raw:
        init = raw.init()
        init["ephemeralKey"] = "0x02" + "ff" * 32  # x beyond the field: no such point
        await raw.ws.send_json(init)
        assert (await raw.refusal())["code"] == "E2E_BAD_KEY"


@pytest.mark.parametrize("extra", [{"compression": "gzip"},
                                   {"request": request_for("In clear.").model_dump(
                                       by_alias=True)}])
async def test_an_encrypted_init_with_clear_or_compressed_parts_is_refused(on_anvil, host,
                                                                           extra):
    client, request, posted = await job(on_anvil, host)
    async with RawClient(host, client, posted, request) as raw:
        await raw.ws.send_json(raw.init(**extra))
        refusal = await raw.refusal()
        assert refusal["code"] == "MALFORMED"
        assert "sealed and is never compressed" in refusal["message"]


@pytest.mark.parametrize(("attack", "code"), [
    ("tampered", "E2E_TAMPERED"),
    ("replayed", "E2E_REPLAYED"),
    ("skipped", "E2E_OUT_OF_ORDER"),
    ("version", "UNSUPPORTED_VERSION"),
    ("clear", "MALFORMED"),
])
async def test_a_bad_frame_from_the_client_ends_the_stream_with_its_code(on_anvil, host,
                                                                         attack, code):
    client, request, posted = await job(on_anvil, host, max_tokens=200)
    async with RawClient(host, client, posted, request) as raw:
        await raw.ws.send_json(raw.init())
        ack = raw.channel.seal(json.dumps({"type": "ack", "index": 0}).encode())
        frames = {
            "tampered": [ack[:-1] + bytes([ack[-1] ^ 1])],
            "replayed": [ack, ack],
            "skipped": [raw.channel.seal(b'{"type": "ack", "index": 1}')],
            "version": [bytes([4]) + ack[1:]],
        }
        if attack == "clear":
            await raw.ws.send_str(json.dumps({"type": "ack", "index": 0}))
        for frame in frames.get(attack, []):
            await raw.ws.send_bytes(frame)
        refusal = await raw.refusal()  # sealed: the session exists
        assert refusal["code"] == code, refusal


# ---- what the client refuses of the path --------------------------------------------------


def flip(data: bytes) -> bytes:
    return data[:-1] + bytes([data[-1] ^ 0x40])


async def through(proxy: RecordingProxy, host, client, request, posted, **kwargs):
    pieces: list[str] = []

    async def on_token(piece):
        pieces.append(piece)

    end = await stream_job(proxy.url, chain_job_id=posted.job_id,
                           chain_id=client.deployment.chain_id, node_id=host.address,
                           request=request, signer=signer_for(client), on_token=on_token,
                           **kwargs)
    return pieces, end


def on_host_frame(number: int, change):
    """A rewrite that applies `change` to the host's frame `number` of every connection."""

    def rewrite(sender, connection, index, data):
        if sender == HOST and index == number:
            return change(data)
        return [data]

    return rewrite


class Reorder:
    """Holds the host's frame 2 back and sends it after frame 3."""

    def __init__(self):
        self.held = None

    def __call__(self, sender, connection, index, data):
        if sender != HOST:
            return [data]
        if index == 2:
            self.held = data
            return []
        if index == 3:
            return [data, self.held]
        return [data]


@pytest.mark.parametrize(("rewrite", "code"), [
    (on_host_frame(3, lambda d: [flip(d)]), "E2E_TAMPERED"),
    (on_host_frame(3, lambda d: [d, d]), "E2E_REPLAYED"),
    (Reorder(), "E2E_OUT_OF_ORDER"),
    (on_host_frame(3, lambda d: []), "E2E_OUT_OF_ORDER"),  # a frame cut out
    (on_host_frame(3, lambda d: [bytes([9]) + d[1:]]), "UNSUPPORTED_VERSION"),
    (on_host_frame(3, lambda d: [json.dumps({"type": "token", "index": 1, "content": "x",
                                             "timestamp": 0.0})]), "HOST_MALFORMED"),
], ids=["tampered", "replayed", "reordered", "dropped", "version", "clear-injected"])
async def test_a_frame_altered_on_the_path_fails_the_stream_with_its_code(
        on_anvil, host, rewrite, code):
    client, request, posted = await job(on_anvil, host, max_tokens=24)
    proxy = await RecordingProxy(host.url, rewrite=rewrite).start()
    try:
        with pytest.raises(ClientError) as refused:
            await through(proxy, host, client, request, posted)
    finally:
        await proxy.stop()
    assert (refused.value.code, refused.value.permanent) == (code, False)


@pytest.mark.parametrize(("number", "code"), [(0, "E2E_BAD_KEY"), (3, "E2E_TAMPERED")])
async def test_a_frame_spliced_in_from_another_session_does_not_open(on_anvil, host, number,
                                                                     code):
    client, request, posted = await job(on_anvil, host, max_tokens=24)
    recorder = await RecordingProxy(host.url).start()
    try:
        await through(recorder, host, client, request, posted)
    finally:
        await recorder.stop()
    other = recorder.sent_by(HOST)[1:][number]  # the same place in the other session
    client, request, posted = await job(on_anvil, host, prompt="Name a fruit.", max_tokens=24)
    proxy = await RecordingProxy(host.url, rewrite=on_host_frame(
        number + 1, lambda d: [other])).start()  # frame 0 is the challenge, in clear
    try:
        with pytest.raises(ClientError) as refused:
            await through(proxy, host, client, request, posted)
    finally:
        await proxy.stop()
    assert refused.value.code == code


async def test_a_key_that_is_not_the_registered_addresss_gets_not_one_byte(on_anvil, host):
    """Someone on the path answers with a key of their own: the client sends nothing."""
    client, request, posted = await job(on_anvil, host)
    theirs = "0x" + e2e.compressed(e2e.new_ephemeral()).hex()

    def swap_key(sender, connection, index, data):
        if sender == HOST and index == 0:
            challenge = json.loads(data)
            return [json.dumps({**challenge, "publicKey": theirs})]
        return [data]

    proxy = await RecordingProxy(host.url, rewrite=swap_key).start()
    try:
        with pytest.raises(ClientError) as refused:
            await through(proxy, host, client, request, posted)
    finally:
        await proxy.stop()
    assert (refused.value.code, refused.value.permanent) == ("HOST_KEY_MISMATCH", False)
    assert proxy.sent_by(CLIENT) == []


async def test_a_host_that_offers_no_encryption_is_refused_before_anything_is_sent(
        on_anvil, host):
    client, request, posted = await job(on_anvil, host)

    def downgrade(sender, connection, index, data):
        if sender == HOST and index == 0:
            challenge = json.loads(data)
            del challenge["publicKey"]
            return [json.dumps({**challenge, "version": 2})]
        return [data]

    proxy = await RecordingProxy(host.url, rewrite=downgrade).start()
    try:
        with pytest.raises(ClientError) as refused:
            await through(proxy, host, client, request, posted)
    finally:
        await proxy.stop()
    assert refused.value.code == "HOST_NO_ENCRYPTION"
    assert proxy.sent_by(CLIENT) == []


async def test_a_stream_cut_before_its_end_is_never_taken_as_whole(on_anvil, host):
    client, request, posted = await job(on_anvil, host, max_tokens=24)
    proxy = await RecordingProxy(host.url, rewrite=lambda s, c, i, d: None
                                 if s == HOST and i == 6 else [d]).start()
    try:
        with pytest.raises(ClientError) as refused:
            await through(proxy, host, client, request, posted, max_resumes=0)
    finally:
        await proxy.stop()
    assert refused.value.code == "HOST_UNAVAILABLE"


async def test_a_resume_is_a_new_session_and_delivers_exactly_the_rest(on_anvil, host):
    client, request, posted = await job(on_anvil, host, prompt="Describe a harbour at dawn.",
                                        max_tokens=40)
    # The first connection is cut after the host's sixth frame (five sealed messages).
    proxy = await RecordingProxy(host.url, rewrite=lambda s, c, i, d: None
                                 if s == HOST and c == 1 and i == 6 else [d]).start()
    try:
        pieces, end = await through(proxy, host, client, request, posted)
    finally:
        await proxy.stop()
    assert proxy.connections == 2
    first, second = (json.loads(proxy.sent_by(CLIENT, c)[0]) for c in (1, 2))
    assert first["checkpoint"] is None and second["checkpoint"] >= 0
    # Its own keys: another ephemeral key, another salt, another challenge.
    assert first["ephemeralKey"] != second["ephemeralKey"]
    assert first["salt"] != second["salt"]
    assert end.tokens == len(pieces)
    assert "".join(pieces) == stored_text(host, end.cid, request, posted.job_id)


async def test_a_plaintext_stream_still_serves_a_client_that_turned_encryption_off(
        on_anvil, host):
    client, request, posted = await job(on_anvil, host)
    proxy = await RecordingProxy(host.url).start()
    try:
        pieces, end = await through(proxy, host, client, request, posted, encrypt=False)
    finally:
        await proxy.stop()
    init = json.loads(proxy.sent_by(CLIENT)[0])
    assert init["version"] == 2 and init["request"]["prompt"] == request.prompt
    assert "".join(pieces) == stored_text(host, end.cid, request, posted.job_id)
