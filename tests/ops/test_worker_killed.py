"""A Celery worker killed with SIGKILL in the middle of a task: once a worker runs again,
every job is processed exactly once, and a webhook sent twice carries the same
idempotency key both times."""

from __future__ import annotations

import collections

import pytest
from django.utils import timezone

from marketplace.models import (
    DeliveryState,
    JobProcessing,
    ProcessingState,
    UsageStats,
    WebhookDelivery,
    WebhookEndpoint,
)
from tests.conftest import free_port
from tests.ops.conftest import process_env, wait_for
from tests.ops.test_processor import finished_job

pytestmark = pytest.mark.django_db(transaction=True)
JOBS = 6


def test_a_worker_killed_mid_task_leaves_each_job_processed_exactly_once(
        alice, receiver, own_redis, processes):
    endpoint = WebhookEndpoint.objects.create(owner=alice, url=receiver.url)
    jobs = [finished_job(alice, tokens=10 + i, paid=(10 + i) * 10**9) for i in range(JOBS)]
    # The web process wrote the rows; their messages never reached the broker (the beat's
    # sweep is what sends them here).
    for job in jobs:
        JobProcessing.objects.create(job=job, next_attempt_at=timezone.now())
    env = process_env(
        REDIS_URL=own_redis.url, OPS_BEAT_INTERVAL_S="2", CELERY_VISIBILITY_TIMEOUT_S="5",
        WEBHOOK_STUCK_AFTER_S="5", OPS_LEASE_S="5",
        CHAIN_RPC_URL=f"http://127.0.0.1:{free_port()}")
    receiver.hold()  # the first webhook request hangs: its sender is mid-task
    first = processes.worker(env, beat=True)
    assert receiver.arrived.wait(90), processes.logs()
    processes.kill(first)
    assert first.returncode == -9
    receiver.release.set()

    second = processes.worker(env, beat=True)
    wait_for(lambda: WebhookDelivery.objects.filter(state=DeliveryState.DELIVERED).count()
             == JOBS and not JobProcessing.objects.exclude(state=ProcessingState.DONE).exists(),
             timeout=120, what="every job processed and every webhook delivered")
    assert second.poll() is None

    stats = UsageStats.objects.get(user=alice)
    assert (stats.jobs, stats.tokens) == (JOBS, sum(10 + i for i in range(JOBS)))
    assert int(stats.cost_wei) == sum((10 + i) * 10**9 for i in range(JOBS))
    # One delivery per job, each with the job's own key, however often it was sent.
    expected = {f"job.completed:{job.id}:{endpoint.pk}" for job in jobs}
    assert set(WebhookDelivery.objects.values_list("idempotency_key", flat=True)) == expected
    sent = collections.Counter(receiver.keys())
    assert set(sent) == expected
    by_job = collections.defaultdict(set)
    for request in receiver.requests:
        by_job[request["json"]["job_id"]].add(
            request["headers"]["X-Inkmarket-Idempotency-Key"])
    assert all(len(keys) == 1 for keys in by_job.values())
    # The request that was in flight when the worker died is the one sent again.
    assert sorted(sent.values(), reverse=True)[0] == 2
    assert sum(sent.values()) == JOBS + 1
