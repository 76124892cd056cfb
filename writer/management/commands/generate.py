"""`manage.py generate`: run one job through the marketplace and print the text.

The text goes to stdout, a short summary to stderr, and logs to stderr at WARNING and
above (`-v` for INFO, `-vv` for DEBUG). `--json` prints the outcome as one JSON object
on stdout instead, failures included. The exit code says what failed (EXIT_CODES;
docs/writer.md, "From the command line").
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys

from django.core.management.base import BaseCommand

from accounts.money import coin_detail
from content.prompts import CONTENT_TYPES, LENGTHS, STYLES, build_prompt
from marketplace.client import pool
from marketplace.client.errors import ClientError
from marketplace.services import JobSpec, run_job
from marketplace.wallet import platform_chain

log = logging.getLogger(__name__)

OK = 0
FAILED = 1  # anything not below: a bug, or a state nobody planned for
USAGE = 2  # bad arguments (argparse's own code for them)
NO_HOSTS = 3  # no host serves the model within the limits
INSUFFICIENT_FUNDS = 4  # the platform wallet cannot pay the job's escrow and gas
ALL_HOSTS_FAILED = 5  # hosts were tried and none delivered a result that passed
CHAIN_UNAVAILABLE = 6  # the chain's node did not answer, or the contracts are missing
INTERRUPTED = 130  # Ctrl-C
EXIT_CODES = {"NO_HOSTS_AVAILABLE": NO_HOSTS, "INSUFFICIENT_FUNDS": INSUFFICIENT_FUNDS,
              "RPC_UNAVAILABLE": CHAIN_UNAVAILABLE, "CHAIN_UNAVAILABLE": CHAIN_UNAVAILABLE,
              "NOT_DEPLOYED": CHAIN_UNAVAILABLE, "CANCELLED": INTERRUPTED}
LOG_LEVELS = {0: logging.WARNING, 1: logging.INFO}


class Command(BaseCommand):
    help = ("Generate text through the marketplace: the text on stdout, a summary on stderr "
            "(or one JSON object with --json). Exit codes: 0 done, 2 bad arguments, 3 no "
            "hosts, 4 insufficient funds, 5 all hosts failed, 6 chain unavailable, 1 other.")

    def add_base_argument(self, parser, *args, **kwargs):
        # Django's -v takes a level (0-3); here -v is a plain flag, repeatable.
        if "--verbosity" in args:
            parser.add_argument("-v", "--verbose", action="count", default=0,
                                dest="verbosity",
                                help="log at INFO to stderr (-vv: DEBUG); WARNING otherwise")
            return
        super().add_base_argument(parser, *args, **kwargs)

    def add_arguments(self, parser):
        parser.add_argument("prompt")
        parser.add_argument("--type", choices=CONTENT_TYPES, default="blog", dest="content_type")
        parser.add_argument("--style", choices=STYLES, default="professional")
        parser.add_argument("--length", choices=LENGTHS, default="short")
        parser.add_argument("--model", default="smollm2-135m-instruct")
        parser.add_argument("--max-tokens", type=int, default=None)
        parser.add_argument("--temperature", type=float, default=0.7)
        parser.add_argument("--json", action="store_true", dest="as_json",
                            help="print the outcome as one JSON object on stdout")

    def handle(self, *args, prompt, content_type, style, length, model, max_tokens,
               temperature, as_json, verbosity, **options):
        logging.getLogger().setLevel(LOG_LEVELS.get(verbosity, logging.DEBUG))
        if not prompt.strip():
            self._fail(as_json, USAGE, "INVALID_REQUEST", "the prompt is empty")
        if max_tokens is not None and not 1 <= max_tokens <= 4096:
            self._fail(as_json, USAGE, "INVALID_REQUEST", "--max-tokens must be 1 to 4096")
        if not 0.0 <= temperature <= 2.0:
            self._fail(as_json, USAGE, "INVALID_REQUEST", "--temperature must be 0 to 2")
        spec = build_prompt(content_type, prompt, style=style, length=length)
        job = JobSpec(model=model, prompt=spec.text, max_tokens=max_tokens or spec.max_tokens,
                      temperature=temperature, content_type=content_type)
        try:
            outcome = asyncio.run(self._run(job))
        except ClientError as exc:
            code = EXIT_CODES.get(exc.code, ALL_HOSTS_FAILED)
            self._fail(as_json, code, exc.code, exc.message)
        except KeyboardInterrupt:
            self._fail(as_json, INTERRUPTED, "CANCELLED", "interrupted")
        text = spec.clean(outcome.text)
        if as_json:
            self._print_json({
                "ok": True, "text": text, "job_id": str(outcome.job_id), "model": outcome.model,
                "host": outcome.host, "tokens": outcome.tokens, "attempts": outcome.attempts,
                "cost_wei": str(outcome.cost_wei), "quality": outcome.quality,
                "verified": outcome.verified, "ttft_ms": outcome.ttft_ms,
                "tx_hashes": outcome.tx_hashes})
            return
        sys.stdout.write(text.rstrip("\n") + "\n")
        sys.stdout.flush()
        sys.stderr.write(
            f"{outcome.tokens} tokens from {outcome.host} in {outcome.attempts} "
            f"attempt{'s' if outcome.attempts != 1 else ''}; cost {coin_detail(outcome.cost_wei)}; "
            f"TTFT {outcome.ttft_ms} ms; quality {outcome.quality:.2f}"
            f"{'' if outcome.verified else ' (not verified)'}\n")

    def _fail(self, as_json: bool, exit_code: int, code: str, message: str):
        if as_json:
            self._print_json({"ok": False, "error": {"code": code, "message": message},
                              "exit_code": exit_code})
        else:
            sys.stderr.write(f"error: {code}: {message}\n")
        raise SystemExit(exit_code)

    @staticmethod
    def _print_json(body: dict) -> None:
        sys.stdout.write(json.dumps(body) + "\n")
        sys.stdout.flush()

    async def _run(self, job):
        try:
            return await run_job(job)  # a failover is logged by the runner, as a warning
        finally:
            try:
                chain = await platform_chain()
                await chain.close()
            except Exception:  # nothing opened to close, or the node is gone: nothing to do
                log.debug("no chain handle to close", exc_info=True)
            await pool.close()
