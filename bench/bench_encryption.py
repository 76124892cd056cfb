"""What end-to-end encryption (protocol 3, marketplace.e2e) costs.

- per request: the work a connection adds on both sides (the client checks the host's
  key against its address, makes its ephemeral key, derives the keys and seals the
  request; the host derives the same keys and opens it), timed alone; and the time to
  first token through a real host (the bundled model) with and without encryption,
  interleaved in the same run, as the end-to-end check of that figure;
- per token: sealing and opening one real token message, and the bytes a sealed frame
  adds to the same message in a plaintext frame.

The host's throughput against llama.cpp direct, encrypted, is bench_host's
`host throughput ratio` (its client encrypts, as every client does by default).
"""

from __future__ import annotations

import asyncio
import json
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
from marketplace import e2e
from marketplace.client import pool
from marketplace.client.stream import stream_job
from marketplace.host.backends import LlamaCppBackend
from marketplace.host.cid import ResultStore
from marketplace.host.server import HostConfig, HostNode
from marketplace.protocol import GenerationRequest

HANDSHAKES = 2000
TOKENS = 20000
TTFT_ROUNDS = 20
REQUEST = GenerationRequest(model="smollm2-135m-instruct",
                            prompt="Write a short paragraph about walking in the mountains.",
                            maxTokens=4, temperature=0.0)


def handshake_ms(host: e2e.PrivateKey, address: str) -> float:
    """Median ms of one connection's encryption work, client and host together."""
    public = "0x" + e2e.compressed(host).hex()
    opening = json.dumps({"type": "open", "request": REQUEST.model_dump(by_alias=True)})
    times = []
    for job_id in range(HANDSHAKES):
        started = time.perf_counter()
        info = e2e.info(chain_id=31337, job_id=job_id + 1, host_address=address,
                        nonce="ab" * 16)
        client = e2e.client_handshake(e2e.host_key_check(public, address), info)
        sealed = client.channel.seal(opening.encode())
        channel = e2e.host_channel(host, client.ephemeral, client.salt, info)
        channel.open(sealed)
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000


def token_messages() -> list[bytes]:
    """Token messages as the host sends them (marketplace.host.server._serve)."""
    words = (" the", " mountain", " path", ",", " and", " walking", " quiet", ".",
             " air", " feels")
    return [json.dumps({"type": "token", "index": i, "content": words[i % len(words)],
                        "timestamp": time.time(),
                        "metadata": {"id": 1000 + i % 4000, "logprob": -1.2345678 * (i % 7)}}
                       ).encode() for i in range(TOKENS)]


def per_token(host: e2e.PrivateKey, address: str) -> tuple[float, float]:
    """(µs to seal and open one token message, bytes a sealed frame adds to it)."""
    info = e2e.info(chain_id=31337, job_id=1, host_address=address, nonce="ab" * 16)
    client = e2e.client_handshake(e2e.public_key(e2e.compressed(host)), info)
    channel = e2e.host_channel(host, client.ephemeral, client.salt, info)
    messages = token_messages()
    started = time.perf_counter()
    frames = [channel.seal(m) for m in messages]
    for frame in frames:
        client.channel.open(frame)
    elapsed = time.perf_counter() - started
    added = statistics.mean(len(f) - len(m) for f, m in zip(frames, messages, strict=True))
    return elapsed / len(messages) * 1e6, added


async def ttft(url: str, address: str, client, encrypt: bool) -> float:
    request = REQUEST.model_copy(update={"seed": os.urandom(32).hex()})
    posted = await client.post_job(model=request.model, prompt_hash=request.digest(),
                                   max_tokens=request.max_tokens,
                                   max_price_per_token_wei=2 * 10**9,
                                   deadline=await client.block_time() + 600, host=address)
    for _ in range(400):  # the host's watcher claims it; the timing starts after
        job = await client.get_job(posted.job_id)
        if job.host.lower() == address.lower() and int(job.status) == 2:
            break
        await asyncio.sleep(0.01)
    account = client.sender.account
    first: list[float] = []

    async def on_token(piece):
        if not first:
            first.append(time.perf_counter())

    started = time.perf_counter()
    await stream_job(url, chain_job_id=posted.job_id, chain_id=client.deployment.chain_id,
                     node_id=address, request=request, encrypt=encrypt, on_token=on_token,
                     signer=lambda t: "0x" + account.sign_message(
                         encode_defunct(text=t)).signature.hex().removeprefix("0x"))
    return (first[0] - started) * 1000


async def end_to_end() -> tuple[float, float, float]:
    """Median ttft through a real host, encrypted and plaintext, and the median of their
    differences, pair by pair (each pair run back to back, so drift hits both alike)."""
    net = BenchChain()
    try:
        await net.deploy()
        chain = net.chain("host-1")
        port = free_port()
        node = HostNode(backend=LlamaCppBackend(), chain=chain,
                        store=ResultStore(Path(tempfile.mkdtemp()) / "results"),
                        config=HostConfig(public_url=f"http://127.0.0.1:{port}",
                                          price_per_token_wei=10**9, withdraw_every_s=3600))
        runner = node.runner()
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        url = f"http://127.0.0.1:{port}"
        client = net.chain("platform")
        await ttft(url, node.address, client, True)  # warm-up, both paths
        await ttft(url, node.address, client, False)
        sealed, plain = [], []
        for round_ in range(TTFT_ROUNDS):
            # Which goes first alternates: the second of two runs of the same prompt may
            # find the model's caches warmer.
            if round_ % 2:
                plain.append(await ttft(url, node.address, client, False))
                sealed.append(await ttft(url, node.address, client, True))
            else:
                sealed.append(await ttft(url, node.address, client, True))
                plain.append(await ttft(url, node.address, client, False))
        await runner.cleanup()
        await client.close()
        await pool.close()
        return (statistics.median(sealed), statistics.median(plain),
                statistics.median(a - b for a, b in zip(sealed, plain, strict=True)))
    finally:
        net.close()


def main() -> None:
    host = e2e.private_key(os.urandom(32))
    address = e2e.address_of(e2e.public_key(e2e.compressed(host)))
    report("encryption added ms per request", handshake_ms(host, address), "ms")
    us, added = per_token(host, address)
    report("encryption us per token", us, "us")
    report("encryption bytes per token", added, "bytes")
    sealed, plain, added = asyncio.run(end_to_end())
    report("encrypted stream ttft", sealed, "ms")
    report("plaintext stream ttft", plain, "ms")
    report("encryption added ttft ms end to end", added, "ms")
    report("load average", os.getloadavg()[0])


if __name__ == "__main__":
    # The client bounds what hosts send (and checks their URLs) by Django's settings; the
    # development settings allow the loopback host this benchmark runs.
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.dev")
    import django

    django.setup()
    threading.excepthook = lambda args: None
    main()
