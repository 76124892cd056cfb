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
    from django.conf import settings

    from bench.bench_host import direct
    from bench.chainkit import BenchMarket
    from bench.common import report
    from marketplace import wallet
    from marketplace.client import discovery, pool
    from marketplace.protocol import GenerationRequest
    from marketplace.services import JobSpec, run_job

    market = BenchMarket(var_dir)
    try:
        await market.start()
        # The per-job flow (post with escrow, claim, submit, accept); bench_conversation
        # measures the payment channels.
        settings.MARKETPLACE_CHANNELS = False
        node = market.node
        backend = node.backend
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
        await platform.close()
        await pool.close()
    finally:
        await market.close()


if __name__ == "__main__":
    directory = Path(tempfile.mkdtemp(prefix="bench-client-"))
    setup_django(directory)
    sys.exit(asyncio.run(main(directory)))
