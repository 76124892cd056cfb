"""Discovery: who serves a model, from NodeRegistry plus each host's own capabilities.

The registry says who registered, at what price, with what reputation; a capability
request to each host says whether it is up, how busy it is, and how long it takes to
answer (the probe latency used in ranking). The combined list is cached for a short TTL
per model, so a burst of jobs does not probe every host for each one.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict

import aiohttp
from asgiref.sync import sync_to_async
from django.conf import settings

from marketplace.chain.contracts import Chain
from marketplace.client import pool
from marketplace.client.ranking import Candidate
from observability.metrics import hosts_available

log = logging.getLogger(__name__)

TTL_S = 10.0
PROBE_TIMEOUT_S = 2.0

# Bounded (settings.DISCOVERY_CACHE_MAX_MODELS, least recently used out first): model ids
# come from callers, and each entry holds every host's figures.
_cache: OrderedDict[str, tuple[float, list[Candidate]]] = OrderedDict()


def invalidate(model: str | None = None) -> None:
    if model is None:
        _cache.clear()
    else:
        _cache.pop(model, None)


async def _probe(url: str) -> tuple[dict, float] | None:
    started = time.perf_counter()
    try:
        async with pool.session().get(
            f"{url.rstrip('/')}/v1/capabilities",
            timeout=aiohttp.ClientTimeout(total=PROBE_TIMEOUT_S),
        ) as response:
            if response.status != 200:
                return None
            body = await response.json()
    except (aiohttp.ClientError, TimeoutError, ValueError):
        return None
    return body, (time.perf_counter() - started) * 1000


def _local_record(addresses: list[str]) -> dict[str, tuple[int, int]]:
    """This client's own past attempts per host: (succeeded, failed)."""
    from django.db.models import Count, Q

    from marketplace.models import AttemptState, JobAttempt

    rows = (
        JobAttempt.objects.filter(host_address__in=addresses)
        .values("host_address")
        .annotate(
            good=Count("id", filter=Q(state=AttemptState.ACCEPTED)),
            bad=Count("id", filter=Q(state__in=[AttemptState.ABANDONED, AttemptState.DISPUTED,
                                               AttemptState.FAILED])),
        )
    )
    return {r["host_address"]: (r["good"], r["bad"]) for r in rows}


async def candidates(model: str, *, chain: Chain | None = None,
                     fresh: bool = False) -> list[Candidate]:
    cached = _cache.get(model)
    if cached and not fresh and time.monotonic() - cached[0] < TTL_S:
        _cache.move_to_end(model)
        return cached[1]
    if chain is None:
        from marketplace.wallet import platform_chain

        chain = await platform_chain()
    nodes = await chain.active_nodes(model)
    probes = await asyncio.gather(*(_probe(node.url) for node in nodes))
    local = await sync_to_async(_local_record)([n.address for n in nodes])
    found: list[Candidate] = []
    for node, probe in zip(nodes, probes, strict=True):
        if probe is None:
            continue  # down or not answering: not a candidate this round
        capabilities, latency_ms = probe
        served = {m.get("id") for m in capabilities.get("models", [])}
        if model not in served:
            continue
        succeeded, failed = local.get(node.address, (0, 0))
        queue = capabilities.get("queue", {})
        found.append(Candidate(
            address=node.address, url=node.url, model=model,
            price_per_token_wei=node.price_per_token_wei, latency_ms=latency_ms,
            chain_completed=node.completed, chain_failed=node.failed,
            chain_disputed=node.disputed, local_succeeded=succeeded, local_failed=failed,
            queue_free=queue.get("length", 0) < queue.get("capacity", 1),
        ))
    _cache[model] = (time.monotonic(), found)
    _cache.move_to_end(model)
    while len(_cache) > settings.DISCOVERY_CACHE_MAX_MODELS:
        _cache.popitem(last=False)
    if model in settings.MARKETPLACE_MODELS or model in settings.GATEWAY_MODELS:
        hosts_available.labels(model).set(len(found))  # a label per model: known ones only
    return found
