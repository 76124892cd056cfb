"""The host's overhead: tokens per second and time to first token through its WebSocket,
against calling llama.cpp directly on the same prompt and settings, in the same run; then
four clients at once against one stream alone. Streams are encrypted end to end, as every
client's are by default (protocol 3, docs/encryption.md)."""

from __future__ import annotations

import asyncio
import os
import statistics
import tempfile
import threading
import time
from pathlib import Path

from aiohttp import web
from eth_account.messages import encode_defunct

from bench.chainkit import BenchChain
from bench.common import free_port, report
from marketplace.client import pool
from marketplace.client.stream import stream_job
from marketplace.host.backends import LlamaCppBackend
from marketplace.host.cid import ResultStore
from marketplace.host.server import HostConfig, HostNode
from marketplace.host.worker import ModelWorker
from marketplace.protocol import GenerationRequest

PROMPT = "Write a short paragraph about why people enjoy walking in the mountains."
MAX_TOKENS = 128
ROUNDS = 3
CONCURRENT_ROUNDS = 2
TOPICS = [
    "Write a short paragraph about why people enjoy walking in the mountains.",
    "Write a short paragraph about what makes a good cup of coffee.",
    "Write a short paragraph about the history of the bicycle.",
    "Write a short paragraph about how to keep a small garden healthy.",
]


def request(prompt: str = PROMPT) -> GenerationRequest:
    return GenerationRequest(model="smollm2-135m-instruct", prompt=prompt,
                             maxTokens=MAX_TOKENS, temperature=0.0)


async def direct(backend: LlamaCppBackend, worker: ModelWorker,
                 req: GenerationRequest) -> tuple[float, float, int]:
    """llama-cpp-python's own streaming completion on the same model and prompt, with no
    host around it, run on the model's thread (so both sides avoid the OpenMP thrash)."""

    def generate() -> tuple[float, float, int]:
        started = time.perf_counter()
        first = None
        count = 0
        for _ in backend.stream(req, threading.Event()):
            if first is None:
                first = time.perf_counter()
            count += 1
        elapsed = time.perf_counter() - started
        return (first - started) * 1000, count / elapsed, count

    return await asyncio.wrap_future(worker.call(generate))


async def prepare(address, client, req):
    """Post the job and wait until the host's watcher has claimed it."""
    posted = await client.post_job(model=req.model, prompt_hash=req.digest(),
                                   max_tokens=req.max_tokens, max_price_per_token_wei=2 * 10**9,
                                   deadline=await client.block_time() + 600, host=address)
    for _ in range(400):  # the host's watcher claims it; the timing starts after
        if (await client.get_job(posted.job_id)).host.lower() == address.lower() and \
                int((await client.get_job(posted.job_id)).status) == 2:
            break
        await asyncio.sleep(0.01)
    return posted


async def via_host(url, address, client, req, posted=None) -> tuple[float, float, int]:
    posted = posted or await prepare(address, client, req)
    account = client.sender.account
    first: list[float] = []
    count = 0

    async def on_token(piece):
        nonlocal count
        if not first:
            first.append(time.perf_counter())
        count += 1

    started = time.perf_counter()
    await stream_job(url, chain_job_id=posted.job_id, chain_id=client.deployment.chain_id,
                     node_id=address, request=req,
                     signer=lambda t: "0x" + account.sign_message(
                         encode_defunct(text=t)).signature.hex().removeprefix("0x"),
                     on_token=on_token)
    elapsed = time.perf_counter() - started
    return (first[0] - started) * 1000, count / elapsed, count


async def main() -> None:
    net = BenchChain()
    try:
        await net.deploy()
        backend = LlamaCppBackend()
        chain = net.chain("host-1")
        port = free_port()
        node = HostNode(backend=backend, chain=chain,
                        store=ResultStore(Path(tempfile.mkdtemp()) / "results"),
                        config=HostConfig(public_url=f"http://127.0.0.1:{port}",
                                          price_per_token_wei=10**9, withdraw_every_s=3600))
        runner = web.AppRunner(node.app())
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        url = f"http://127.0.0.1:{port}"
        client = net.chain("platform")
        worker = node.worker

        await direct(backend, worker, request())  # warm-up, both paths
        await via_host(url, node.address, client, request())
        direct_runs, host_runs = [], []
        for _ in range(ROUNDS):  # interleaved so drift hits both alike
            direct_runs.append(await direct(backend, worker, request()))
            host_runs.append(await via_host(url, node.address, client, request()))
        d_ttft = statistics.median(r[0] for r in direct_runs)
        d_tps = statistics.median(r[1] for r in direct_runs)
        h_ttft = statistics.median(r[0] for r in host_runs)
        h_tps = statistics.median(r[1] for r in host_runs)
        report("direct llama.cpp tokens per second", d_tps, "tok/s")
        report("direct llama.cpp ttft", d_ttft, "ms")
        report("host websocket tokens per second", h_tps, "tok/s")
        report("host websocket ttft", h_ttft, "ms")
        report("host throughput ratio", h_tps / d_tps)
        report("load average before", os.getloadavg()[0])
        report("host added ttft ms", h_ttft - d_ttft, "ms")

        # Four different prompts that each run to the token limit, served one after
        # another (the single-stream rate) and then all at once, alternating.
        clients = [net.chain(role) for role in ("platform", "host-2", "host-3", "host-4")]
        singles, aggregates, concurrent = [], [], []
        for _ in range(CONCURRENT_ROUNDS):
            tokens = elapsed = 0.0
            # One request per job: each carries its own secret seed, in the prompt hash.
            for c, p in zip(clients, TOPICS, strict=True):
                req = request(p)
                posted = await prepare(node.address, c, req)
                started = time.perf_counter()
                tokens += (await via_host(url, node.address, c, req, posted))[2]
                elapsed += time.perf_counter() - started
            singles.append(tokens / elapsed)
            reqs = [request(p) for p in TOPICS]
            posted = [await prepare(node.address, c, req)
                      for c, req in zip(clients, reqs, strict=True)]
            started = time.perf_counter()
            results = await asyncio.gather(*(
                via_host(url, node.address, c, req, job)
                for c, req, job in zip(clients, reqs, posted, strict=True)))
            wall = time.perf_counter() - started
            aggregates.append(sum(r[2] for r in results) / wall)
            concurrent.append(results)
        single = statistics.median(singles)
        aggregate = statistics.median(aggregates)
        results = concurrent[aggregates.index(statistics.median_low(aggregates))]
        report("host single stream tokens per second", single, "tok/s")
        report("host concurrent aggregate tokens per second", aggregate, "tok/s")
        report("host concurrent aggregate ratio", aggregate / single)
        for i, r in enumerate(results, 1):
            report(f"host concurrent client {i} ttft", r[0], "ms")
            report(f"host concurrent client {i} tokens", r[2], "tokens")
        report("load average after", os.getloadavg()[0])
        await runner.cleanup()
        for c in [client, *clients]:
            await c.close()
        await pool.close()
    finally:
        net.close()


if __name__ == "__main__":
    # The client bounds what hosts send (and checks their URLs) by Django's settings; the
    # development settings allow the loopback host this benchmark runs.
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.dev")
    import django

    django.setup()
    threading.excepthook = lambda args: None
    asyncio.run(main())
