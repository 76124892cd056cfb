import pytest

from config.metrics import cache_requests
from marketplace.jobs import job_create, job_transition
from marketplace.models import JobState

pytestmark = pytest.mark.django_db


def test_metrics_are_served_in_prometheus_format(client):
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain")
    assert b"# TYPE inkmarket_job_ttft_seconds histogram" in response.content


def test_jobs_are_counted_by_state_at_scrape_time(client):
    for _ in range(2):
        job_create(model="m", prompt="p", max_tokens=8, temperature=0.0)
    failed = job_create(model="m", prompt="p", max_tokens=8, temperature=0.0)
    job_transition(job_id=failed.id, to=JobState.FAILED)
    text = client.get("/metrics").content.decode()
    assert 'inkmarket_jobs{state="NEGOTIATING"} 2.0' in text
    assert 'inkmarket_jobs{state="FAILED"} 1.0' in text


def test_counters_show_what_was_counted(client):
    before = cache_requests.labels("hit")._value.get()
    cache_requests.labels("hit").inc()
    text = client.get("/metrics").content.decode()
    assert f'inkmarket_cache_requests_total{{result="hit"}} {before + 1}' in text
