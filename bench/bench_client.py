"""The whole marketplace path against calling the model directly, same prompt, same run:
discover, negotiate, post with escrow, claim, stream, submit, verify, accept (the per-job
flow; bench_conversation measures the payment channels). Reports the
added time to first token, the total time ratio, the chain transactions per job, and
where the time goes (from the job's state changes)."""

from __future__ import annotations

import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROUNDS = 5
PROMPT = "Write two sentences about why maps are useful."
MAX_TOKENS = 64


def setup_django(var_dir: Path) -> None:
    os.environ["DJANGO_SETTINGS_MODULE"] = "config.settings.dev"
    os.environ["VAR_DIR"] = str(var_dir)
    os.environ["LOG_LEVEL"] = "ERROR"
    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", verbosity=0)


async def main(var_dir: Path) -> None:
    from aiohttp import web
    from django.conf import settings

    from bench.bench_host import direct
    from bench.chainkit import BenchChain
    from bench.common import free_port, report
    from marketplace import wallet
    from marketplace.client import discovery, pool
    from marketplace.host.backends import LlamaCppBackend
    from marketplace.host.cid import ResultStore
    from marketplace.host.server import HostConfig, HostNode
    from marketplace.protocol import GenerationRequest
    from marketplace.services import JobSpec, run_job

    net = BenchChain()
    try:
        await net.deploy()
        (var_dir / "deployments").mkdir()
        (var_dir / "deployments" / "31337.json").write_text(net.deployment.to_json())
        settings.CHAIN_RPC = net.url
        settings.CHAIN_DEPLOYMENTS_DIR = var_dir / "deployments"
        settings.WALLET_KEYSTORE_FILE = str(net.keys["platform"].keystore)
        settings.WALLET_PASSPHRASE_FILE = str(net.keys["platform"].passphrase_file)
        # The per-job flow (post with escrow, claim, submit, accept); bench_conversation
        # measures the payment channels.
        settings.MARKETPLACE_CHANNELS = False

        backend = LlamaCppBackend()
        port = free_port()
        node = HostNode(backend=backend, chain=net.chain("host-1"),
                        store=ResultStore(var_dir / "results"),
                        config=HostConfig(public_url=f"http://127.0.0.1:{port}",
                                          price_per_token_wei=10**9, withdraw_every_s=3600))
        runner = web.AppRunner(node.app())
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        request = GenerationRequest(model=backend.model_id, prompt=PROMPT,
                                    maxTokens=MAX_TOKENS, temperature=0.0)
        platform = await wallet.platform_chain()
        spec = JobSpec(model=backend.model_id, prompt=PROMPT, max_tokens=MAX_TOKENS,
                       temperature=0.0)
        await direct(backend, node.worker, request)  # warm-up
        await run_job(spec)  # warm-up: connections, first queries
        direct_runs, path_runs, txs, phases = [], [], [], []
        for _ in range(ROUNDS):
            direct_runs.append(await direct(backend, node.worker, request))
            discovery.invalidate()  # each job discovers hosts as a fresh client would
            marks: dict[str, float] = {}
            first: list[float] = []

            async def on_token(index, text, first=first):
                if not first:
                    first.append(time.perf_counter())

            async def on_state(state, detail, marks=marks):
                marks.setdefault(state, time.perf_counter())

            block = await platform.w3.eth.block_number
            started = time.perf_counter()
            await run_job(spec, on_token=on_token, on_state=on_state)
            total = time.perf_counter() - started
            path_runs.append(((first[0] - started) * 1000, total))
            txs.append(await platform.w3.eth.block_number - block)  # anvil: 1 tx a block
            phases.append({k: (v - started) * 1000 for k, v in marks.items()})
        d_ttft = statistics.median(r[0] for r in direct_runs)
        d_total = statistics.median(r[2] / r[1] for r in direct_runs)  # tokens / tok/s
        p_ttft = statistics.median(r[0] for r in path_runs)
        p_total = statistics.median(r[1] for r in path_runs)
        report("direct ttft", d_ttft, "ms")
        report("direct total time", d_total * 1000, "ms")
        report("client path ttft", p_ttft, "ms")
        report("client path total time", p_total * 1000, "ms")
        report("client added ttft ms", p_ttft - d_ttft, "ms")
        report("client total time ratio", p_total / d_total)
        report("chain txs per job", statistics.median(txs), "txs")
        for state in ("POSTED", "CLAIMED", "STREAMING", "COMPLETED"):
            values = [p[state] for p in phases if state in p]
            if values:
                report(f"client time to {state.lower()}", statistics.median(values), "ms")
        await runner.cleanup()
        await platform.close()
        await pool.close()
    finally:
        net.close()


if __name__ == "__main__":
    directory = Path(tempfile.mkdtemp(prefix="bench-client-"))
    setup_django(directory)
    sys.exit(asyncio.run(main(directory)))
