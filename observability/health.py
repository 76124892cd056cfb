"""`/health`: each dependency checked and named. (`/health/live` and `/health/ready` are
the narrower probes Kubernetes uses.) `/metrics`: Prometheus, behind a bearer token.

Checks: the database and Redis (when configured) here, run on each request: local and
cheap. The apps register theirs (`check_register`): the marketplace adds the chain's
JSON-RPC endpoint and the hosts (marketplace.health). Those never reach outside on a
request: a beat task probes the chain and the hosts and stores the result, and the
registered check reads it, failing (`CheckFailed`) when it failed or is too old. 200 when
every check passes, else 503. The body also carries the summary of the last hour's jobs:
"degraded" when fewer than 95 % completed; that is reported, not a failure of the process
(a restart would not help).

Who sees what: anyone gets {"status"} and the HTTP status; staff users and callers with
`Authorization: Bearer <METRICS_TOKEN>` also get each check's details, the names of the
failing ones and the summary. `/metrics` answers only to that token (401 otherwise),
unless no token is set and METRICS_ALLOW_ANONYMOUS says it may be open (development).
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Callable

from django.conf import settings
from django.db import connection
from django.http import HttpResponse, JsonResponse

from observability.errors import error_body


class CheckFailed(Exception):
    """A check's failure whose message is shown as it is (a stored probe's own text),
    rather than as the exception's class and text."""


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
            error = str(exc) if isinstance(exc, CheckFailed) else f"{type(exc).__name__}: {exc}"
            results[name] = {"ok": False, "error": error[:500]}
        else:
            results[name] = {"ok": True, **(detail or {})}
        results[name]["ms"] = round((time.perf_counter() - started) * 1000, 1)
    return healthy, results


# ---- who may see what ------------------------------------------------------------------


def _digest(value: str) -> bytes:
    return hashlib.sha256(value.encode()).digest()


def token_presented(request) -> bool:
    """The request carries `Authorization: Bearer <METRICS_TOKEN>`. Compared in constant
    time, over digests so that not even the token's length shows in the timing."""
    token = settings.METRICS_TOKEN
    if not token:
        return False
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not given.strip():
        return False
    return hmac.compare_digest(_digest(given.strip()), _digest(token))


def _may_see_details(request) -> bool:
    if token_presented(request):
        return True
    try:
        user = getattr(request, "user", None)
        return bool(user is not None and user.is_authenticated and user.is_staff)
    except Exception:  # the session's database may be the dependency that is down
        return False


def _unauthorized() -> JsonResponse:
    response = JsonResponse(error_body(
        "UNAUTHENTICATED", "/metrics needs the metrics token: Authorization: Bearer <token>"),
        status=401)
    response["WWW-Authenticate"] = 'Bearer realm="metrics"'
    return response


# ---- the views -------------------------------------------------------------------------


def metrics(request):
    from observability.metrics import render

    if not token_presented(request) and (settings.METRICS_TOKEN
                                         or not settings.METRICS_ALLOW_ANONYMOUS):
        return _unauthorized()
    body, content_type = render()
    return HttpResponse(body, content_type=content_type)


def live(request):
    """Liveness: the process answers. Nothing outside it is checked, so an outage of a
    dependency never gets healthy pods restarted."""
    return JsonResponse({"status": "ok"})


def _answer(request, body: dict, healthy: bool) -> JsonResponse:
    if not _may_see_details(request):
        body = {"status": body["status"]}
    return JsonResponse(body, status=200 if healthy else 503)


def ready(request):
    """Readiness: what this process needs to serve pages (the database, Redis). The chain
    and the hosts are left to /health: without them pages still serve, jobs wait."""
    healthy, results = run_checks(only={"database", "redis"})
    body: dict = {"status": "ok" if healthy else "unhealthy", "checks": results}
    if not healthy:
        body["failing"] = [name for name, result in results.items() if not result["ok"]]
    return _answer(request, body, healthy)


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
    return _answer(request, body, healthy)
