"""`/health`: each dependency checked for real, with a short timeout, and named.
(`/health/live` and `/health/ready` are the narrower probes Kubernetes uses.)

Checks: the database, Redis (when configured), the chain's JSON-RPC endpoint, and the
hosts: how many registered hosts answer their capability probe (at least
OPS_HEALTH_MIN_HOSTS must). 200 when every check passes, else 503 naming the ones that
failed. The body also carries the summary of the last hour's jobs: "degraded" when fewer
than 95 % completed; that is reported, not a failure of the process (a restart would not
help).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable

from django.conf import settings
from django.db import connection
from django.http import HttpResponse, JsonResponse

RPC_TIMEOUT_S = 2.0
PROBE_TIMEOUT_S = 2.0


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


def _check_chain() -> dict:
    import httpx

    response = httpx.post(settings.CHAIN_RPC, timeout=RPC_TIMEOUT_S, json={
        "jsonrpc": "2.0", "id": 1, "method": "eth_blockNumber", "params": []})
    response.raise_for_status()
    body = response.json()
    if "result" not in body:
        raise RuntimeError(f"the node answered {body.get('error')}")
    return {"block": int(body["result"], 16)}


# ---- hosts ----------------------------------------------------------------------------------

_probe_lock = threading.Lock()
_probe_cache: dict[str, tuple[float, dict]] = {}


async def _probe_hosts() -> dict:
    import aiohttp
    from web3 import AsyncHTTPProvider, AsyncWeb3

    from marketplace.chain.contracts import Chain
    from marketplace.chain.deploy import load_deployment

    # No retries: a health probe reports the node as it is now, and fast.
    w3 = AsyncWeb3(AsyncHTTPProvider(settings.CHAIN_RPC, exception_retry_configuration=None,
                                     request_kwargs={"timeout": RPC_TIMEOUT_S}))
    try:
        deployment = await load_deployment(w3, settings.CHAIN_DEPLOYMENTS_DIR)
        if deployment is None:
            raise RuntimeError("no contracts recorded for this chain")
        chain = Chain(w3, deployment)
        nodes: dict[str, tuple[str, set[str]]] = {}
        for model in settings.OPS_HEALTH_MODELS:
            for node in await chain.active_nodes(model):
                nodes.setdefault(node.address, (node.url, set()))[1].add(model)
    finally:
        await w3.provider.disconnect()

    async def answers(session: aiohttp.ClientSession, url: str) -> bool:
        try:
            async with session.get(f"{url.rstrip('/')}/v1/capabilities") as response:
                return response.status == 200
        except (aiohttp.ClientError, TimeoutError):
            return False

    timeout = aiohttp.ClientTimeout(total=PROBE_TIMEOUT_S)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        up = await asyncio.gather(*(answers(session, url) for url, _ in nodes.values()))
    by_model = {model: 0 for model in settings.OPS_HEALTH_MODELS}
    for (_, models), ok in zip(nodes.values(), up, strict=True):
        for model in models:
            by_model[model] += ok
    return {"registered": len(nodes), "answering": sum(up), "by_model": by_model}


def hosts_probe(*, fresh: bool = False) -> dict:
    """Registered and answering hosts, cached for OPS_HEALTH_CACHE_S so that probes from
    load balancers and scrapes do not turn into a flood of requests to every host."""
    key = f"{settings.CHAIN_RPC}|{settings.CHAIN_DEPLOYMENTS_DIR}"
    with _probe_lock:
        cached = _probe_cache.get(key)
        if cached and not fresh and time.monotonic() - cached[0] < settings.OPS_HEALTH_CACHE_S:
            return cached[1]
        # A thread of its own: this may be called from a running event loop's thread.
        result: dict = {}

        def run() -> None:
            try:
                result["value"] = asyncio.run(_probe_hosts())
            except BaseException as exc:  # handed back to the caller below
                result["error"] = exc

        thread = threading.Thread(target=run)
        thread.start()
        thread.join()
        if "error" in result:
            raise result["error"]
        _probe_cache[key] = (time.monotonic(), result["value"])
        return result["value"]


def _check_hosts() -> dict:
    found = hosts_probe()
    if found["answering"] < settings.OPS_HEALTH_MIN_HOSTS:
        raise RuntimeError(f"{found['answering']} of {found['registered']} registered hosts "
                           f"answer; at least {settings.OPS_HEALTH_MIN_HOSTS} must")
    return {k: found[k] for k in ("registered", "answering")}


def checks() -> dict[str, Callable[[], dict | None]]:
    found: dict[str, Callable[[], dict | None]] = {"database": _check_database}
    if settings.REDIS_URL:
        found["redis"] = _check_redis
    found["chain"] = _check_chain
    found["hosts"] = _check_hosts
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
    from config.metrics import render

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
    from config.metrics import success_summary

    healthy, results = run_checks()
    body: dict = {"status": "ok" if healthy else "unhealthy", "checks": results}
    if healthy:
        try:
            body["summary"] = success_summary()
        except Exception as exc:  # the checks above already said the database answers
            body["summary"] = {"status": "unknown", "error": str(exc)[:200]}
        if body["summary"]["status"] == "degraded":
            body["status"] = "degraded"
    else:
        body["failing"] = [name for name, result in results.items() if not result["ok"]]
    return JsonResponse(body, status=200 if healthy else 503)
