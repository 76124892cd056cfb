"""What the gateway adds to a request: an upstream that answers at once, called directly and
through `/v1/inference` and `/v1/chat/completions`, at a fixed arrival rate (open loop),
same run, the same CLIENTS clients taken in turn, each target warmed at its rate first.

The gateway runs as in production: uvicorn with one worker per core, PostgreSQL, Redis
(rate limits, cache), each request authenticated, limited, reserved, settled and recorded.
Every prompt is new, so no request is a cache hit. Added = through − direct, at p50 and p95.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import tempfile
import time
import uuid

import aiohttp

from bench.common import (
    ROOT,
    ensure_database,
    free_port,
    percentile,
    process,
    report,
    wait_answering,
)

RATES = (50, 200)
SECONDS = 8.0
WARMUP_S = 2.0
WORKERS = os.cpu_count() or 2
CLIENTS = 16
DATABASE = "inkmarket_bench"
# GATEWAY_SYNCHRONOUS_COMMIT=1 in the environment measures commits that wait for the disk.
DB_URL = os.environ.get("BENCH_DATABASE_URL",
                        f"postgres://postgres@127.0.0.1:5432/{DATABASE}")
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/9")
MODEL = "smollm2-135m-instruct"

SETUP = """
from accounts.models import Account
from accounts.services import account_set_tier, api_key_create, balance_deposit, user_create
from accounts.models import User
user = User.objects.filter(username="bench").first() or user_create(
    username="bench", password="bench-password-1")
account = Account.objects.get(user=user)
account_set_tier(account, tier="premium")
balance_deposit(account, amount_wei=10**30)
print(api_key_create(user=user, name="bench").raw)
"""


async def load(sessions: list[aiohttp.ClientSession], url: str, make_body, headers: dict,
               rate: float, seconds: float) -> list[float]:
    """Send `rate` requests a second for `seconds`, each at its own planned time whatever
    the answers before it did (open loop), taking the clients (`sessions`) in turn, and
    return each one's latency in seconds."""
    latencies: list[float] = []
    errors: dict[int, int] = {}
    sample: list[bytes] = []

    async def one(planned: float, session: aiohttp.ClientSession) -> None:
        delay = planned - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        started = time.perf_counter()
        async with session.post(url, json=make_body(), headers=headers) as response:
            body = await response.read()
            if response.status != 200:
                errors[response.status] = errors.get(response.status, 0) + 1
                sample.append(body[:300])
                return
        latencies.append(time.perf_counter() - started)

    start = time.perf_counter() + 0.05
    count = int(rate * seconds)
    await asyncio.gather(*(one(start + i / rate, sessions[i % len(sessions)])
                           for i in range(count)))
    if errors:
        raise RuntimeError(f"{url}: {sum(errors.values())} of {count} failed: {errors}; "
                           f"first answer: {sample[0]!r}")
    return latencies


def completion_body() -> dict:
    return {"model": MODEL, "prompt": f"Why do tides turn? ({uuid.uuid4()})",
            "max_tokens": 7, "temperature": 0.0}


def chat_body() -> dict:
    return {"model": MODEL, "max_tokens": 7, "temperature": 0.0,
            "messages": [{"role": "user", "content": f"Why do tides turn? ({uuid.uuid4()})"}]}


async def run(upstream: str, gateway: str, key: str) -> None:
    auth = {"X-API-Key": key}
    targets = {
        "direct": (f"{upstream}/v1/completions", completion_body, {}),
        "inference": (f"{gateway}/v1/inference", completion_body, auth),
        "chat": (f"{gateway}/v1/chat/completions", chat_body, auth),
    }
    # Many clients, each with its own keep-alive connections, as a gateway is used: one
    # client's few connections would all be accepted by one of the server's processes.
    sessions = [aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
                for _ in range(CLIENTS)]
    try:
        for rate in RATES:
            figures = {}
            for name, (url, body, headers) in targets.items():
                # Each target warms at the rate it is measured at: the connections that
                # rate needs, first queries, caches; then the measured seconds.
                await load(sessions, url, body, headers, rate, WARMUP_S)
                latencies = await load(sessions, url, body, headers, rate, SECONDS)
                figures[name] = (percentile(latencies, 50) * 1000,
                                 percentile(latencies, 95) * 1000)
                report(f"{name} p50 ms at {rate} rps", figures[name][0], "ms")
                report(f"{name} p95 ms at {rate} rps", figures[name][1], "ms")
            for name, label in (("inference", "gateway"), ("chat", "chat completions")):
                for i, pct in enumerate(("p50", "p95")):
                    added = figures[name][i] - figures["direct"][i]
                    report(f"{label} {pct} added ms at {rate} rps", added, "ms")
    finally:
        for session in sessions:
            await session.close()


def main() -> None:
    ensure_database(DB_URL)
    var = tempfile.mkdtemp(prefix="bench-gateway-")
    upstream_port, gateway_port = free_port(), free_port()
    upstream = f"http://127.0.0.1:{upstream_port}"
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings.dev", "DEBUG": "0",
           "DATABASE_URL": DB_URL, "REDIS_URL": REDIS_URL, "VAR_DIR": var,
           "LOG_LEVEL": "WARNING", "GATEWAY_UPSTREAM_URL": upstream,
           "ACCOUNTS_PREMIUM_RPM": str(10**6), "PYTHONPATH": str(ROOT)}
    subprocess.run([sys.executable, "manage.py", "migrate", "-v0"], cwd=ROOT, env=env,
                   check=True)
    key = subprocess.run([sys.executable, "manage.py", "shell", "-c", SETUP], cwd=ROOT,
                         env=env, check=True, capture_output=True, text=True
                         ).stdout.strip().splitlines()[-1]
    common = ["--host", "127.0.0.1", "--log-level", "warning", "--no-access-log"]
    upstream_cmd = [sys.executable, "-m", "uvicorn", "bench.fast_upstream:app",
                    "--port", str(upstream_port), "--lifespan", "off", *common]
    gateway_cmd = [sys.executable, "-m", "uvicorn", "config.asgi:application",
                   "--port", str(gateway_port), "--workers", str(WORKERS), *common]
    with process(upstream_cmd, env=env), process(gateway_cmd, env=env):
        gateway = f"http://127.0.0.1:{gateway_port}"
        wait_answering(f"{gateway}/v1/docs")
        wait_answering(f"{upstream}/v1/completions")
        report("gateway workers", WORKERS)
        asyncio.run(run(upstream, gateway, key))


if __name__ == "__main__":
    main()
