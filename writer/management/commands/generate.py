"""`manage.py generate`: run one job through the marketplace and print it as it streams."""

import asyncio
import sys

from django.core.management.base import BaseCommand, CommandError

from content.prompts import CONTENT_TYPES, LENGTHS, STYLES, build_prompt
from marketplace.chain.errors import ChainError
from marketplace.client import pool
from marketplace.client.errors import ClientError
from marketplace.services import JobSpec, run_job
from marketplace.wallet import platform_chain


class Command(BaseCommand):
    help = "Generate text through the marketplace, printing tokens as they arrive."

    def add_arguments(self, parser):
        parser.add_argument("prompt")
        parser.add_argument("--type", choices=CONTENT_TYPES, default="blog", dest="content_type")
        parser.add_argument("--style", choices=STYLES, default="professional")
        parser.add_argument("--length", choices=LENGTHS, default="short")
        parser.add_argument("--model", default="smollm2-135m-instruct")
        parser.add_argument("--max-tokens", type=int, default=None)
        parser.add_argument("--temperature", type=float, default=0.7)

    def handle(self, *args, prompt, content_type, style, length, model, max_tokens,
               temperature, **options):
        if not prompt.strip():
            raise CommandError("the prompt is empty")
        spec = build_prompt(content_type, prompt, style=style, length=length)
        job = JobSpec(model=model, prompt=spec.text, max_tokens=max_tokens or spec.max_tokens,
                      temperature=temperature, content_type=content_type)
        try:
            outcome = asyncio.run(self._run(job))
        except (ClientError, ChainError) as exc:
            raise CommandError(f"{exc.code}: {exc.message}") from None
        out = self.stdout
        out.write("\n\n---")
        out.write(f"host:    {outcome.host}")
        out.write(f"model:   {outcome.model}")
        out.write(f"tokens:  {outcome.tokens}   quality: {outcome.quality:.2f}   "
                  f"attempts: {outcome.attempts}")
        out.write(f"cost:    {outcome.cost_wei} wei ({outcome.cost_wei / 10**18:.12f} ETH)")
        out.write(f"ttft:    {outcome.ttft_ms} ms")
        for tx in outcome.tx_hashes:
            out.write(f"tx:      {tx}")

    async def _run(self, job):
        async def on_token(index, text):
            sys.stdout.write(text)
            sys.stdout.flush()

        async def on_state(state, detail):
            if state in ("FAILOVER", "REWOUND"):
                sys.stdout.write(f"\n[{state.lower()}: {detail}]\n")

        try:
            return await run_job(job, on_token=on_token, on_state=on_state)
        finally:
            chain = await platform_chain()
            await chain.close()
            await pool.close()
