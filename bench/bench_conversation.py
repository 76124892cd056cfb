"""A 20-prompt conversation on payment channels, through the real flow: anvil with our
contracts, a host on the bundled model taking channels, the runner, the verifier, the
vouchers in the stream, and the host's close at the end.

- `session txs per prompt` and `session gas per prompt`: every transaction of the
  conversation, the channel's open and the host's close counted, over its 20 prompts.
  Baseline in the same run: one prompt through the per-job flow (post, claim, submit,
  accept).
- `session added ttft ms`: prompts 2 to 20, the client's time to first token (from the
  call to run_job) less the host's own (from the request's arrival to its first token),
  with the client's discovery cache as the product keeps it (10 s: the prompts of this
  conversation come faster). `... discovery each prompt` empties that cache before each
  prompt: the chain's registry and the host's capabilities read again, as for a
  conversation whose turns are more than 10 s apart.
- The first prompt to a host with no channel: waiting for the open against going per-job
  (MARKETPLACE_CHANNEL_FIRST_PROMPT), each the median of 3.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

from bench.bench_client import setup_django

PROMPTS = 20
MAX_TOKENS = 24
QUESTIONS = ["Name a colour.", "Why is the sky blue?", "Say it shorter.",
             "Now more formally.", "Give one example."]


async def main(var_dir: Path) -> None:
    from asgiref.sync import sync_to_async
    from django.conf import settings

    from bench.chainkit import BenchMarket
    from bench.common import report
    from marketplace import wallet
    from marketplace.client import discovery, pool
    from marketplace.models import PaymentChannel, PaymentChannelState
    from marketplace.services import JobSpec, run_job

    market = BenchMarket(var_dir)
    try:
        await market.start()
        node = market.node
        backend = node.backend
        platform = await wallet.platform_chain()
        w3 = platform.w3
        ours = {platform.address.lower(), node.address.lower()}

        async def first_token_ms(spec: JobSpec, *, fresh: bool = True) -> float:
            first: list[float] = []

            async def on_token(index, text):
                if not first:
                    first.append(time.perf_counter())

            if fresh:
                discovery.invalidate()  # the prompt discovers hosts as a new client would
            started = time.perf_counter()
            await run_job(spec, on_token=on_token)
            return (first[0] - started) * 1000

        def forget_channels() -> None:
            # Our side forgets its channels, so the next prompt finds none and opens one.
            PaymentChannel.objects.update(state=PaymentChannelState.FAILED)

        async def txs_since(block: int) -> tuple[int, int]:
            count = gas = 0
            for number in range(block + 1, await w3.eth.block_number + 1):
                for tx in (await w3.eth.get_block(number, full_transactions=True))[
                        "transactions"]:
                    if tx["from"].lower() in ours:
                        count += 1
                        gas += (await w3.eth.get_transaction_receipt(tx["hash"]))["gasUsed"]
            return count, gas

        warm = JobSpec(model=backend.model_id, prompt="Say hello.", max_tokens=MAX_TOKENS,
                       temperature=0.0)
        settings.MARKETPLACE_CHANNELS = False
        await run_job(warm)  # warm-up: connections, the model, first queries
        block = await w3.eth.block_number
        await run_job(warm)
        per_job_txs, per_job_gas = await txs_since(block)
        for _ in range(5):  # the host's per-job submissions land a moment after the job
            await asyncio.sleep(0.2)
            per_job_txs, per_job_gas = await txs_since(block)

        # The first prompt to a host with no channel, both ways.
        first_per_job, first_wait = [], []
        for n in range(3):
            spec = JobSpec(model=backend.model_id, prompt=f"Name a fruit, {n}.",
                           max_tokens=MAX_TOKENS, temperature=0.0)
            settings.MARKETPLACE_CHANNELS = False
            first_per_job.append(await first_token_ms(spec))
            settings.MARKETPLACE_CHANNELS = True
            settings.MARKETPLACE_CHANNEL_FIRST_PROMPT = "wait"
            await sync_to_async(forget_channels)()
            first_wait.append(await first_token_ms(spec))

        # The conversation, on a channel of its own from its first prompt to the close.
        await sync_to_async(forget_channels)()
        block = await w3.eth.block_number
        context = ""
        added: list[float] = []
        added_fresh: list[float] = []
        for n in range(2 * PROMPTS):
            question = QUESTIONS[n % len(QUESTIONS)]
            prompt = f"{context}User: {question}\nAssistant:"
            spec = JobSpec(model=backend.model_id, prompt=prompt[-4000:],
                           max_tokens=MAX_TOKENS, temperature=0.0, session="bench")
            fresh = n >= PROMPTS  # the same conversation's next 20 prompts, rediscovering
            client_ms = await first_token_ms(spec, fresh=fresh)
            session = max((s for s in node.sessions.values() if s.channel_id is not None),
                          key=lambda s: s.opened_at)
            host_ms = (session.timestamps[0] - session.opened_at) * 1000
            if n > 0:
                (added_fresh if fresh else added).append(client_ms - host_ms)
            context = f"{prompt} {session.text}\n"
            if n == PROMPTS - 1:  # the 20-prompt conversation ends: the host closes
                channel = await PaymentChannel.objects.aget(state=PaymentChannelState.OPEN)
                await node.channel_watch.redeem(channel.channel_id)
                txs, gas = await txs_since(block)
                await sync_to_async(forget_channels)()

        report("session txs per prompt", round(txs / PROMPTS, 3), "txs (target <= 0.1)")
        report("session gas per prompt", gas // PROMPTS, "gas (target <= 15,000)")
        report("per-job txs per prompt (baseline)", per_job_txs, "txs")
        report("per-job gas per prompt (baseline)", per_job_gas, "gas")
        report("session gas ratio vs per-job", round(gas / PROMPTS / per_job_gas, 3))
        report("session added ttft ms", round(statistics.median(added), 1),
               "ms (median of prompts 2-20; target <= 30)")
        report("session added ttft ms p90", round(statistics.quantiles(added, n=10)[-1], 1),
               "ms")
        report("session added ttft ms, discovery each prompt",
               round(statistics.median(added_fresh), 1), "ms (median of prompts 22-40)")
        report("first prompt ttft ms, waiting for the channel's open",
               round(statistics.median(first_wait), 1), "ms")
        report("first prompt ttft ms, per-job", round(statistics.median(first_per_job), 1),
               "ms")
        await platform.close()
        await pool.close()
    finally:
        await market.close()


if __name__ == "__main__":
    directory = Path(tempfile.mkdtemp(prefix="bench-conversation-"))
    setup_django(directory)
    sys.exit(asyncio.run(main(directory)))
