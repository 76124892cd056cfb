"""The marketplace's figures for /metrics, read from the database when Prometheus scrapes,
so every process (web replicas, workers) reports the same truth: jobs by state, the wei
paid for them, time to first token and job duration, gas, the success rate over the last
hour. Registered with observability.metrics when the app is ready (marketplace.apps).

Metric values are float64: wei totals above 2**53 are approximate here; the exact figures
are in the database (jobs, ledger).
"""

from __future__ import annotations

from datetime import timedelta

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

from observability.metrics import hosts_available

TTFT_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30)
DURATION_BUCKETS = (0.5, 1, 2, 5, 10, 20, 40, 60, 120, 300)


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


class JobsCollector:
    """Jobs, payments, timings and gas, read from the database when Prometheus scrapes."""

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

        summary = success_summary()
        if summary["success_rate"] is not None:
            yield GaugeMetricFamily("inkmarket_job_success_ratio_1h",
                                    "Completed share of the jobs finished in the last hour",
                                    value=summary["success_rate"])
        yield GaugeMetricFamily("inkmarket_degraded",
                                "1 when the success rate over the last hour is under 95 %",
                                value=1 if summary["status"] == "degraded" else 0)


def hosts_gauge_refresh() -> None:
    """Set the hosts gauge from the beat's last hosts probe before a scrape (a scrape
    itself never probes a host)."""
    from marketplace.health import hosts_by_model

    for model, n in hosts_by_model().items():
        hosts_available.labels(model).set(n)
