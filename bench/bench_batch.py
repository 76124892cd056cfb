"""Batch efficiency: short items per second through the whole batch path (POST /v1/batch
to a real server process, a real Celery worker, billing per item, the results recorded)
divided by the items per second the same hosts reach when fed directly, same run, as
many in flight on both sides.

1. `batch efficiency`: the marketplace. An anvil chain with our contracts, two host
   processes serving the bundled model, every item a job on chain with escrow; fed
   directly = the marketplace client's run_job.
2. `batch upstream efficiency`: the gateway's upstream mode against a real
   OpenAI-compatible server (llama-cpp-python's, the bundled model); fed directly =
   POST /v1/completions to it. No chain, so items are ~8x faster and the batch path's
   own costs (queue, claims, billing, records) weigh more.

Needs PostgreSQL and Redis (`make services`): DATABASE_URL and REDIS_URL, or the
defaults below.

    python -m bench.bench_batch   # BENCH_BATCH_ITEMS (200) and BENCH_BATCH_UPSTREAM_ITEMS
                                  # (1000) items on each side
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path

from bench.common import ensure_database, wait_answering

ITEMS = int(os.environ.get("BENCH_BATCH_ITEMS", "200"))
UPSTREAM_ITEMS = int(os.environ.get("BENCH_BATCH_UPSTREAM_ITEMS", "1000"))
MAX_TOKENS = 4  # short outputs: the cost of an item is its path, not its decoding
PRICE = 10**9
HOSTS = ("host-1", "host-2")
# The worker: threads that each wait on a task while its items run on the process's one
# event loop; a task holds ITEMS_PER_TASK items.
WORKER_THREADS = int(os.environ.get("BENCH_BATCH_THREADS", "2"))
ITEMS_PER_TASK = int(os.environ.get("BENCH_BATCH_PER_TASK", "4"))
IN_FLIGHT = WORKER_THREADS * ITEMS_PER_TASK  # the direct side runs as many at once
MODEL = "smollm2-135m-instruct"
ROUNDS = 2
DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/inkmarket_bench"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/12"


def setup_django(var_dir: Path) -> dict[str, str]:
    env = {"DJANGO_SETTINGS_MODULE": "config.settings.dev", "DEBUG": "0",
           "VAR_DIR": str(var_dir), "LOG_LEVEL": "WARNING",
           # Fewer pooled connections per process than the default 8: the server, the
           # worker and this process share one PostgreSQL (100 connections by default).
           "GATEWAY_DB_THREADS": "4",
           "DATABASE_URL": os.environ.get("DATABASE_URL") or DEFAULT_DATABASE_URL,
           "REDIS_URL": os.environ.get("REDIS_URL") or DEFAULT_REDIS_URL}
    os.environ.update(env)
    ensure_database(env["DATABASE_URL"])
    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", verbosity=0)
    return env


def start_hosts(net, var_dir: Path, env: dict[str, str]):
    import subprocess

    from bench.common import ROOT, free_port, wait_http

    deployment = var_dir / "deployments" / "31337.json"
    procs, urls = [], []
    for role in HOSTS:
        port = free_port()
        key = net.keys[role]
        log = open(var_dir / f"{role}.log", "wb")
        procs.append(subprocess.Popen(
            [sys.executable, "manage.py", "runhost", "--port", str(port), "--price",
             str(PRICE), "--keystore", str(key.keystore), "--passphrase-file",
             str(key.passphrase_file), "--rpc-url", net.url, "--deployment", str(deployment),
             "--results-dir", str(var_dir / role)],
            cwd=ROOT, env={**os.environ, **env}, stdout=log, stderr=subprocess.STDOUT))
        urls.append(f"http://127.0.0.1:{port}")
    for url in urls:
        wait_http(f"{url}/health", timeout=120)
    return procs


def start_worker(var_dir: Path, env: dict[str, str], name: str = "worker"):
    import subprocess

    import redis

    from bench.common import ROOT

    client = redis.Redis.from_url(env["REDIS_URL"])
    client.delete("celery", "unacked", "unacked_index")  # an earlier run's leftovers
    client.close()
    log = var_dir / f"{name}.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "config", "worker", "--pool", "threads",
         "--concurrency", str(WORKER_THREADS), "--loglevel", "info", "--without-gossip",
         "--without-mingle", "--without-heartbeat", "-n", f"bench-batch-{os.getpid()}@%h",
         "-B", "-s", str(var_dir / f"{name}.beat")],
        cwd=ROOT, env={**os.environ, **env, "BATCH_ITEMS_PER_TASK": str(ITEMS_PER_TASK),
                       "BATCH_SWEEP_INTERVAL_S": "10"},
        stdout=open(log, "wb"), stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while " ready." not in log.read_text(errors="replace"):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(log.read_text(errors="replace")[-3000:])
        time.sleep(0.2)
    return proc


def start_server(var_dir: Path, port: int, env: dict[str, str]):
    import subprocess

    from bench.common import ROOT

    return subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "config.asgi:application", "--host", "127.0.0.1",
         "--port", str(port), "--log-level", "warning", "--lifespan", "off"],
        cwd=ROOT, env={**os.environ, **env}, stdout=open(var_dir / "server.log", "wb"),
        stderr=subprocess.STDOUT)


def stop(procs) -> None:
    for proc in procs:
        proc.terminate()
    for proc in procs:
        try:
            proc.wait(timeout=20)
        except Exception:
            proc.kill()
            proc.wait()


def prompts(side: str, count: int) -> list[str]:
    # Every prompt its own: a repeated one would be a cache hit on the batch side.
    # Prompts a raw completion continues: an instruct model given a bare instruction
    # without its chat template (the upstream's /v1/completions) often ends at once.
    tag = uuid.uuid4().hex[:8]
    return [f"Item {side}-{tag}-{i}. Counting up: {i}, {i + 1}," for i in range(count)]


async def run_direct(count: int) -> float:
    """Items per second, run_job straight to the hosts, IN_FLIGHT at a time."""
    from marketplace.services import JobSpec, run_job

    gate = asyncio.Semaphore(IN_FLIGHT)

    async def one(prompt: str) -> None:
        async with gate:
            await run_job(JobSpec(model=MODEL, prompt=prompt, max_tokens=MAX_TOKENS,
                                  temperature=0.0, max_price_per_token_wei=PRICE))

    started = time.perf_counter()
    results = await asyncio.gather(*(one(p) for p in prompts("direct", count)),
                                   return_exceptions=True)
    elapsed = time.perf_counter() - started
    failed = [r for r in results if isinstance(r, BaseException)]
    if failed:
        print(f"warning: {len(failed)} direct jobs failed: {failed[0]!r}", file=sys.stderr)
    return (count - len(failed)) / elapsed


def start_llama_server(var_dir: Path):
    """llama-cpp-python's OpenAI-compatible server on the bundled model. One request at
    a time (interrupt_requests off, so a new request waits instead of cutting off the
    running one)."""
    import subprocess

    from bench.common import free_port, wait_http
    from marketplace.host.backends import bundled_model_path

    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "llama_cpp.server", "--model", str(bundled_model_path()),
         "--host", "127.0.0.1", "--port", str(port), "--n_ctx", "2048",
         "--interrupt_requests", "False"],
        stdout=open(var_dir / "llama-server.log", "wb"), stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    wait_http(f"{url}/v1/models", timeout=120)
    return proc, url


async def run_direct_upstream(url: str, count: int) -> float:
    """Items per second, POST /v1/completions straight to the server, IN_FLIGHT at a time."""
    import httpx

    gate = asyncio.Semaphore(IN_FLIGHT)
    async with httpx.AsyncClient(base_url=url, timeout=120) as http:
        async def one(prompt: str) -> None:
            async with gate:
                response = await http.post("/v1/completions", json={
                    "model": MODEL, "prompt": prompt, "max_tokens": MAX_TOKENS,
                    "temperature": 0.0})
                response.raise_for_status()

        started = time.perf_counter()
        await asyncio.gather(*(one(p) for p in prompts("direct", count)))
        return count / (time.perf_counter() - started)


def make_caller():
    from accounts.services import (
        account_get_or_create,
        account_set_tier,
        api_key_create,
        balance_deposit,
        user_create,
    )

    user = user_create(username=f"bench-{uuid.uuid4().hex[:8]}", password=uuid.uuid4().hex)
    account = account_get_or_create(user)
    account_set_tier(account, tier="premium")  # 1000 requests a minute: room to poll
    balance_deposit(account, amount_wei=10**20, memo="benchmark")
    return api_key_create(user=user, name="bench", scopes=["batch"]).raw


def run_batches(base_url: str, raw_key: str, count: int) -> float:
    """Items per second from the first POST to the end of the last item."""
    import httpx

    from gateway.models import Batch, BatchState

    items = prompts("batch", count)
    headers = {"X-API-Key": raw_key}
    ids = []
    with httpx.Client(base_url=base_url, headers=headers, timeout=60) as http:
        started = time.time()
        for start in range(0, count, 100):
            body = {"requests": [{"model": MODEL, "prompt": p, "max_tokens": MAX_TOKENS,
                                  "temperature": 0.0} for p in items[start:start + 100]]}
            response = http.post("/v1/batch", json=body)
            if response.status_code != 202:
                raise RuntimeError(f"POST /v1/batch: {response.status_code} {response.text}")
            ids.append(response.json()["id"])
        deadline = time.monotonic() + 60 + count * 2
        pending = list(ids)
        while pending:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(pending)} batches did not finish")
            time.sleep(1.0)
            response = http.get(f"/v1/batch/{pending[0]}")
            if response.status_code >= 500:
                # The database may refuse a connection when other work on the machine
                # holds them all; a poll is only a read, so the next one tries again.
                print(f"warning: GET /v1/batch answered {response.status_code}",
                      file=sys.stderr)
                continue
            if response.status_code != 200:
                raise RuntimeError(f"GET /v1/batch: {response.status_code} {response.text}")
            if response.json()["state"] == "completed":
                pending.pop(0)
    batches = list(Batch.objects.filter(pk__in=ids))
    assert all(b.state == BatchState.COMPLETED for b in batches)
    ended = max(b.finished_at for b in batches).timestamp()
    failed = sum(b.failed for b in batches)
    if failed:
        print(f"warning: {failed} batch items failed", file=sys.stderr)
    return count / (ended - started)


async def alternate(direct, batch, count: int) -> tuple[float, float]:
    """Items per second of each side over ROUNDS rounds of count/ROUNDS items, the sides
    taking turns, so a change in the machine's load during the run (other work on two
    cores) falls on both sides alike."""
    share = count // ROUNDS
    times = {"direct": 0.0, "batch": 0.0}
    for _ in range(ROUNDS):
        times["direct"] += share / await direct(share)
        times["batch"] += share / await batch(share)
    return share * ROUNDS / times["direct"], share * ROUNDS / times["batch"]


async def main(var_dir: Path, env: dict[str, str]) -> None:
    from django.conf import settings

    from bench.chainkit import BenchChain
    from bench.common import free_port, report
    from marketplace import wallet
    from marketplace.client import discovery, pool

    net = BenchChain()
    procs = []
    try:
        await net.deploy()
        (var_dir / "deployments").mkdir()
        (var_dir / "deployments" / "31337.json").write_text(net.deployment.to_json())
        keys = net.keys["platform"]
        env.update({"CHAIN_RPC_URL": net.url, "WALLET_KEYSTORE_FILE": str(keys.keystore),
                    "WALLET_PASSPHRASE_FILE": str(keys.passphrase_file)})
        settings.CHAIN_RPC = net.url
        settings.CHAIN_DEPLOYMENTS_DIR = var_dir / "deployments"
        settings.WALLET_KEYSTORE_FILE = env["WALLET_KEYSTORE_FILE"]
        settings.WALLET_PASSPHRASE_FILE = env["WALLET_PASSPHRASE_FILE"]

        procs += start_hosts(net, var_dir, env)
        # The worker runs from the start: the job processor's after-work, which every job
        # queues, is handled during the direct side too.
        worker = start_worker(var_dir, env)
        procs.append(worker)
        port = free_port()
        base_url = f"http://127.0.0.1:{port}"
        procs.append(start_server(var_dir, port, env))
        wait_answering(f"{base_url}/health")
        raw_key = await asyncio.to_thread(make_caller)
        await run_direct(IN_FLIGHT)  # warm-up: connections, the model's first prompts
        discovery.invalidate()
        direct, batch = await alternate(
            lambda n: run_direct(n),
            lambda n: asyncio.to_thread(run_batches, base_url, raw_key, n), ITEMS)
        stop([worker])

        llama, upstream_url = start_llama_server(var_dir)
        procs.append(llama)
        worker = start_worker(var_dir, {**env, "GATEWAY_UPSTREAM_URL": upstream_url,
                                        "GATEWAY_UPSTREAM_PRICE_WEI": str(PRICE)},
                              name="worker-upstream")
        procs.append(worker)
        await run_direct_upstream(upstream_url, IN_FLIGHT)  # warm-up
        direct_up, batch_up = await alternate(
            lambda n: run_direct_upstream(upstream_url, n),
            lambda n: asyncio.to_thread(run_batches, base_url, raw_key, n), UPSTREAM_ITEMS)
        stop([worker])
        report("batch items in flight", IN_FLIGHT, "items")
        report("batch max tokens", MAX_TOKENS, "tokens")
        report("batch marketplace items", ITEMS, "items")
        report("batch direct items per s", direct, "items/s")
        report("batch path items per s", batch, "items/s")
        report("batch efficiency", batch / direct)
        report("batch upstream items", UPSTREAM_ITEMS, "items")
        report("batch upstream direct items per s", direct_up, "items/s")
        report("batch upstream path items per s", batch_up, "items/s")
        report("batch upstream efficiency", batch_up / direct_up)
        platform = await wallet.platform_chain()
        await platform.close()
        await pool.close()
    finally:
        stop(procs)
        net.close()


if __name__ == "__main__":
    directory = Path(tempfile.mkdtemp(prefix="bench-batch-"))
    environment = setup_django(directory)
    sys.exit(asyncio.run(main(directory, environment)))
