"""/metrics: Prometheus text behind a bearer token, figures read from the database and
Redis at scrape time."""

import re
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest
from django.test import Client
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from marketplace.health import health_probes_run
from marketplace.jobs import job_create, job_transition
from marketplace.models import ChainTransaction, Job, JobState
from observability import metrics
from observability.metrics import count_cache_lookup, count_rate_limit_rejection

pytestmark = pytest.mark.django_db
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def no_hosts_probe(settings, unused_port):
    """No chain here: the hosts gauge is left out, and the scrape must not suffer for it."""
    settings.CHAIN_RPC = f"http://127.0.0.1:{unused_port}"


@pytest.fixture
def client(client, metrics_token):
    """Prometheus, presenting the metrics token."""
    client.defaults["HTTP_AUTHORIZATION"] = metrics_token["Authorization"]
    return client


def scrape(client) -> dict[str, dict[tuple, float]]:
    response = client.get("/metrics")
    assert response.status_code == 200
    found: dict[str, dict[tuple, float]] = {}
    for family in text_string_to_metric_families(response.content.decode()):
        for sample in family.samples:
            found.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = (
                sample.value)
    return found


def test_metrics_are_served_in_prometheus_format(client):
    job = job_create(model="m", prompt="p", max_tokens=8, temperature=0.0)
    Job.objects.filter(pk=job.pk).update(state=JobState.COMPLETED, paid_wei=5,
                                         finished_at=timezone.now())
    ChainTransaction.objects.create(tx_hash="0x" + "0" * 64, chain_id=1, account="0x1",
                                    contract="JobMarketplace", function="postJob", nonce=0,
                                    status="mined", gas_used=21000)
    count_cache_lookup(hit=False)
    count_rate_limit_rejection(tier="free")
    response = client.get("/metrics")
    assert response["Content-Type"].startswith("text/plain")
    text = response.content.decode()
    for name in ("inkmarket_jobs", "inkmarket_job_cost_wei", "inkmarket_job_ttft_seconds",
                 "inkmarket_job_duration_seconds", "inkmarket_cache_requests",
                 "inkmarket_rate_limit_rejections", "inkmarket_gas_spent",
                 "inkmarket_hosts_available", "inkmarket_celery_queue_length",
                 "inkmarket_job_success_ratio_1h", "inkmarket_degraded"):
        assert re.search(rf"^# HELP {name}(_total)? ", text, re.M), name
    assert "# TYPE inkmarket_job_ttft_seconds histogram" in text


def test_jobs_are_counted_by_state_at_scrape_time(client):
    for _ in range(2):
        job_create(model="m", prompt="p", max_tokens=8, temperature=0.0)
    failed = job_create(model="m", prompt="p", max_tokens=8, temperature=0.0)
    job_transition(job_id=failed.id, to=JobState.FAILED)
    found = scrape(client)["inkmarket_jobs"]
    assert found[(("state", "NEGOTIATING"),)] == 2
    assert found[(("state", "FAILED"),)] == 1


def test_cost_gas_and_timings_come_from_the_jobs_and_transactions(client):
    now = timezone.now()
    for seconds, ttft, paid in ((0.8, 0.2, 10**12), (3.0, 0.7, 3 * 10**12)):
        job = job_create(model="tiny", prompt="p", max_tokens=8, temperature=0.0)
        Job.objects.filter(pk=job.pk).update(
            state=JobState.COMPLETED, paid_wei=paid, created=now,
            first_token_at=now + timedelta(seconds=ttft),
            finished_at=now + timedelta(seconds=seconds))
    for i, gas in enumerate((21000, 50000)):
        ChainTransaction.objects.create(tx_hash=f"0x{i:064x}", chain_id=1, account="0x1",
                                        contract="JobMarketplace", function="postJob",
                                        nonce=i, status="mined", gas_used=gas)
    found = scrape(client)
    assert found["inkmarket_job_cost_wei_total"][(("model", "tiny"),)] == 4 * 10**12
    assert found["inkmarket_gas_spent_total"][(("function", "postJob"),)] == 71000
    duration = found["inkmarket_job_duration_seconds_bucket"]
    assert duration[(("le", "1.0"), ("model", "tiny"))] == 1
    assert duration[(("le", "5.0"), ("model", "tiny"))] == 2
    assert found["inkmarket_job_duration_seconds_sum"][(("model", "tiny"),)] == pytest.approx(3.8)
    ttft = found["inkmarket_job_ttft_seconds_bucket"]
    assert ttft[(("le", "0.25"), ("model", "tiny"))] == 1
    assert ttft[(("le", "+Inf"), ("model", "tiny"))] == 2


def test_cache_and_rate_limit_counts_are_shared_by_every_process(client):
    before = scrape(client)
    key = (("cache", "result"), ("result", "hit"))
    hits = before.get("inkmarket_cache_requests_total", {}).get(key, 0)
    limited = before.get("inkmarket_rate_limit_rejections_total", {}).get(
        (("tier", "free"),), 0)
    count_cache_lookup(hit=True)
    # Another process counts too (a second web replica or a worker).
    subprocess.run(
        [sys.executable, "-c", "import django; django.setup(); "
         "from observability.metrics import count_cache_lookup, count_rate_limit_rejection; "
         "count_cache_lookup(hit=True); count_rate_limit_rejection(tier='free')"],
        cwd=ROOT, check=True, timeout=60,
        env={**__import__("os").environ, "DJANGO_SETTINGS_MODULE": "config.settings.test"})
    count_rate_limit_rejection(tier="free")
    after = scrape(client)
    assert after["inkmarket_cache_requests_total"][key] == hits + 2
    assert after["inkmarket_rate_limit_rejections_total"][(("tier", "free"),)] == limited + 2


def test_counting_while_redis_is_down_neither_fails_nor_waits(settings, unused_port):
    settings.REDIS_URL = f"redis://127.0.0.1:{unused_port}/0"
    counts = metrics._SharedCounts("inkmarket:metrics:test")
    started = time.monotonic()
    for _ in range(50):
        counts.add("x")
    assert time.monotonic() - started < 2  # one short timeout, then counted in process
    assert counts.read() == {"x": 50}


def test_the_degraded_gauge_follows_the_last_hours_success_rate(client):
    now = timezone.now()
    for i in range(10):
        job = job_create(model="m", prompt="p", max_tokens=8, temperature=0.0)
        Job.objects.filter(pk=job.pk).update(
            state=JobState.FAILED if i == 0 else JobState.COMPLETED, finished_at=now)
    found = scrape(client)
    assert found["inkmarket_job_success_ratio_1h"][()] == 0.9
    assert found["inkmarket_degraded"][()] == 1


def test_hosts_available_counts_the_hosts_that_answered_the_last_probe(client, network,
                                                                        settings):
    settings.OPS_HEALTH_MODELS = ["smollm2-135m-instruct"]
    (host,) = network.start_hosts({"host-1": 10**9})
    health_probes_run()
    found = scrape(client)["inkmarket_hosts_available"]
    assert found[(("model", "smollm2-135m-instruct"),)] == 1
    host.kill()
    health_probes_run()
    found = scrape(client)["inkmarket_hosts_available"]
    assert found[(("model", "smollm2-135m-instruct"),)] == 0


# ---- the token ---------------------------------------------------------------------------


def test_without_the_token_or_with_a_wrong_one_metrics_is_a_401(client, settings):
    anonymous = Client()
    for headers in ({}, {"Authorization": "Bearer wrong-token"},
                    {"Authorization": f"Bearer {settings.METRICS_TOKEN}x"},
                    {"Authorization": f"Basic {settings.METRICS_TOKEN}"},
                    {"Authorization": "Bearer "}):
        response = anonymous.get("/metrics", headers={**headers, "X-Request-ID": "req-42"})
        assert response.status_code == 401, headers
        assert response["WWW-Authenticate"] == 'Bearer realm="metrics"'
        error = response.json()["error"]
        assert error["code"] == "UNAUTHENTICATED" and error["request_id"] == "req-42"
        assert "inkmarket_" not in response.content.decode()
    assert client.get("/metrics").status_code == 200


def test_with_no_token_configured_metrics_is_open_only_when_a_setting_says_so(settings):
    settings.METRICS_TOKEN = None
    settings.METRICS_ALLOW_ANONYMOUS = False
    assert Client().get("/metrics").status_code == 401
    settings.METRICS_ALLOW_ANONYMOUS = True
    assert Client().get("/metrics").status_code == 200
    settings.METRICS_TOKEN = "a-token-now-set-0123456789abcdef0123"
    assert Client().get("/metrics").status_code == 401  # a set token always applies


def test_counting_often_costs_little(settings):
    counts = metrics._SharedCounts("inkmarket:metrics:test-often")
    started = time.monotonic()
    for _ in range(5000):
        counts.add("x")
    assert time.monotonic() - started < 1.0  # one Redis call a second, not one a count
    assert counts.read()["x"] >= 5000


async def test_counting_on_an_event_loop_never_waits_for_a_redis_that_stalls(settings):
    """A Redis that accepts and never answers: a flush waits out its timeout (0.5 s), but
    on its own thread; the loop's requests go on."""
    import asyncio
    import socket

    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    settings.REDIS_URL = f"redis://127.0.0.1:{silent.getsockname()[1]}/0"
    metrics._clients.clear()
    counts = metrics._SharedCounts("inkmarket:metrics:test-stall")
    try:
        ticks, stop = [], asyncio.Event()

        async def ticker():
            while not stop.is_set():
                ticks.append(time.monotonic())
                await asyncio.sleep(0.005)

        running = asyncio.ensure_future(ticker())
        started = time.monotonic()
        for _ in range(3):
            counts.add("x")
            await asyncio.sleep(counts.FLUSH_EVERY_S + 0.05)
        counts.add("x")
        stop.set()
        await running
        # The loop never stood still for the flushes' 0.5 s timeouts.
        assert max(b - a for a, b in zip(ticks, ticks[1:], strict=False)) < 0.2
        assert time.monotonic() - started < 4
        await asyncio.sleep(0.6)  # the last flush times out on its thread
        with counts.lock:
            assert counts.local["x"] == 4  # kept, to be added when Redis answers
    finally:
        metrics._clients.clear()
        silent.close()
