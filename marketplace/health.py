"""The marketplace's part of `/health`: the chain's JSON-RPC endpoint, and how many
registered hosts answer their capability probe (at least OPS_HEALTH_MIN_HOSTS must).
Registered with observability.health when the app is ready (marketplace.apps).

Hosts are probed through the client's pool and host URL policy (marketplace.client.hosturl):
a host registered at a URL the policy refuses is never probed and counts as not answering."""

from __future__ import annotations

import asyncio
import threading
import time

from django.conf import settings

RPC_TIMEOUT_S = 2.0
PROBE_TIMEOUT_S = 2.0


def check_chain() -> dict:
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
    from marketplace.client import pool
    from marketplace.client.errors import ClientError
    from marketplace.client.hosturl import host_url_check

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

    async def answers(url: str) -> bool:
        try:
            base = await host_url_check(url)
            async with asyncio.timeout(PROBE_TIMEOUT_S):
                async with pool.session().get(f"{base}/v1/capabilities",
                                              allow_redirects=False) as response:
                    return response.status == 200
        except (ClientError, aiohttp.ClientError, TimeoutError):
            return False

    try:
        up = await asyncio.gather(*(answers(url) for url, _ in nodes.values()))
    finally:
        await pool.close()  # this event loop is the probe's own
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


def check_hosts() -> dict:
    found = hosts_probe()
    if found["answering"] < settings.OPS_HEALTH_MIN_HOSTS:
        raise RuntimeError(f"{found['answering']} of {found['registered']} registered hosts "
                           f"answer; at least {settings.OPS_HEALTH_MIN_HOSTS} must")
    return {k: found[k] for k in ("registered", "answering")}
