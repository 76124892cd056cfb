"""Reads for /v1/usage: tokens, cost and requests of a user per model and per day."""

from __future__ import annotations

from collections import defaultdict
from datetime import timedelta

from django.db.models.functions import TruncDate
from django.utils import timezone

from gateway.models.requests import GatewayRequest


def usage_for_user(*, user_id: int, days: int = 30) -> dict:
    """Every request of the last `days` days, summed per model and per (day, model).
    Costs are summed in Python: exact ints of wei on any database."""
    since = timezone.now() - timedelta(days=days)
    rows = (GatewayRequest.objects.filter(user_id=user_id, created_at__gte=since)
            .annotate(day=TruncDate("created_at"))
            .values_list("day", "model", "tokens", "cost_wei", "cached"))
    by_model: dict[str, dict] = defaultdict(lambda: {"requests": 0, "tokens": 0, "cost": 0,
                                                     "cached": 0})
    by_day: dict[tuple, dict] = defaultdict(lambda: {"requests": 0, "tokens": 0, "cost": 0,
                                                     "cached": 0})
    for day, model, tokens, cost, cached in rows.iterator():
        for bucket in (by_model[model], by_day[(day, model)]):
            bucket["requests"] += 1
            bucket["tokens"] += tokens
            bucket["cost"] += int(cost)
            bucket["cached"] += int(cached)
    total = {"requests": sum(b["requests"] for b in by_model.values()),
             "tokens": sum(b["tokens"] for b in by_model.values()),
             "cost": str(sum(b["cost"] for b in by_model.values()))}

    def shown(bucket: dict) -> dict:
        return {**bucket, "cost": str(bucket["cost"])}

    return {
        "object": "usage", "since": since.isoformat(), "days": days, "total": total,
        "by_model": [{"model": model, **shown(b)} for model, b in sorted(by_model.items())],
        "by_day": [{"date": day.isoformat(), "model": model, **shown(b)}
                   for (day, model), b in sorted(by_day.items())],
    }
