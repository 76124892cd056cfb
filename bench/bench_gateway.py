"""What the gateway adds to a request: an upstream that answers at once, called directly and
through `/v1/inference` and `/v1/chat/completions`, at a fixed arrival rate (open loop),
same run, the same CLIENTS clients taken in turn, each target warmed at its rate first.

The gateway runs as in production: uvicorn with one worker per core, PostgreSQL, Redis
(rate limits, cache), each request authenticated, limited, reserved, settled and recorded.
Every prompt is new, so no request is a cache hit. Added = through − direct, at p50 and p95.

In order, after the 50 and 200 req/s figures (2 s warm-up, 8 s measured, each target):
  * CPU per request over the measured 200 req/s `/v1/inference` run: the gateway's uvicorn
    workers (every child of its master), the PostgreSQL processes serving the bench
    database (its backends in pg_stat_activity, sampled before and after, and the
    walwriter) and redis-server, from /proc through psutil, and their sum; the upstream's
    and the generator's own are printed apart. PostgreSQL and Redis serve other work on
    this machine too, so their figures are only clean on a quiet machine. The share of the
    machine's CPU that everything else used (`other processes cpu %`) is printed for this
    run, over the ten runs and at each capacity rate: every figure here is the gateway's
    only where that share is near 0.
  * the `Server-Timing` phases of that run's answers, p50 and p95 of each;
  * a stream's added time to its first token: `/v1/chat/completions` with `stream: true`
    against the upstream's own streamed `/v1/chat/completions`, from sending to the first
    body chunk holding a `data:` line with text (2 s warm-up, 8 s measured);
  * ten runs back to back at 200 req/s, each 5 s direct then 5 s through `/v1/inference`
    (warmed once, 2 s each, before the first), shorter than the 8 s above to keep the
    whole benchmark near five minutes: each run's added p95 and the worst;
  * the capacity: rates from 300 to 1,200 req/s, upward, each 1 s warm-up then 5 s direct
    and 5 s through; the highest at which every request is answered (200, none past
    TIMEOUT_S) and the added p95 stays ≤ 25 ms. The generator runs on the same two cores
    (the issue's "generator included"); its lateness (actual − planned send time) and its
    own CPU per request are printed at each rate, so a limit of the generator's shows as one.
    Alone against the upstream it sends 1,500 req/s on time (lateness p95 about 1 ms) at
    0.25–0.3 ms of CPU a request. The 200 req/s runs count toward the capacity too: if a
    capacity rate fails first, it is 200 when their added p95 was within 25 ms, else 0.

The bench database is kept between runs and vacuumed (VACUUM ANALYZE) before each, so
that earlier runs' dead rows stay out of the figures.

The generator is kept cheap so that what it measures is the gateway: bodies are built and
encoded before a run starts, and it runs on uvloop when that is installed.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field

import aiohttp
import psutil

from bench.common import (
    ROOT,
    ensure_database,
    free_port,
    percentile,
    process,
    report,
    report_values,
    wait_answering,
)

RATES = (50, 200)
SECONDS = 8.0
WARMUP_S = 2.0
RUNS = 10  # back to back at RUNS_RATE, each RUN_S direct and RUN_S through
RUNS_RATE = 200
RUN_S = 5.0
CAPACITY_RATES = (300, 400, 500, 600, 800, 1000, 1200)
CAPACITY_S = 5.0
CAPACITY_WARMUP_S = 1.0
CAPACITY_P95_MS = 25.0
KEEPALIVE_S = 3.0
TIMEOUT_S = 10.0  # a request not answered by then counts as not answered
WORKERS = os.cpu_count() or 2
CLIENTS = 16
DATABASE = "inkmarket_bench"
# GATEWAY_SYNCHRONOUS_COMMIT=1 in the environment measures commits that wait for the disk.
DB_URL = os.environ.get("BENCH_DATABASE_URL",
                        f"postgres://postgres@127.0.0.1:5432/{DATABASE}")
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/9")
MODEL = "smollm2-135m-instruct"
PHASES = ("gw", "money", "upstream", "total")
FAILED: list[str] = []  # the measured runs in which some request was not answered

# The bench user's earlier keys are revoked first: an account holds at most
# ACCOUNTS_MAX_API_KEYS live keys, and the database is kept from run to run.
SETUP = """
from accounts.models import Account, ApiKey, User
from accounts.services import (account_set_tier, api_key_create, api_key_revoke,
                               balance_deposit, user_create)
user = User.objects.filter(username="bench").first() or user_create(
    username="bench", password="bench-password-1")
for old in ApiKey.objects.filter(user=user, revoked_at__isnull=True):
    api_key_revoke(old)
account = Account.objects.get(user=user)
account_set_tier(account, tier="premium")
balance_deposit(account, amount_wei=10**30)
print(api_key_create(user=user, name="bench").raw)
"""


@dataclass
class Run:
    """One run's requests: what came back and when."""

    count: int
    latencies: list[float] = field(default_factory=list)  # s, each answered request's
    lateness: list[float] = field(default_factory=list)  # s, actual − planned send time
    first: list[float] = field(default_factory=list)  # s, a stream's first token
    timings: list[str] = field(default_factory=list)  # each answer's Server-Timing
    errors: dict[str, int] = field(default_factory=dict)
    sample: bytes = b""
    generator_cpu: float = 0.0  # s, this process's CPU over the run

    def pct(self, values: list[float], pct: float) -> float:
        return percentile(values, pct) * 1000 if values else float("nan")


def _first_token(buffer: bytes) -> bool:
    """Whether the complete lines of a stream so far hold a `data:` event with text."""
    for line in buffer.split(b"\n")[:-1]:
        if not line.startswith(b"data:") or line.strip() == b"data: [DONE]":
            continue
        try:
            chunk = json.loads(line[5:])
        except ValueError:
            continue
        for choice in chunk.get("choices") or []:
            if (choice.get("delta") or {}).get("content") or choice.get("text"):
                return True
    return False


async def load(sessions: list[aiohttp.ClientSession], url: str, bodies: list[bytes],
               headers: dict, rate: float, *, strict: bool = True,
               stream: bool = False) -> Run:
    """Send `rate` requests a second, one per body in `bodies`, each at its own planned
    time whatever the answers before it did (open loop), taking the clients (`sessions`) in
    turn. `strict`: a request not answered 200 is reported, and fails the benchmark (its
    exit status) once the rest is measured. `stream`: read each answer as server-sent
    events and note when its first token came."""
    run = Run(count=len(bodies))
    headers = {**headers, "Content-Type": "application/json"}
    timeout = aiohttp.ClientTimeout(total=TIMEOUT_S)

    def failed(kind: str, body: bytes = b"") -> None:
        run.errors[kind] = run.errors.get(kind, 0) + 1
        run.sample = run.sample or body[:300] or kind.encode()

    async def one(planned: float, session: aiohttp.ClientSession, data: bytes) -> None:
        delay = planned - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        started = time.perf_counter()
        run.lateness.append(started - planned)
        try:
            async with session.post(url, data=data, headers=headers,
                                    timeout=timeout) as response:
                if response.status != 200:
                    failed(str(response.status), await response.read())
                    return
                if stream:
                    buffer, first = b"", None
                    async for chunk in response.content.iter_any():
                        if first is None:
                            buffer += chunk
                            if _first_token(buffer):
                                first = time.perf_counter() - started
                    if first is None:
                        failed("no token", buffer)
                        return
                    run.first.append(first)
                else:
                    await response.read()
                timing = response.headers.get("Server-Timing")
        except TimeoutError:
            failed("timeout")
            return
        except aiohttp.ClientError as exc:
            failed(type(exc).__name__)
            return
        run.latencies.append(time.perf_counter() - started)
        if timing:
            run.timings.append(timing)

    cpu = own_cpu()
    # Time to start every request's task (up to 6,000) before the first is due.
    start = time.perf_counter() + 0.05 + 20e-6 * len(bodies)
    await asyncio.gather(*(one(start + i / rate, sessions[i % len(sessions)], data)
                           for i, data in enumerate(bodies)))
    run.generator_cpu = own_cpu() - cpu
    if strict and run.errors:
        FAILED.append(f"{url} at {rate} rps: {sum(run.errors.values())} of {run.count} "
                      f"not answered: {run.errors}; first answer: {run.sample!r}")
        print(FAILED[-1], flush=True)
    return run


def completion_body() -> dict:
    return {"model": MODEL, "prompt": f"Why do tides turn? ({uuid.uuid4()})",
            "max_tokens": 7, "temperature": 0.0}


def chat_body() -> dict:
    return {"model": MODEL, "max_tokens": 7, "temperature": 0.0,
            "messages": [{"role": "user", "content": f"Why do tides turn? ({uuid.uuid4()})"}]}


def stream_body() -> dict:
    return {**chat_body(), "stream": True}


def upstream_stream_body() -> dict:
    # What the gateway sends its upstream for a stream.
    return {**stream_body(), "stream_options": {"include_usage": True}}


def bodies(make, rate: float, seconds: float) -> list[bytes]:
    """The run's bodies, built and encoded before it starts (each prompt new)."""
    return [json.dumps(make()).encode() for _ in range(int(rate * seconds))]


def server_timing(header: str) -> dict[str, float]:
    """`gw;dur=1.23, money;dur=0.45, upstream;desc="so far";dur=12.30, …` as {phase: ms}."""
    phases = {}
    for part in header.split(","):
        name, *params = part.strip().split(";")
        for param in params:
            if param.startswith("dur="):
                phases[name] = float(param[4:])
    return phases


class Cpu:
    """The CPU time (user + system) of the gateway's workers, the PostgreSQL processes that
    serve the bench database (and the walwriter), and redis-server; and the upstream's."""

    def __init__(self, gateway_pid: int, upstream_pid: int):
        import redis

        self.master = psutil.Process(gateway_pid)
        self.upstream_pid = upstream_pid
        client = redis.Redis.from_url(REDIS_URL)
        self.redis_pid = int(client.info("server")["process_id"])
        client.close()
        self.admin = DB_URL.rsplit("/", 1)[0] + "/postgres"

    def _postgres(self) -> list[int]:
        import psycopg

        with psycopg.connect(self.admin, autocommit=True) as conn:
            rows = conn.execute(
                "SELECT pid FROM pg_stat_activity WHERE datname = %s "
                "OR backend_type = 'walwriter'", [DATABASE]).fetchall()
        return [row[0] for row in rows]

    def snapshot(self) -> dict[str, dict[int, float]]:
        groups = {"gateway": [p.pid for p in self.master.children(recursive=True)],
                  "postgres": self._postgres(), "redis": [self.redis_pid],
                  "upstream": [self.upstream_pid]}
        seen: dict[str, dict[int, float]] = {}
        for group, pids in groups.items():
            seen[group] = {}
            for pid in pids:
                try:
                    times = psutil.Process(pid).cpu_times()
                except psutil.Error:
                    continue
                seen[group][pid] = times.user + times.system
        # The whole machine's busy CPU time and the clock, for what the rest of it used.
        machine = psutil.cpu_times()
        seen["machine"] = {0: machine.user + machine.nice + machine.system + machine.irq
                           + machine.softirq + machine.steal}
        seen["wall"] = {0: time.monotonic()}
        return seen

    @staticmethod
    def spent(before: dict[str, dict[int, float]],
              after: dict[str, dict[int, float]]) -> dict[str, float]:
        """Seconds of CPU each group spent between two snapshots (a process that began
        between them: all of its own)."""
        return {group: sum(cpu - before[group].get(pid, 0.0) for pid, cpu in pids.items())
                for group, pids in after.items()}

    @staticmethod
    def others(spent: dict[str, float], generator: float) -> float:
        """The share of the machine's CPU (%) that everything but the gateway, its
        PostgreSQL and Redis, the upstream and the generator used: near 0 when quiet."""
        ours = sum(spent[group] for group in ("gateway", "postgres", "redis", "upstream"))
        others = max(spent["machine"] - ours - generator, 0.0)
        return 100 * others / (spent["wall"] * (os.cpu_count() or 1))


def own_cpu() -> float:
    times = psutil.Process().cpu_times()
    return times.user + times.system


async def run(upstream: str, gateway: str, key: str, cpu: Cpu) -> None:
    auth = {"X-API-Key": key}
    direct = (f"{upstream}/v1/completions", completion_body, {})
    through = (f"{gateway}/v1/inference", completion_body, auth)
    targets = {
        "direct": direct,
        "inference": through,
        "chat": (f"{gateway}/v1/chat/completions", chat_body, auth),
    }
    # Many clients, each with its own keep-alive connections, as a gateway is used: one
    # client's few connections would all be accepted by one of the server's processes.
    # A connection idle for KEEPALIVE_S is closed by the client before the server's own
    # limit (uvicorn's 5 s) can close it under a request being sent on it.
    sessions = [aiohttp.ClientSession(connector=aiohttp.TCPConnector(
                    limit=0, keepalive_timeout=KEEPALIVE_S)) for _ in range(CLIENTS)]

    async def measure(target, rate: float, seconds: float, **options) -> Run:
        url, make, headers = target
        return await load(sessions, url, bodies(make, rate, seconds), headers, rate,
                          **options)

    try:
        passed_200 = False
        for rate in RATES:
            figures = {}
            for name, target in targets.items():
                # Each target warms at the rate it is measured at: the connections that
                # rate needs, first queries, caches; then the measured seconds.
                await measure(target, rate, WARMUP_S, strict=False)
                watch = name == "inference" and rate == RUNS_RATE
                if watch:
                    cpu_before = cpu.snapshot()
                measured = await measure(target, rate, SECONDS)
                if watch:
                    spent = Cpu.spent(cpu_before, cpu.snapshot())
                    watched = measured
                figures[name] = (measured.pct(measured.latencies, 50),
                                 measured.pct(measured.latencies, 95))
                report(f"{name} p50 ms at {rate} rps", figures[name][0], "ms")
                report(f"{name} p95 ms at {rate} rps", figures[name][1], "ms")
            for name, label in (("inference", "gateway"), ("chat", "chat completions")):
                for i, pct in enumerate(("p50", "p95")):
                    added = figures[name][i] - figures["direct"][i]
                    report(f"{label} {pct} added ms at {rate} rps", added, "ms")
            if rate == RUNS_RATE:
                passed_200 = (not watched.errors and figures["inference"][1]
                              - figures["direct"][1] <= CAPACITY_P95_MS)
                report(f"generator lateness p95 ms at {rate} rps",
                       watched.pct(watched.lateness, 95), "ms")

        # Where the CPU of the measured 200 req/s /v1/inference run went.
        count = watched.count
        for group in ("gateway", "postgres", "redis"):
            report(f"{group} cpu ms per request", spent[group] * 1000 / count, "ms")
        total = spent["gateway"] + spent["postgres"] + spent["redis"]
        report("gateway total cpu ms per request", total * 1000 / count, "ms")
        report("upstream cpu ms per request", spent["upstream"] * 1000 / count, "ms")
        report("generator cpu ms per request", watched.generator_cpu * 1000 / count, "ms")
        report(f"other processes cpu % of the machine at {RUNS_RATE} rps",
               Cpu.others(spent, watched.generator_cpu), "%")

        # Where the gateway's time went, from each answer's Server-Timing header.
        phases = [server_timing(header) for header in watched.timings]
        if len(phases) < count:
            report(f"answers without server-timing at {RUNS_RATE} rps", count - len(phases))
        for pct in (50, 95):
            shown = []
            for phase in PHASES:
                values = [p[phase] for p in phases if phase in p]
                if values:
                    shown.append(f"{phase}={percentile(values, pct):.2f}")
            report(f"gateway server-timing p{pct} ms at {RUNS_RATE} rps", " ".join(shown))

        # A stream's time to its first token, directly and through the gateway.
        streams = {"direct": (f"{upstream}/v1/chat/completions", upstream_stream_body, {}),
                   "through": (f"{gateway}/v1/chat/completions", stream_body, auth)}
        first = {}
        for name, target in streams.items():
            await measure(target, RUNS_RATE, WARMUP_S, stream=True, strict=False)
            measured = await measure(target, RUNS_RATE, SECONDS, stream=True)
            first[name] = (measured.pct(measured.first, 50), measured.pct(measured.first, 95))
            report(f"stream {name} ttfb p50 ms at {RUNS_RATE} rps", first[name][0], "ms")
            report(f"stream {name} ttfb p95 ms at {RUNS_RATE} rps", first[name][1], "ms")
        report(f"gateway stream ttfb added ms at {RUNS_RATE} rps",
               first["through"][0] - first["direct"][0], "ms")
        report(f"gateway stream ttfb p95 added ms at {RUNS_RATE} rps",
               first["through"][1] - first["direct"][1], "ms")

        # Ten runs back to back: how far the p95 moves from run to run.
        await measure(direct, RUNS_RATE, WARMUP_S, strict=False)
        await measure(through, RUNS_RATE, WARMUP_S, strict=False)
        added, generator, before = [], 0.0, cpu.snapshot()
        for _ in range(RUNS):
            base = await measure(direct, RUNS_RATE, RUN_S)
            measured = await measure(through, RUNS_RATE, RUN_S)
            added.append(measured.pct(measured.latencies, 95) - base.pct(base.latencies, 95))
            generator += base.generator_cpu + measured.generator_cpu
        report(f"other processes cpu % of the machine over the {RUNS} runs",
               Cpu.others(Cpu.spent(before, cpu.snapshot()), generator), "%")
        report_values(f"gateway p95 added ms at {RUNS_RATE} rps each of {RUNS}", added, "ms")
        report(f"gateway p95 added ms at {RUNS_RATE} rps worst of {RUNS}",
               max(added, key=lambda figure: math.inf if math.isnan(figure) else figure),
               "ms")

        # The capacity: upward until a rate fails.
        capacity = RUNS_RATE if passed_200 else 0
        for rate in CAPACITY_RATES:
            await measure(direct, rate, CAPACITY_WARMUP_S, strict=False)
            await measure(through, rate, CAPACITY_WARMUP_S, strict=False)
            before = cpu.snapshot()
            base = await measure(direct, rate, CAPACITY_S, strict=False)
            measured = await measure(through, rate, CAPACITY_S, strict=False)
            spent = Cpu.spent(before, cpu.snapshot())
            answered = len(measured.latencies)
            lost = {**measured.errors, **{f"direct {k}": v for k, v in base.errors.items()}}
            p95 = (measured.pct(measured.latencies, 95) - base.pct(base.latencies, 95)
                   if measured.latencies and base.latencies else float("inf"))
            report(f"gateway p95 added ms at {rate} rps", p95, "ms")
            report(f"gateway answered at {rate} rps",
                   f"{answered} of {measured.count}" + (f" {lost}" if lost else ""))
            report(f"generator lateness p95 ms at {rate} rps",
                   measured.pct(measured.lateness, 95), "ms")
            report(f"generator cpu ms per request at {rate} rps",
                   measured.generator_cpu * 1000 / measured.count, "ms")
            report(f"other processes cpu % of the machine at {rate} rps",
                   Cpu.others(spent, base.generator_cpu + measured.generator_cpu), "%")
            if lost or p95 > CAPACITY_P95_MS:
                break
            capacity = rate
        report("gateway capacity rps", capacity)
    finally:
        for session in sessions:
            await session.close()


def vacuum() -> None:
    """Earlier runs' dead rows out of the bench database (a run leaves some 30,000)."""
    import psycopg

    with psycopg.connect(DB_URL, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE")


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
    vacuum()
    common = ["--host", "127.0.0.1", "--log-level", "warning", "--no-access-log"]
    upstream_cmd = [sys.executable, "-m", "uvicorn", "bench.fast_upstream:app",
                    "--port", str(upstream_port), "--lifespan", "off", *common]
    gateway_cmd = [sys.executable, "-m", "uvicorn", "config.asgi:application",
                   "--port", str(gateway_port), "--workers", str(WORKERS), *common]
    with process(upstream_cmd, env=env) as upstreamed, \
            process(gateway_cmd, env=env) as served:
        gateway = f"http://127.0.0.1:{gateway_port}"
        wait_answering(f"{gateway}/v1/docs")
        wait_answering(f"{upstream}/v1/completions")
        report("gateway workers", WORKERS)
        measured = run(upstream, gateway, key, Cpu(served.pid, upstreamed.pid))
        try:
            import uvloop
        except ImportError:
            asyncio.run(measured)
        else:
            uvloop.run(measured)
    if FAILED:
        sys.exit(f"{len(FAILED)} measured runs had requests not answered")


if __name__ == "__main__":
    main()
