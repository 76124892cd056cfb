"""/health: every dependency checked and named; 503 names what failed. The chain and the
hosts are probed by the beat task, never by a request; anyone sees the status, only staff
or the metrics token see the details."""

import shutil
import subprocess
import time
from datetime import timedelta

import pytest
import redis
from django.utils import timezone

from accounts.models import User
from marketplace.health import health_probes_run
from marketplace.jobs import job_create
from marketplace.models import HealthProbe, Job, JobState
from marketplace.tasks import health_probe
from tests.conftest import MODEL

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
    """Our contracts on anvil, no host yet."""
    settings.OPS_HEALTH_MIN_HOSTS = 1
    return network


def test_health_names_each_dependency_and_answers_200(client, marketplace, metrics_token):
    marketplace.start_hosts({"host-1": 10**9})
    health_probes_run()
    response = client.get("/health", headers=metrics_token)
    assert response.status_code == 200, response.json()
    body = response.json()
    assert body["status"] == "ok"
    checks = body["checks"]
    assert set(checks) == {"database", "redis", "chain", "hosts", "discovery"}
    assert all(check["ok"] for check in checks.values())
    assert checks["chain"]["block"] > 0
    assert (checks["hosts"]["registered"], checks["hosts"]["answering"]) == (1, 1)
    assert body["summary"]["status"] == "idle"


def test_health_reports_a_stopped_redis_as_unhealthy(client, own_redis, marketplace, settings,
                                                     metrics_token):
    settings.OPS_HEALTH_MIN_HOSTS = 0
    health_probes_run()
    own_redis.terminate()
    own_redis.wait()
    response = client.get("/health", headers=metrics_token)
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "unhealthy"
    assert body["failing"] == ["redis"]
    assert "Connection" in body["checks"]["redis"]["error"]
    assert body["checks"]["database"]["ok"] is True


def test_an_unreachable_chain_fails_the_chain_and_the_hosts(client, marketplace, settings,
                                                           unused_port, metrics_token):
    settings.CHAIN_RPC = f"http://127.0.0.1:{unused_port}"
    health_probes_run()
    response = client.get("/health", headers=metrics_token)
    assert response.status_code == 503
    body = response.json()
    assert body["failing"] == ["chain", "hosts"]
    assert "ConnectError" in body["checks"]["chain"]["error"]


def test_a_registered_host_that_does_not_answer_is_counted_as_down(client, marketplace,
                                                                  metrics_token):
    (host,) = marketplace.start_hosts({"host-1": 10**9})
    host.kill()
    health_probes_run()
    response = client.get("/health", headers=metrics_token)
    assert response.status_code == 503
    hosts = response.json()["checks"]["hosts"]
    assert hosts["ok"] is False
    assert "0 of 1 registered hosts answer; at least 1 must" in hosts["error"]


def test_fewer_than_95_percent_of_the_last_hours_jobs_completing_is_degraded(
        client, marketplace, settings, metrics_token):
    settings.OPS_HEALTH_MIN_HOSTS = 0
    health_probes_run()
    now = timezone.now()
    for i in range(20):
        job = job_create(model="m", prompt="p", max_tokens=8, temperature=0.0)
        state = JobState.FAILED if i < 2 else JobState.COMPLETED
        Job.objects.filter(pk=job.pk).update(state=state, finished_at=now)
    old = job_create(model="m", prompt="p", max_tokens=8, temperature=0.0)
    Job.objects.filter(pk=old.pk).update(state=JobState.COMPLETED,
                                         finished_at=now - timedelta(hours=2))
    body = client.get("/health", headers=metrics_token).json()
    assert body["status"] == "degraded"
    assert body["summary"] == {"status": "degraded", "success_rate": 0.9, "jobs_last_hour": 20}
    assert client.get("/health").json() == {"status": "degraded"}
    Job.objects.filter(state=JobState.FAILED).update(state=JobState.COMPLETED)
    response = client.get("/health", headers=metrics_token)
    assert response.status_code == 200
    assert response.json()["summary"]["status"] == "ok"


def test_liveness_checks_nothing_outside_the_process(client, settings, unused_port):
    settings.CHAIN_RPC = f"http://127.0.0.1:{unused_port}"
    assert client.get("/health/live").json() == {"status": "ok"}


def test_readiness_needs_the_database_and_redis_but_not_the_chain(client, own_redis, settings,
                                                                 unused_port, metrics_token):
    settings.CHAIN_RPC = f"http://127.0.0.1:{unused_port}"
    response = client.get("/health/ready", headers=metrics_token)
    assert response.status_code == 200
    assert set(response.json()["checks"]) == {"database", "redis"}
    own_redis.terminate()
    own_redis.wait()
    response = client.get("/health/ready", headers=metrics_token)
    assert response.status_code == 503
    assert response.json()["failing"] == ["redis"]
    assert client.get("/health/ready").json() == {"status": "unhealthy"}


# ---- who sees what ---------------------------------------------------------------------


def test_anyone_sees_the_status_alone(client, marketplace, settings, unused_port,
                                      metrics_token):
    settings.OPS_HEALTH_MIN_HOSTS = 0
    health_probes_run()
    response = client.get("/health")
    assert (response.status_code, response.json()) == (200, {"status": "ok"})
    settings.CHAIN_RPC = f"http://127.0.0.1:{unused_port}/key-SECRET123"
    health_probes_run()
    response = client.get("/health")
    assert (response.status_code, response.json()) == (503, {"status": "unhealthy"})
    for wrong in ("Bearer not-the-token", f"Basic {metrics_token['Authorization'][7:]}"):
        shown = client.get("/health", headers={"Authorization": wrong}).json()
        assert shown == {"status": "unhealthy"}


def test_a_signed_in_user_who_is_not_staff_sees_the_status_alone(client, marketplace,
                                                                 settings):
    settings.OPS_HEALTH_MIN_HOSTS = 0
    health_probes_run()
    client.force_login(User.objects.create_user(username="alice", password="pw-alice-long-1"))
    assert client.get("/health").json() == {"status": "ok"}


def test_staff_and_the_token_see_the_details_without_the_rpc_urls_secret(
        client, marketplace, settings, unused_port, metrics_token):
    settings.CHAIN_RPC = f"http://127.0.0.1:{unused_port}/key-SECRET123"
    health_probes_run()
    client.force_login(User.objects.create_user(username="olga", password="pw-olga-long-1",
                                                is_staff=True))
    for headers in ({}, metrics_token):
        body = client.get("/health", headers=headers).json()
        assert body["failing"] == ["chain", "hosts"]
        assert "ConnectError" in body["checks"]["chain"]["error"]
        assert "SECRET123" not in str(body)


# ---- probes run on the beat, never on a request -------------------------------------------


@pytest.mark.django_db(transaction=True)
async def test_many_hits_on_health_and_metrics_send_nothing_to_the_chain_or_the_hosts(
        counting_rpc, counting_host, network, settings, metrics_token):
    from asgiref.sync import sync_to_async
    from django.test import AsyncClient

    settings.OPS_HEALTH_MODELS = [MODEL]
    host = network.anvil.chain("host-1")
    await host.register(api_url=counting_host.url, metadata={}, prices={MODEL: 10**9},
                        stake=10**17)
    await sync_to_async(health_probes_run)()
    # The beat's probe went through both listeners: they count what reaches them.
    assert counting_rpc.count > 0 and counting_host.requests == [("GET", "/v1/capabilities")]
    rpc_before, host_before = counting_rpc.count, counting_host.count

    client = AsyncClient()
    for _ in range(25):
        assert (await client.get("/health")).json() == {"status": "ok"}
        assert (await client.get("/metrics")).status_code == 401
        details = (await client.get("/health", headers=metrics_token)).json()
        assert details["checks"]["hosts"]["answering"] == 1
        assert (await client.get("/metrics", headers=metrics_token)).status_code == 200
    assert (counting_rpc.count, counting_host.count) == (rpc_before, host_before)


def test_the_beat_task_refreshes_the_stored_result(marketplace, settings):
    settings.OPS_HEALTH_MIN_HOSTS = 0
    assert settings.CELERY_BEAT_SCHEDULE["health-probe"] == {
        "task": "marketplace.tasks.health_probe",
        "schedule": settings.OPS_HEALTH_PROBE_INTERVAL_S,
        "options": {"expires": settings.OPS_HEALTH_PROBE_INTERVAL_S}}
    assert health_probe.apply().get() == {"chain": True, "hosts": True}
    first = HealthProbe.objects.get(name="chain")
    assert health_probe.apply().get() == {"chain": True, "hosts": True}
    second = HealthProbe.objects.get(name="chain")
    assert second.checked_at > first.checked_at
    assert second.detail["block"] >= first.detail["block"] > 0


def test_a_stale_or_missing_result_fails_health(client, marketplace, settings, metrics_token):
    settings.OPS_HEALTH_MIN_HOSTS = 0
    response = client.get("/health", headers=metrics_token)
    assert response.status_code == 503  # never probed yet
    assert "not probed yet" in response.json()["checks"]["chain"]["error"]
    health_probe.apply()
    assert client.get("/health").status_code == 200
    settings.OPS_HEALTH_STALE_S = 30
    HealthProbe.objects.update(checked_at=timezone.now() - timedelta(seconds=31))
    response = client.get("/health", headers=metrics_token)
    assert response.status_code == 503
    body = response.json()
    assert body["failing"] == ["chain", "hosts"]
    assert body["checks"]["chain"]["error"].startswith("stale: the last probe ran 31 s ago")
    assert client.get("/health").json() == {"status": "unhealthy"}
