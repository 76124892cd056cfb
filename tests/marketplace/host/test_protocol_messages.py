"""What the host sends matches the shapes in marketplace.protocol that clients rely on."""

import aiohttp

from marketplace.client.stream import ws_url
from marketplace.protocol import (
    Capabilities,
    Challenge,
    Control,
    HostMessage,
    QuoteResponse,
    TokenMessage,
    challenge_message,
)
from tests.marketplace.host.conftest import post_for, request_for, signer_for


async def test_every_stream_message_has_a_protocol_shape(on_anvil, host):
    client = on_anvil.chain("platform")
    request = request_for("Name a planet.", max_tokens=12)
    posted = await post_for(client, host.address, request)
    sign = signer_for(client)
    received = []
    async with aiohttp.ClientSession() as http, http.ws_connect(ws_url(host.url)) as ws:
        challenge = HostMessage.validate_python(await ws.receive_json())
        assert isinstance(challenge, Challenge)
        await ws.send_json({"type": "init", "version": 2, "jobId": posted.job_id,
                            "nodeId": host.address, "request": request.model_dump(by_alias=True),
                            "signature": sign(challenge_message(challenge.nonce, posted.job_id,
                                                                host.address))})
        while True:
            message = HostMessage.validate_python(await ws.receive_json())
            received.append(message)
            if message.type == "end":
                break
    tokens = [m for m in received if isinstance(m, TokenMessage)]
    assert [t.index for t in tokens] == list(range(len(tokens)))
    end = received[-1]
    assert isinstance(end, Control)
    assert end.data["tokens"] == len(tokens)
    assert set(end.data) >= {"resultHash", "cid", "cancelled"}


async def test_capabilities_and_quotes_have_protocol_shapes(host):
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{host.url}/v1/capabilities") as r:
            caps = Capabilities.model_validate(await r.json())
        assert caps.load.slots == 4
        async with http.post(f"{host.url}/v1/quote", json={
                "model": caps.models[0].id, "maxTokens": 10, "maxPricePerToken": "1"}) as r:
            counter = QuoteResponse.model_validate(await r.json())
        assert not counter.accepted and counter.counter.price_per_token == "1000000000"
        async with http.post(f"{host.url}/v1/quote", json={
                "model": caps.models[0].id, "maxTokens": 10,
                "maxPricePerToken": counter.counter.price_per_token}) as r:
            accepted = QuoteResponse.model_validate(await r.json())
        assert accepted.accepted and accepted.terms.max_tokens == 10
