"""What the batch tests share: a real Celery worker process on the test's own broker and
database, a real HTTP server receiving webhooks, and waiting for a batch to end."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import redis
from django.conf import settings

from tests.conftest import MODEL
from tests.gateway.conftest import CREDIT, database_url

ROOT = Path(__file__).resolve().parents[2]


def nonce() -> str:
    """Part of every prompt: the gateway caches results for an hour in Redis, so a prompt
    an earlier run sent would come back cached, at no charge."""
    return uuid.uuid4().hex[:8]


def purge_broker() -> None:
    """Drop tasks an earlier, interrupted run left in this test's own Redis database."""
    client = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    try:
        client.delete("celery", "unacked", "unacked_index")
    finally:
        client.close()


class Worker:
    def __init__(self, proc: subprocess.Popen, log: Path):
        self.proc = proc
        self.log = log

    def output(self) -> str:
        return self.log.read_text(errors="replace")


@contextlib.contextmanager
def celery_worker(log: Path, *, env: dict[str, str] | None = None, concurrency: int = 2,
                  pool: str = "threads", purge: bool = True) -> Iterator[Worker]:
    """`celery -A config worker` as its own process, on this test's broker and database
    (with beat, -B, so the periodic sweeps run too)."""
    if purge:
        purge_broker()
    full_env = {**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings.test",
                "DATABASE_URL": database_url(), "REDIS_URL": settings.REDIS_URL,
                "LOG_FORMAT": "plain", "ACCOUNTS_SIGNUP_CREDIT_WEI": str(CREDIT),
                "GATEWAY_MODELS": MODEL, **(env or {})}
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "config", "worker", "--pool", pool,
             "--concurrency", str(concurrency), "--loglevel", "info", "--without-gossip",
             "--without-mingle", "--without-heartbeat", "-n", f"batch-test-{os.getpid()}@%h",
             "-B", "-s", str(log.with_suffix(".beat"))],
            cwd=ROOT, env=full_env, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True)  # its group: -B forks a beat process of its own
    worker = Worker(proc, log)
    try:
        deadline = time.monotonic() + 60
        while " ready." not in worker.output():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the worker did not start:\n{worker.output()[-3000:]}")
            time.sleep(0.2)
        yield worker
    finally:
        _stop_group(proc)


def _stop_group(proc: subprocess.Popen) -> None:
    """SIGTERM to the worker and the processes it forked, SIGKILL to what is left."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # a forked child that outlived its parent
    except ProcessLookupError:
        pass
    proc.wait()


def wait_batch_done(batch_id, *, timeout: float) -> None:
    from gateway.models import Batch, BatchState

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if Batch.objects.filter(pk=batch_id, state=BatchState.COMPLETED).exists():
            return
        time.sleep(0.25)
    batch = Batch.objects.get(pk=batch_id)
    raise AssertionError(f"batch still {batch.state} after {timeout} s: "
                         f"{batch.succeeded} succeeded, {batch.failed} failed of {batch.total}")


def in_thread(fn):
    """Run the blocking `fn` on a thread of its own that closes its database connection
    when done (asyncio.to_thread's pool would keep it open past the test)."""
    import asyncio

    def run():
        from django.db import connections

        try:
            return fn()
        finally:
            connections.close_all()

    return asyncio.to_thread(run)
