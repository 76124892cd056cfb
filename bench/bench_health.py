"""`/health/ready` (the database and Redis checks; `/health` also asks the chain and
every host) requests per second through the ASGI server, against a bare ASGI app.

Both are served by the same uvicorn, on the same machine, in the same run, and loaded by
the same client, so the ratio shows what Django, the middleware and a real database
query cost per request.
"""

from __future__ import annotations

import asyncio
import time

import aiohttp

from bench.common import ROOT, free_port, percentile, report, uvicorn, wait_http

DURATION = 5.0
CONCURRENCY = 16


async def load(url: str) -> tuple[float, list[float]]:
    latencies: list[float] = []
    stop_at = time.perf_counter() + DURATION
    async with aiohttp.ClientSession() as session:

        async def worker():
            while time.perf_counter() < stop_at:
                started = time.perf_counter()
                async with session.get(url) as response:
                    await response.read()
                    if response.status != 200:
                        raise RuntimeError(f"{url} answered {response.status}")
                latencies.append(time.perf_counter() - started)

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
        elapsed = time.perf_counter() - started
    return len(latencies) / elapsed, latencies


def measure(app: str, path: str, env: dict[str, str]) -> tuple[float, list[float]]:
    port = free_port()
    with uvicorn(app, port, env=env):
        url = f"http://127.0.0.1:{port}{path}"
        wait_http(url)
        asyncio.run(load(url))  # warm-up: connections, first queries
        return asyncio.run(load(url))


def main() -> None:
    env = {"DJANGO_SETTINGS_MODULE": "config.settings.dev", "DEBUG": "0",
           "VAR_DIR": str(ROOT / "var" / "bench"), "PYTHONPATH": str(ROOT)}
    base_rps, base_lat = measure("bench.baseline_asgi:app", "/", env)
    rps, lat = measure("config.asgi:application", "/health/ready", env)
    report("baseline bare asgi rps", base_rps, "req/s")
    report("health rps", rps, "req/s")
    report("health p50 latency", percentile(lat, 50) * 1000, "ms")
    report("health p95 latency", percentile(lat, 95) * 1000, "ms")
    report("baseline p95 latency", percentile(base_lat, 95) * 1000, "ms")
    report("health rps ratio vs bare asgi", rps / base_rps)


if __name__ == "__main__":
    main()
