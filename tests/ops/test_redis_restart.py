"""Redis restarted under load: the web server, the worker with its beat, and a process
finishing jobs all keep running, and the product recovers by itself: /health is green
again, and every job finished before, during and after the outage is processed exactly
once with its webhook delivered."""

from __future__ import annotations

import collections
import json
import sys
import threading
import time
import urllib.error
import urllib.request

import pytest

from marketplace.models import (
    DeliveryState,
    Job,
    JobProcessing,
    ProcessingState,
    UsageStats,
    WebhookDelivery,
    WebhookEndpoint,
)
from tests.conftest import free_port
from tests.ops.conftest import process_env, wait_for

pytestmark = pytest.mark.django_db(transaction=True)

# A process of the product that finishes a job every 0.2 s, as a web process running
# jobs would: the job's row, then its processing queued through Redis.
PRODUCER = """
import sys, time, django
django.setup()
from marketplace.jobs import job_create, job_transition
from marketplace.models import JobState
from marketplace.processor import job_finished
owner, seconds = int(sys.argv[1]), float(sys.argv[2])
end = time.monotonic() + seconds
n = 0
while time.monotonic() < end:
    job = job_create(model="m", prompt="p", max_tokens=8, temperature=0.0, owner_id=owner)
    job_transition(job_id=job.id, to=JobState.FAILED, tokens=n % 5)
    job_finished(job_id=job.id)
    n += 1
    time.sleep(0.2)
print(n, flush=True)
"""


TOKEN = "metrics-token-for-tests-0123456789abcdef"


def health(url: str) -> tuple[int, dict]:
    request = urllib.request.Request(f"{url}/health",
                                     headers={"Authorization": f"Bearer {TOKEN}"})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())
    except OSError:
        return 0, {}


def test_the_product_recovers_from_a_redis_restart_without_restarting(
        alice, receiver, own_redis, processes, network):
    WebhookEndpoint.objects.create(owner=alice, url=receiver.url)
    env = process_env(
        REDIS_URL=own_redis.url, OPS_BEAT_INTERVAL_S="2", CELERY_VISIBILITY_TIMEOUT_S="10",
        WEBHOOK_STUCK_AFTER_S="5", OPS_LEASE_S="10", OPS_HEALTH_MIN_HOSTS="0",
        METRICS_TOKEN=TOKEN, CHAIN_RPC_URL=network.anvil.url, VAR_DIR=str(network.tmp))
    port = free_port()
    web = processes.start([sys.executable, "-m", "uvicorn", "config.asgi:application",
                           "--host", "127.0.0.1", "--port", str(port), "--lifespan", "off"],
                          env, "web")
    url = f"http://127.0.0.1:{port}"
    worker = processes.worker(env, beat=True)
    wait_for(lambda: health(url)[0] == 200, timeout=60, what="the web server to be healthy")

    # (asked at, answered at, status, failing)
    statuses: list[tuple[float, float, int, list]] = []
    stop = threading.Event()

    def load() -> None:
        while not stop.is_set():
            asked = time.monotonic()
            status, body = health(url)
            statuses.append((asked, time.monotonic(), status, body.get("failing", [])))
            time.sleep(0.2)

    poller = threading.Thread(target=load, daemon=True)
    poller.start()
    producer = processes.start([sys.executable, "-c", PRODUCER, str(alice.pk), "16"], env,
                               "producer")
    try:
        time.sleep(4)
        own_redis.stop()
        down_at = time.monotonic()
        time.sleep(5)
        starting_at = time.monotonic()
        own_redis.start()
        up_at = time.monotonic()
        assert producer.wait(timeout=60) == 0, processes.logs()
        produced = int(producer.log_path.read_text().strip().splitlines()[-1])
        wait_for(lambda: JobProcessing.objects.filter(state=ProcessingState.DONE).count()
                 == produced and WebhookDelivery.objects.filter(
                     state=DeliveryState.DELIVERED).count() == produced,
                 timeout=120, what="every job processed and its webhook delivered")
        wait_for(lambda: statuses and statuses[-1][2] == 200, timeout=30,
                 what="/health to be green again")
    finally:
        stop.set()
        poller.join()

    # Nobody was restarted: the same web server and worker did all of it.
    assert web.poll() is None and worker.poll() is None
    # Asked after Redis had been down a second, answered before it was started again.
    during = [(status, failing) for asked, answered, status, failing in statuses
              if down_at + 1 < asked and answered < starting_at]
    wrong = [entry for entry in during if entry[0] != 503 or "redis" not in entry[1]]
    assert during and not wrong, wrong
    recovered = [answered for asked, answered, status, _ in statuses
                 if asked > up_at and status == 200]
    assert recovered and recovered[0] - up_at < 15
    # Jobs were finished all along, the outage included; each is counted once.
    assert Job.objects.count() == produced > 30
    stats = UsageStats.objects.get(user=alice)
    assert (stats.jobs, stats.failures) == (produced, produced)
    assert stats.tokens == sum(n % 5 for n in range(produced))
    sent = collections.Counter(receiver.keys())
    assert len(sent) == produced  # every job's webhook arrived; a repeat has the same key
