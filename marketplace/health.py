"""The marketplace's part of `/health`: the chain's JSON-RPC endpoint, and how many
registered hosts answer their capability probe (at least OPS_HEALTH_MIN_HOSTS must).

Both reach outside, so no request runs them: the beat task `health_probe` calls
`health_probes_run` every OPS_HEALTH_PROBE_INTERVAL_S, which stores each result in the
database (HealthProbe, one row a probe, read alike by every web process). The checks
registered with observability.health (marketplace.apps) and the hosts gauge on /metrics
read the stored rows; a result older than OPS_HEALTH_STALE_S fails as stale.

Hosts are probed through the client's pool and host URL policy (marketplace.client.hosturl):
a host registered at a URL the policy refuses is never probed and counts as not answering.
Each host's answer is also stored as one probe of its uptime (marketplace.figures).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time

from django.conf import settings

from observability.errors import urls_redacted
from observability.health import CheckFailed

log = logging.getLogger(__name__)

RPC_TIMEOUT_S = 2.0
PROBE_TIMEOUT_S = 2.0
# The hosts probe's answer per host: stored as probes of each host's uptime
# (marketplace.figures), not in the HealthProbe row.
PER_HOST = "per_host"


def _probe_chain() -> dict:
    import httpx

    response = httpx.post(settings.CHAIN_RPC, timeout=RPC_TIMEOUT_S, json={
        "jsonrpc": "2.0", "id": 1, "method": "eth_blockNumber", "params": []})
    response.raise_for_status()
    body = response.json()
    if "result" not in body:
        raise RuntimeError(f"the node answered {body.get('error')}")
    return {"block": int(body["result"], 16)}


# ---- hosts ----------------------------------------------------------------------------------

async def _probe_hosts() -> dict:
    import aiohttp
    from web3 import AsyncWeb3

    from marketplace.chain.connect import http_provider
    from marketplace.chain.contracts import Chain
    from marketplace.chain.deploy import load_deployment
    from marketplace.client import pool
    from marketplace.client.errors import ClientError
    from marketplace.client.hosturl import host_url_check

    # No retries: a health probe reports the node as it is now, and fast.
    w3 = AsyncWeb3(http_provider(settings.CHAIN_RPC, exception_retry_configuration=None,
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

    async def answers(url: str) -> float | None:
        """The round trip in ms, or None where the host did not answer."""
        try:
            base = await host_url_check(url)
            started = time.perf_counter()
            async with asyncio.timeout(PROBE_TIMEOUT_S):
                async with pool.session().get(f"{base}/v1/capabilities",
                                              allow_redirects=False) as response:
                    if response.status != 200:
                        return None
            return round((time.perf_counter() - started) * 1000, 1)
        except (ClientError, aiohttp.ClientError, TimeoutError):
            return None

    try:
        up = await asyncio.gather(*(answers(url) for url, _ in nodes.values()))
    finally:
        await pool.close()  # this event loop is the probe's own
    by_model = {model: 0 for model in settings.OPS_HEALTH_MODELS}
    for (_, models), ms in zip(nodes.values(), up, strict=True):
        for model in models:
            by_model[model] += ms is not None
    return {"registered": len(nodes), "answering": sum(ms is not None for ms in up),
            "by_model": by_model, PER_HOST: dict(zip(nodes, up, strict=True))}


def _run_hosts_probe() -> dict:
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
    return result["value"]


PROBES = {"chain": _probe_chain, "hosts": _run_hosts_probe}


def health_probes_run() -> dict[str, dict]:
    """Probe the chain and the hosts now and store each result (the beat task's work).
    Returns what was stored, by probe name."""
    from django.utils import timezone

    from marketplace.figures import host_probes_record
    from marketplace.models import HealthProbe

    stored: dict[str, dict] = {}
    for name, probe in PROBES.items():
        started = time.perf_counter()
        try:
            detail, error = probe(), ""
        except Exception as exc:  # the probe's failure is its result
            detail, error = {}, urls_redacted(f"{type(exc).__name__}: {exc}")[:500]
            log.warning("health probe %s failed: %s", name, error)
        host_probes_record(detail.pop(PER_HOST, {}))
        row = {"ok": not error, "detail": detail, "error": error,
               "ms": round((time.perf_counter() - started) * 1000, 1),
               "checked_at": timezone.now()}
        HealthProbe.objects.update_or_create(name=name, defaults=row)
        stored[name] = row
    return stored


def _stored(name: str, *, fresh: bool = True) -> dict:
    """The stored result of probe `name`: its details with their age, or CheckFailed when
    it failed, is missing, or (with `fresh`) is older than OPS_HEALTH_STALE_S."""
    from django.utils import timezone

    from marketplace.models import HealthProbe

    row = HealthProbe.objects.filter(name=name).first()
    if row is None:
        raise CheckFailed("not probed yet: the beat task health_probe has not run")
    age = (timezone.now() - row.checked_at).total_seconds()
    if fresh and age > settings.OPS_HEALTH_STALE_S:
        raise CheckFailed(f"stale: the last probe ran {age:.0f} s ago, more than "
                          f"OPS_HEALTH_STALE_S ({settings.OPS_HEALTH_STALE_S:.0f} s); is "
                          f"the beat running?")
    if not row.ok:
        raise CheckFailed(f"{row.error} (probed {age:.0f} s ago)")
    return {**row.detail, "age_s": round(age, 1)}


def check_chain() -> dict:
    return _stored("chain")


def check_hosts() -> dict:
    found = _stored("hosts")
    if found["answering"] < settings.OPS_HEALTH_MIN_HOSTS:
        raise CheckFailed(f"{found['answering']} of {found['registered']} registered hosts "
                          f"answer; at least {settings.OPS_HEALTH_MIN_HOSTS} must")
    return {k: found[k] for k in ("registered", "answering", "age_s")}


def hosts_by_model() -> dict[str, int]:
    """Answering hosts per model from the last hosts probe; empty when it failed or is
    stale (the gauge then keeps no figure rather than an old one)."""
    try:
        return dict(_stored("hosts").get("by_model", {}))
    except CheckFailed:
        return {}


def check_discovery() -> dict:
    """Which path this process's discovery takes: the DHT, or the registry with a warning
    when the DHT's bootstrap nodes are unreachable (marketplace.p2p.client). The fallback
    works, so it does not fail the check; it is reported."""
    from marketplace.p2p.client import status

    return status()
