"""A real host (the bundled SmolLM2 model on llama.cpp) against a real anvil chain."""

from __future__ import annotations

import pytest
from aiohttp import web
from eth_account.messages import encode_defunct

from marketplace.chain.contracts import Chain
from marketplace.e2e import open_result, result_key
from marketplace.host.backends import LlamaCppBackend
from marketplace.host.cid import ResultStore
from marketplace.host.server import HostConfig, HostNode
from marketplace.protocol import GenerationRequest
from tests.conftest import free_port

MODEL = "smollm2-135m-instruct"
PRICE = 10**9


@pytest.fixture(scope="session")
def llama():
    return LlamaCppBackend()


class RunningHost:
    def __init__(self, node: HostNode, url: str, runner: web.AppRunner):
        self.node = node
        self.url = url
        self.runner = runner

    @property
    def address(self) -> str:
        return self.node.address


async def start_host(on_anvil, backend, role="host-1", price=PRICE, capacity=8,
                     tmp_path=None, chain: Chain | None = None, **config) -> RunningHost:
    """A host serving on 127.0.0.1; `config` overrides HostConfig's defaults."""
    chain = chain or on_anvil.chain(role)
    port = free_port()
    node = HostNode(backend=backend, chain=chain, store=ResultStore(tmp_path / role),
                    config=HostConfig(public_url=f"http://127.0.0.1:{port}",
                                      price_per_token_wei=price, capacity=capacity,
                                      withdraw_every_s=3600, **config))
    runner = node.runner()
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return RunningHost(node, f"http://127.0.0.1:{port}", runner)


@pytest.fixture
async def host(on_anvil, llama, tmp_path):
    running = await start_host(on_anvil, llama, tmp_path=tmp_path)
    yield running
    await running.runner.cleanup()


def request_for(prompt: str, max_tokens: int = 24, **kwargs) -> GenerationRequest:
    return GenerationRequest(model=MODEL, prompt=prompt, maxTokens=max_tokens,
                             temperature=0.0, **kwargs)


async def post_for(client: Chain, host_address: str | None, request: GenerationRequest,
                   ttl: int = 300):
    return await client.post_job(
        model=request.model, prompt_hash=request.digest(), max_tokens=request.max_tokens,
        max_price_per_token_wei=2 * PRICE, deadline=await client.block_time() + ttl,
        host=host_address)


def signer_for(client: Chain):
    account = client.sender.account

    def sign(text: str) -> str:
        return "0x" + account.sign_message(encode_defunct(text=text)).signature.hex().removeprefix(
            "0x")

    return sign


def stored_text(host: RunningHost, cid: str, request: GenerationRequest, chain_job_id: int) -> str:
    """A result the host stored, opened with the job's key (the host keeps it sealed)."""
    key = result_key(bytes.fromhex(request.seed), host.node.chain.deployment.chain_id,
                     chain_job_id)
    return open_result(host.node.store.get(cid), key)
