"""/health: every dependency checked for real and named; 503 names what failed."""

import shutil
import subprocess
import time
from datetime import timedelta

import pytest
import redis
from django.utils import timezone

from marketplace.jobs import job_create
from marketplace.models import Job, JobState

pytestmark = pytest.mark.django_db


@pytest.fixture
def own_redis(unused_port, settings):
    """A Redis server of the test's own, so the test can stop it."""
    server = subprocess.Popen(
        [shutil.which("redis-server") or "redis-server", "--port", str(unused_port),
         "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{unused_port}/0"
    client = redis.Redis.from_url(url)
    for _ in range(100):
        try:
            client.ping()
            break
        except redis.ConnectionError:
            time.sleep(0.05)
    client.close()
    settings.REDIS_URL = url
    yield server
    server.kill()
    server.wait()


@pytest.fixture
def marketplace(network, settings):
    """Our contracts on anvil, no host yet; host probes are never cached."""
    settings.OPS_HEALTH_CACHE_S = 0
    settings.OPS_HEALTH_MIN_HOSTS = 1
    return network


def test_health_names_each_dependency_and_answers_200(client, marketplace):
    marketplace.start_hosts({"host-1": 10**9})
    response = client.get("/health")
    assert response.status_code == 200, response.json()
    body = response.json()
    assert body["status"] == "ok"
    checks = body["checks"]
    assert set(checks) == {"database", "redis", "chain", "hosts"}
    assert all(check["ok"] for check in checks.values())
    assert checks["chain"]["block"] > 0
    assert (checks["hosts"]["registered"], checks["hosts"]["answering"]) == (1, 1)
    assert body["summary"]["status"] == "idle"


def test_health_reports_a_stopped_redis_as_unhealthy(client, own_redis, marketplace, settings):
    settings.OPS_HEALTH_MIN_HOSTS = 0
    own_redis.terminate()
    own_redis.wait()
    response = client.get("/health")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "unhealthy"
    assert body["failing"] == ["redis"]
    assert "Connection" in body["checks"]["redis"]["error"]
    assert body["checks"]["database"]["ok"] is True


def test_an_unreachable_chain_fails_the_chain_and_the_hosts(client, marketplace, settings,
                                                           unused_port):
    settings.CHAIN_RPC = f"http://127.0.0.1:{unused_port}"
    response = client.get("/health")
    assert response.status_code == 503
    body = response.json()
    assert body["failing"] == ["chain", "hosts"]
    assert "ConnectError" in body["checks"]["chain"]["error"]


def test_a_registered_host_that_does_not_answer_is_counted_as_down(client, marketplace):
    (host,) = marketplace.start_hosts({"host-1": 10**9})
    host.kill()
    response = client.get("/health")
    assert response.status_code == 503
    hosts = response.json()["checks"]["hosts"]
    assert hosts["ok"] is False
    assert "0 of 1 registered hosts answer; at least 1 must" in hosts["error"]


def test_fewer_than_95_percent_of_the_last_hours_jobs_completing_is_degraded(
        client, marketplace, settings):
    settings.OPS_HEALTH_MIN_HOSTS = 0
    now = timezone.now()
    for i in range(20):
        job = job_create(model="m", prompt="p", max_tokens=8, temperature=0.0)
        state = JobState.FAILED if i < 2 else JobState.COMPLETED
        Job.objects.filter(pk=job.pk).update(state=state, finished_at=now)
    old = job_create(model="m", prompt="p", max_tokens=8, temperature=0.0)
    Job.objects.filter(pk=old.pk).update(state=JobState.COMPLETED,
                                         finished_at=now - timedelta(hours=2))
    body = client.get("/health").json()
    assert body["status"] == "degraded"
    assert body["summary"] == {"status": "degraded", "success_rate": 0.9, "jobs_last_hour": 20}
    Job.objects.filter(state=JobState.FAILED).update(state=JobState.COMPLETED)
    response = client.get("/health")
    assert response.status_code == 200
    assert response.json()["summary"]["status"] == "ok"


def test_liveness_checks_nothing_outside_the_process(client, settings, unused_port):
    settings.CHAIN_RPC = f"http://127.0.0.1:{unused_port}"
    assert client.get("/health/live").json() == {"status": "ok"}


def test_readiness_needs_the_database_and_redis_but_not_the_chain(client, own_redis, settings,
                                                                 unused_port):
    settings.CHAIN_RPC = f"http://127.0.0.1:{unused_port}"
    response = client.get("/health/ready")
    assert response.status_code == 200
    assert set(response.json()["checks"]) == {"database", "redis"}
    own_redis.terminate()
    own_redis.wait()
    response = client.get("/health/ready")
    assert response.status_code == 503
    assert response.json()["failing"] == ["redis"]
