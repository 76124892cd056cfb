"""`/health`: each dependency is checked for real, with a short timeout, and named."""

from __future__ import annotations

import time
from collections.abc import Callable

from django.conf import settings
from django.db import connection
from django.http import HttpResponse, JsonResponse


def _check_database() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()


def _check_redis() -> None:
    import redis

    client = redis.Redis.from_url(settings.REDIS_URL, socket_connect_timeout=1, socket_timeout=1)
    try:
        client.ping()
    finally:
        client.close()


def checks() -> dict[str, Callable[[], None]]:
    found: dict[str, Callable[[], None]] = {"database": _check_database}
    if settings.REDIS_URL:
        found["redis"] = _check_redis
    return found


def run_checks() -> tuple[bool, dict[str, dict]]:
    results: dict[str, dict] = {}
    healthy = True
    for name, check in checks().items():
        started = time.perf_counter()
        try:
            check()
        except Exception as exc:  # any failure of a dependency is reported, never raised
            healthy = False
            results[name] = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
        else:
            results[name] = {"ok": True}
        results[name]["ms"] = round((time.perf_counter() - started) * 1000, 1)
    return healthy, results


def metrics(request):
    from config.metrics import render

    body, content_type = render()
    return HttpResponse(body, content_type=content_type)


def health(request):
    healthy, results = run_checks()
    body = {"status": "ok" if healthy else "unhealthy", "checks": results}
    return JsonResponse(body, status=200 if healthy else 503)
