"""What a Prometheus scrape costs as jobs pile up: every figure on /metrics (jobs by
state, wei paid, time-to-first-token and duration histograms, gas, the success rate) is
read from the database at scrape time. Measured on a PostgreSQL database of its own with
50,000 finished jobs, against the same scrape of an empty one, in the same run."""

from __future__ import annotations

import os
import subprocess
import sys

from bench.common import ROOT, report

JOBS = 50_000
SCRAPES = 10
DATABASE = "inkmarket_bench_metrics"

SCRIPT = """
import os, sys, time, statistics, uuid
from datetime import timedelta
import django
django.setup()
from django.core.management import call_command
from django.utils import timezone
from prometheus_client import generate_latest
call_command("migrate", verbosity=0)
from observability.metrics import registry
from marketplace.models import Job, JobState
jobs = int(sys.argv[1])
now = timezone.now()
states = [JobState.COMPLETED] * 19 + [JobState.FAILED]
Job.objects.bulk_create([
    Job(id=uuid.uuid4(), model="m", prompt="p", prompt_hash="h", max_tokens=64,
        state=states[i % 20], tokens=i % 64, paid_wei=(i % 64) * 10**9,
        first_token_at=now + timedelta(milliseconds=100 + i % 900),
        finished_at=now + timedelta(seconds=1 + i % 30))
    for i in range(jobs)], batch_size=5000)
generate_latest(registry)  # warm-up
times = []
for _ in range(int(sys.argv[2])):
    started = time.perf_counter()
    generate_latest(registry)
    times.append(time.perf_counter() - started)
print(statistics.median(times) * 1000)
"""


def scrape_ms(jobs: int) -> float:
    subprocess.run(["dropdb", "-h", "127.0.0.1", "-U", "postgres", "--if-exists", DATABASE],
                   check=True)
    subprocess.run(["createdb", "-h", "127.0.0.1", "-U", "postgres", DATABASE], check=True)
    try:
        env = {**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings.dev", "DEBUG": "0",
               "DATABASE_URL": f"postgres://postgres@127.0.0.1:5432/{DATABASE}",
               "VAR_DIR": str(ROOT / "var" / "bench"), "LOG_LEVEL": "WARNING"}
        env.pop("REDIS_URL", None)
        out = subprocess.run([sys.executable, "-c", SCRIPT, str(jobs), str(SCRAPES)], cwd=ROOT,
                             env=env, check=True, capture_output=True, text=True).stdout
        return float(out.strip().splitlines()[-1])
    finally:
        subprocess.run(["dropdb", "-h", "127.0.0.1", "-U", "postgres", "--if-exists",
                        DATABASE], check=True)


def main() -> None:
    empty = scrape_ms(0)
    full = scrape_ms(JOBS)
    report("baseline metrics scrape, no jobs", empty, "ms")
    report(f"metrics scrape, {JOBS} jobs", full, "ms")
    report("metrics scrape cost per 10,000 jobs", (full - empty) / (JOBS / 10_000), "ms")


if __name__ == "__main__":
    main()
