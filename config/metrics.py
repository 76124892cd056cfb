"""Prometheus metrics (prometheus-client), served at /metrics.

Figures the database or the broker already knows are read when Prometheus scrapes, so
every process (web replicas, workers) reports the same truth: jobs by state, the wei paid
for them, time to first token and job duration, gas, the Celery queue's length, the
success rate over the last hour. Counts that only the code sees as they happen (result
cache hits and misses, rate-limit rejections) go through `count_cache_lookup` and
`count_rate_limit_rejection`, which add to Redis so that all processes share one total.

Metric values are float64: wei totals above 2**53 are approximate here; the exact figures
are in the database (jobs, ledger).
"""

from __future__ import annotations

import atexit
import logging
import threading
import time
from collections import Counter as _Tally
from datetime import timedelta

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Gauge, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
)

log = logging.getLogger(__name__)
registry = CollectorRegistry()

TTFT_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30)
DURATION_BUCKETS = (0.5, 1, 2, 5, 10, 20, 40, 60, 120, 300)

# Set by discovery in the process that runs jobs, and by every scrape from /health's probe.
hosts_available = Gauge("inkmarket_hosts_available", "Hosts that answered the last probe",
                        ["model"], registry=registry)


# ---- counts that code reports as they happen -------------------------------------------


class _SharedCounts:
    """Counters kept in a Redis hash (one total across processes), or in this process
    when there is no Redis. Counting never fails the caller and rarely waits: counts
    gather in the process and go to Redis at most once a second (and at exit); while
    Redis is unreachable they stay here and are added when it is back."""

    RETRY_AFTER_S = 5.0
    FLUSH_EVERY_S = 1.0

    def __init__(self, key: str):
        self.key = key
        self.local: _Tally[str] = _Tally()
        self.lock = threading.Lock()
        self._down_until = 0.0
        self._flushed_at = 0.0
        atexit.register(self.flush)

    def _client(self):
        from django.conf import settings

        if not settings.REDIS_URL:
            return None
        return _redis_client(settings.REDIS_URL)

    def add(self, field: str, amount: int = 1) -> None:
        with self.lock:
            self.local[field] += amount
        if time.monotonic() - self._flushed_at >= self.FLUSH_EVERY_S:
            self.flush()

    def flush(self) -> None:
        client = self._client()
        if client is None or time.monotonic() < self._down_until:
            return
        self._flushed_at = time.monotonic()
        with self.lock:
            pending, self.local = self.local, _Tally()
        if not pending:
            return
        try:
            with client.pipeline(transaction=False) as pipe:
                for field, amount in pending.items():
                    pipe.hincrby(self.key, field, amount)
                pipe.execute()
        except Exception as exc:  # redis-py raises several families; all mean "not now"
            self._down_until = time.monotonic() + self.RETRY_AFTER_S
            with self.lock:
                self.local.update(pending)
            log.debug("metrics counts kept in process: %s", exc)

    def read(self) -> dict[str, int]:
        self.flush()
        client = self._client()
        totals: _Tally[str] = _Tally()
        if client is not None and time.monotonic() >= self._down_until:
            try:
                totals.update({k.decode(): int(v) for k, v in client.hgetall(self.key).items()})
            except Exception:
                self._down_until = time.monotonic() + self.RETRY_AFTER_S
        with self.lock:
            totals.update(self.local)
        return dict(totals)


_clients: dict[str, object] = {}


def _redis_client(url: str):
    import redis

    client = _clients.get(url)
    if client is None:
        # Short timeouts: a metric is never worth holding up a request for.
        client = _clients[url] = redis.Redis.from_url(url, socket_timeout=0.5,
                                                       socket_connect_timeout=0.5)
    return client


cache_counts = _SharedCounts("inkmarket:metrics:cache")
rate_limit_counts = _SharedCounts("inkmarket:metrics:ratelimit")


def count_cache_lookup(*, hit: bool, cache: str = "result") -> None:
    """Count one look-up in a result cache (`cache` names which: writer, gateway, ...).
    Fine to call from async code: at most one short Redis call a second per process."""
    cache_counts.add(f"{cache}:{'hit' if hit else 'miss'}")


def count_rate_limit_rejection(*, tier: str) -> None:
    """Count one request refused by a rate limit, by the caller's tier."""
    rate_limit_counts.add(tier or "unknown")


# ---- figures read at scrape time ----------------------------------------------------------


def _histogram(name: str, doc: str, jobs, start: str, end: str,
               buckets: tuple[float, ...]) -> HistogramMetricFamily:
    """A histogram of `end - start` over `jobs`, counted per bucket by the database."""
    from django.db.models import Count, DurationField, ExpressionWrapper, F, Q, Sum

    span = ExpressionWrapper(F(end) - F(start), output_field=DurationField())
    per_bucket = {f"le{i}": Count("pk", filter=Q(span__lte=timedelta(seconds=b)))
                  for i, b in enumerate(buckets)}
    rows = (jobs.filter(**{f"{start}__isnull": False, f"{end}__isnull": False})
            .annotate(span=span).values("model")
            .annotate(n=Count("pk"), total=Sum("span"), **per_bucket).order_by("model"))
    family = HistogramMetricFamily(name, doc, labels=["model"])
    for row in rows:
        counts = [(str(float(b)), row[f"le{i}"]) for i, b in enumerate(buckets)]
        counts.append(("+Inf", row["n"]))
        total = row["total"].total_seconds() if row["total"] is not None else 0.0
        family.add_metric([row["model"]], counts, sum_value=total)
    return family


def success_summary(*, window: timedelta = timedelta(hours=1)) -> dict:
    """The share of jobs finished in the last hour that completed; degraded under 95 %."""
    from django.conf import settings
    from django.db.models import Count, Q
    from django.utils import timezone

    from marketplace.models import Job, JobState

    since = timezone.now() - window
    counts = Job.objects.filter(finished_at__gte=since).aggregate(
        done=Count("id", filter=Q(state=JobState.COMPLETED)),
        failed=Count("id", filter=Q(state__in=[JobState.FAILED, JobState.REFUNDED])))
    finished = counts["done"] + counts["failed"]
    if not finished:
        return {"status": "idle", "success_rate": None, "jobs_last_hour": 0}
    rate = counts["done"] / finished
    return {"status": "degraded" if rate < settings.OPS_DEGRADED_BELOW else "ok",
            "success_rate": round(rate, 4), "jobs_last_hour": finished}


class _ScrapeCollector:
    """Everything read from the database, Redis and the broker when Prometheus scrapes."""

    def describe(self):
        return []  # nothing to read until a scrape; the database may not be ready yet

    def collect(self):
        from django.db.models import Count, Sum

        from marketplace.models import ChainTransaction, Job, JobState

        jobs = GaugeMetricFamily("inkmarket_jobs", "Marketplace jobs by state", labels=["state"])
        for row in Job.objects.values("state").annotate(n=Count("id")).order_by():
            jobs.add_metric([row["state"]], row["n"])
        yield jobs

        cost = CounterMetricFamily("inkmarket_job_cost_wei", "Wei paid on chain for jobs",
                                   labels=["model"])
        for row in Job.objects.values("model").annotate(wei=Sum("paid_wei")).order_by():
            cost.add_metric([row["model"]], float(row["wei"] or 0))
        yield cost

        finished = Job.objects.filter(state=JobState.COMPLETED)
        yield _histogram("inkmarket_job_ttft_seconds", "Time from request to first token",
                         finished, "created", "first_token_at", TTFT_BUCKETS)
        yield _histogram("inkmarket_job_duration_seconds", "Time from request to the end",
                         finished, "created", "finished_at", DURATION_BUCKETS)

        gas = CounterMetricFamily("inkmarket_gas_spent", "Gas used by our transactions",
                                  labels=["function"])
        for row in (ChainTransaction.objects.filter(gas_used__isnull=False)
                    .values("function").annotate(gas=Sum("gas_used")).order_by()):
            gas.add_metric([row["function"]], float(row["gas"] or 0))
        yield gas

        cache = CounterMetricFamily("inkmarket_cache_requests", "Result cache look-ups",
                                    labels=["cache", "result"])
        for field, n in sorted(cache_counts.read().items()):
            name, _, result = field.rpartition(":")
            cache.add_metric([name, result], n)
        yield cache

        limited = CounterMetricFamily("inkmarket_rate_limit_rejections",
                                      "Requests refused by a rate limit", labels=["tier"])
        for tier, n in sorted(rate_limit_counts.read().items()):
            limited.add_metric([tier], n)
        yield limited

        summary = success_summary()
        if summary["success_rate"] is not None:
            yield GaugeMetricFamily("inkmarket_job_success_ratio_1h",
                                    "Completed share of the jobs finished in the last hour",
                                    value=summary["success_rate"])
        yield GaugeMetricFamily("inkmarket_degraded",
                                "1 when the success rate over the last hour is under 95 %",
                                value=1 if summary["status"] == "degraded" else 0)

        length = celery_queue_length()
        if length is not None:
            yield GaugeMetricFamily("inkmarket_celery_queue_length",
                                    "Tasks waiting in the Celery queue", value=length)


def celery_queue_length() -> int | None:
    from django.conf import settings

    if not settings.REDIS_URL:
        return None
    import redis

    try:
        return int(_redis_client(settings.REDIS_URL).llen("celery"))
    except redis.RedisError:
        return None


registry.register(_ScrapeCollector())


def render() -> tuple[bytes, str]:
    from config.health import hosts_probe

    try:
        for model, n in hosts_probe().get("by_model", {}).items():
            hosts_available.labels(model).set(n)
    except Exception as exc:  # an unreachable chain must not take /metrics down with it
        log.warning("hosts probe failed: %s", exc)
    return generate_latest(registry), CONTENT_TYPE_LATEST
