"""Prometheus metrics. Counters and histograms are updated where things happen; figures
that the database or the broker already knows (jobs by status, queue length) are read
when Prometheus scrapes, so every process reports the same truth."""

from __future__ import annotations

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily

registry = CollectorRegistry()

job_cost_wei = Counter("inkmarket_job_cost_wei", "Wei paid for completed jobs", ["model"],
                       registry=registry)
job_ttft_seconds = Histogram(
    "inkmarket_job_ttft_seconds", "Time from request to first token", ["model"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30), registry=registry,
)
job_duration_seconds = Histogram(
    "inkmarket_job_duration_seconds", "Time from request to last token", ["model"],
    buckets=(0.5, 1, 2, 5, 10, 20, 40, 60, 120, 300), registry=registry,
)
cache_requests = Counter("inkmarket_cache_requests", "Result cache look-ups", ["result"],
                         registry=registry)
rate_limit_rejections = Counter("inkmarket_rate_limit_rejections",
                                "Requests refused by a rate limit", ["tier"], registry=registry)
gas_spent = Counter("inkmarket_gas_spent", "Gas used by our transactions", ["function"],
                    registry=registry)
hosts_available = Gauge("inkmarket_hosts_available", "Hosts that answered the last discovery",
                        ["model"], registry=registry)


class _DatabaseCollector:
    """Jobs by status and the Celery queue's length, read at scrape time."""

    def describe(self):
        return []  # nothing to read until a scrape; the database may not be ready yet

    def collect(self):
        from django.db.models import Count

        from marketplace.models import Job

        jobs = GaugeMetricFamily("inkmarket_jobs", "Marketplace jobs by state", labels=["state"])
        for row in Job.objects.values("state").annotate(n=Count("id")).order_by():
            jobs.add_metric([row["state"]], row["n"])
        yield jobs
        length = celery_queue_length()
        if length is not None:
            yield GaugeMetricFamily("inkmarket_celery_queue_length",
                                    "Tasks waiting in the Celery queue", value=length)


def celery_queue_length() -> int | None:
    from django.conf import settings

    if not settings.REDIS_URL:
        return None
    import redis

    client = redis.Redis.from_url(settings.REDIS_URL, socket_timeout=1, socket_connect_timeout=1)
    try:
        return int(client.llen("celery"))
    except redis.RedisError:
        return None
    finally:
        client.close()


registry.register(_DatabaseCollector())


def render() -> tuple[bytes, str]:
    return generate_latest(registry), CONTENT_TYPE_LATEST
