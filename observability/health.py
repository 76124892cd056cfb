"""`/health`: each dependency checked for real, with a short timeout, and named.
(`/health/live` and `/health/ready` are the narrower probes Kubernetes uses.)

Checks: the database and Redis (when configured) here; the apps register theirs
(`check_register`): the marketplace adds the chain's JSON-RPC endpoint and the hosts
(marketplace.health). 200 when every check passes, else 503 naming the ones that
failed. The body also carries the summary of the last hour's jobs: "degraded" when fewer
than 95 % completed; that is reported, not a failure of the process (a restart would not
help).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from django.conf import settings
from django.db import connection
from django.http import HttpResponse, JsonResponse


def _check_database() -> dict | None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()
    return None


def _check_redis() -> dict | None:
    import redis

    client = redis.Redis.from_url(settings.REDIS_URL, socket_connect_timeout=1, socket_timeout=1)
    try:
        client.ping()
    finally:
        client.close()
    return None


_checks: dict[str, Callable[[], dict | None]] = {}
_summary: list[Callable[[], dict]] = []


def check_register(name: str, check: Callable[[], dict | None]) -> None:
    """Add a dependency to /health, after those registered before it. A check returns
    details or None, and raises when the dependency fails."""
    _checks[name] = check


def summary_register(summary: Callable[[], dict]) -> None:
    """What /health reports beside the checks; its "status" may say "degraded"."""
    _summary[:] = [summary]


def checks() -> dict[str, Callable[[], dict | None]]:
    found: dict[str, Callable[[], dict | None]] = {"database": _check_database}
    if settings.REDIS_URL:
        found["redis"] = _check_redis
    found.update(_checks)
    return found


def run_checks(*, only: set[str] | None = None) -> tuple[bool, dict[str, dict]]:
    results: dict[str, dict] = {}
    healthy = True
    for name, check in checks().items():
        if only is not None and name not in only:
            continue
        started = time.perf_counter()
        try:
            detail = check()
        except Exception as exc:  # any failure of a dependency is reported, never raised
            healthy = False
            results[name] = {"ok": False, "error": f"{type(exc).__name__}: {exc}"[:500]}
        else:
            results[name] = {"ok": True, **(detail or {})}
        results[name]["ms"] = round((time.perf_counter() - started) * 1000, 1)
    return healthy, results


def metrics(request):
    from observability.metrics import render

    body, content_type = render()
    return HttpResponse(body, content_type=content_type)


def live(request):
    """Liveness: the process answers. Nothing outside it is checked, so an outage of a
    dependency never gets healthy pods restarted."""
    return JsonResponse({"status": "ok"})


def ready(request):
    """Readiness: what this process needs to serve pages (the database, Redis). The chain
    and the hosts are left to /health: without them pages still serve, jobs wait."""
    healthy, results = run_checks(only={"database", "redis"})
    body: dict = {"status": "ok" if healthy else "unhealthy", "checks": results}
    if not healthy:
        body["failing"] = [name for name, result in results.items() if not result["ok"]]
    return JsonResponse(body, status=200 if healthy else 503)


def health(request):
    healthy, results = run_checks()
    body: dict = {"status": "ok" if healthy else "unhealthy", "checks": results}
    if healthy:
        for summary in _summary:
            try:
                body["summary"] = summary()
            except Exception as exc:  # the checks above already said the database answers
                body["summary"] = {"status": "unknown", "error": str(exc)[:200]}
            if body["summary"]["status"] == "degraded":
                body["status"] = "degraded"
    else:
        body["failing"] = [name for name, result in results.items() if not result["ok"]]
    return JsonResponse(body, status=200 if healthy else 503)
