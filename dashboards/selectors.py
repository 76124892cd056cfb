"""Reads behind the dashboards. Jobs and tokens come from marketplace jobs (every job the
writer, the gateway or a batch runs has its owner); cost is what the ledger charged (the
settle entries), and for staff also what the chain was paid."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta

from django.db.models import Avg, Count, Q, QuerySet, Sum
from django.db.models.functions import TruncDate
from django.utils import timezone

from accounts.models import EntryKind, LedgerEntry
from gateway.models import GatewayRequest, RequestStatus
from marketplace.models import (
    DeadLetter,
    DeliveryState,
    Job,
    JobProcessing,
    JobState,
    ProcessingState,
    UsageStats,
    WebhookDelivery,
)

DAYS = 30


@dataclass(frozen=True)
class DayUsage:
    day: date
    jobs: int = 0
    failed: int = 0
    tokens: int = 0
    charged_wei: int = 0
    paid_wei: int = 0


def _days(days: int) -> list[date]:
    today = timezone.localdate()
    return [today - timedelta(days=days - 1 - i) for i in range(days)]


def _jobs(user) -> QuerySet[Job]:
    return Job.objects.all() if user is None else Job.objects.filter(owner=user)


def _charges(user) -> QuerySet[LedgerEntry]:
    entries = LedgerEntry.objects.filter(kind=EntryKind.SETTLE)
    return entries if user is None else entries.filter(account__user=user)


def usage_by_day(*, user=None, days: int = DAYS) -> list[DayUsage]:
    """Jobs, failures, tokens, charges and chain payments per day for the last `days`
    days (today last), of one user or, with user=None, of everybody."""
    span = _days(days)
    since = span[0]
    rows = {
        r["day"]: r for r in _jobs(user).filter(created__date__gte=since)
        .annotate(day=TruncDate("created")).values("day")
        .annotate(jobs=Count("pk"), tokens=Sum("tokens"), paid=Sum("paid_wei"),
                  failed=Count("pk", filter=Q(state__in=[JobState.FAILED,
                                                         JobState.REFUNDED])))
        .order_by()
    }
    charged = {
        r["day"]: int(r["wei"] or 0) for r in _charges(user).filter(created_at__date__gte=since)
        .annotate(day=TruncDate("created_at")).values("day").annotate(wei=Sum("amount_wei"))
        .order_by()
    }
    out = []
    for day in span:
        r = rows.get(day, {})
        out.append(DayUsage(day=day, jobs=r.get("jobs", 0), failed=r.get("failed", 0),
                            tokens=int(r.get("tokens") or 0), charged_wei=charged.get(day, 0),
                            paid_wei=int(r.get("paid") or 0)))
    return out


@dataclass(frozen=True)
class Totals:
    jobs: int
    tokens: int
    failures: int
    charged_wei: int
    paid_wei: int


def usage_totals(*, user=None) -> Totals:
    """All-time totals: the processor's per-user statistics, and the ledger's charges."""
    stats = UsageStats.objects.all() if user is None else UsageStats.objects.filter(user=user)
    figures = stats.aggregate(jobs=Sum("jobs"), tokens=Sum("tokens"), failures=Sum("failures"),
                              paid=Sum("cost_wei"))
    charged = _charges(user).aggregate(wei=Sum("amount_wei"))["wei"] or 0
    return Totals(jobs=figures["jobs"] or 0, tokens=figures["tokens"] or 0,
                  failures=figures["failures"] or 0, charged_wei=int(charged),
                  paid_wei=int(figures["paid"] or 0))


@dataclass(frozen=True)
class UserUsage:
    username: str
    jobs: int
    tokens: int
    failed: int
    charged_wei: int


def top_users(*, days: int = DAYS, limit: int = 10) -> list[UserUsage]:
    """The users with the most tokens over the last `days` days."""
    since = timezone.now() - timedelta(days=days)
    rows = (Job.objects.filter(created__gte=since, owner__isnull=False)
            .values("owner_id", "owner__username")
            .annotate(jobs=Count("pk"), tokens=Sum("tokens"),
                      failed=Count("pk", filter=Q(state__in=[JobState.FAILED,
                                                             JobState.REFUNDED])))
            .order_by("-tokens", "owner__username")[:limit])
    ids = [r["owner_id"] for r in rows]
    charged = dict(
        _charges(None).filter(created_at__gte=since, account__user_id__in=ids)
        .values_list("account__user_id").annotate(wei=Sum("amount_wei")).order_by())
    return [UserUsage(username=r["owner__username"], jobs=r["jobs"],
                      tokens=int(r["tokens"] or 0), failed=r["failed"],
                      charged_wei=int(charged.get(r["owner_id"]) or 0)) for r in rows]


def background_work() -> dict[str, int]:
    """What the background work has in hand and what it gave up on."""
    return {
        "processing_waiting": JobProcessing.objects.filter(
            state__in=[ProcessingState.PENDING, ProcessingState.RUNNING]).count(),
        "processing_failed": JobProcessing.objects.filter(state=ProcessingState.FAILED).count(),
        "webhooks_waiting": WebhookDelivery.objects.filter(
            state__in=[DeliveryState.PENDING, DeliveryState.SENDING]).count(),
        "webhooks_failed": WebhookDelivery.objects.filter(state=DeliveryState.FAILED).count(),
        "dead_letters": DeadLetter.objects.filter(resolved=False).count(),
    }


def jobs_by_state() -> dict[str, int]:
    counts = dict(Job.objects.values_list("state").annotate(n=Count("pk")).order_by())
    return {label: counts.get(value, 0) for value, label in JobState.choices}


@dataclass(frozen=True)
class EndpointUsage:
    endpoint: str
    requests: int
    failed: int
    cached: int
    tokens: int
    avg_ms: float | None


def gateway_by_endpoint(*, days: int = DAYS) -> list[EndpointUsage]:
    """The /v1 gateway's requests over the last `days` days, per endpoint."""
    since = timezone.now() - timedelta(days=days)
    rows = (GatewayRequest.objects.filter(created_at__gte=since).values("endpoint")
            .annotate(requests=Count("pk"), tokens=Sum("tokens"), avg_ms=Avg("duration_ms"),
                      failed=Count("pk", filter=Q(status=RequestStatus.FAILED)),
                      cached=Count("pk", filter=Q(cached=True)))
            .order_by("-requests", "endpoint"))
    return [EndpointUsage(endpoint=r["endpoint"], requests=r["requests"], failed=r["failed"],
                          cached=r["cached"], tokens=int(r["tokens"] or 0),
                          avg_ms=round(r["avg_ms"], 1) if r["avg_ms"] is not None else None)
            for r in rows]


def gateway_requests_by_day(*, days: int = DAYS) -> list[tuple[date, int]]:
    span = _days(days)
    counts = dict(GatewayRequest.objects.filter(created_at__date__gte=span[0])
                  .annotate(day=TruncDate("created_at")).values_list("day")
                  .annotate(n=Count("pk")).order_by())
    return [(day, counts.get(day, 0)) for day in span]
