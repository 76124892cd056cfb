"""Discovery: who serves a model, from NodeRegistry plus each host's own capabilities.

The registry says who registered, at what price, with what reputation; a capability
request to each host says whether it is up, how busy it is, and how long it takes to
answer (the probe latency used in ranking). The combined list is cached for a short TTL
per model, so a burst of jobs does not probe every host for each one.

A host whose registered URL the host URL policy refuses (hosturl.py: loopback, private
and metadata addresses, unless settings.MARKETPLACE_ALLOWED_HOST_NETWORKS lets them in)
is never probed: it is logged, counted (inkmarket_hosts_refused_total) and left out. A host
whose answer is too large or does not follow the protocol (bounded.py) is left out too.
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
from marketplace.client.bounded import Limits, SeenCapabilities, parse_body, read_body
from marketplace.client.errors import ClientError
from marketplace.client.hosturl import host_url_check
from marketplace.client.ranking import Candidate
from observability.metrics import hosts_available, hosts_refused

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


async def _probe(address: str, url: str) -> tuple[SeenCapabilities, float] | None:
    try:
        base = await host_url_check(url)
    except ClientError as exc:
        hosts_refused.labels(exc.code).inc()
        log.warning("host %s skipped: %s", address, exc)
        return None
    started = time.perf_counter()
    try:
        async with asyncio.timeout(PROBE_TIMEOUT_S):
            async with pool.session().get(f"{base}/v1/capabilities",
                                          allow_redirects=False) as response:
                if response.status != 200:
                    return None
                body = await read_body(response, Limits.from_settings())
            capabilities = parse_body(body, SeenCapabilities)
    except ClientError as exc:
        log.warning("host %s left out: %s", address, exc)
        return None
    except (aiohttp.ClientError, TimeoutError):
        return None
    return capabilities, (time.perf_counter() - started) * 1000


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
    probes = await asyncio.gather(*(_probe(node.address, node.url) for node in nodes))
    local = await sync_to_async(_local_record)([n.address for n in nodes])
    found: list[Candidate] = []
    for node, probe in zip(nodes, probes, strict=True):
        if probe is None:
            continue  # down or not answering: not a candidate this round
        capabilities, latency_ms = probe
        if model not in {m.id for m in capabilities.models}:
            continue
        succeeded, failed = local.get(node.address, (0, 0))
        queue = capabilities.queue
        found.append(Candidate(
            address=node.address, url=node.url, model=model,
            price_per_token_wei=node.price_per_token_wei, latency_ms=latency_ms,
            chain_completed=node.completed, chain_failed=node.failed,
            chain_disputed=node.disputed, local_succeeded=succeeded, local_failed=failed,
            queue_free=queue is None or queue.length < queue.capacity,
        ))
    _cache[model] = (time.monotonic(), found)
    _cache.move_to_end(model)
    while len(_cache) > settings.DISCOVERY_CACHE_MAX_MODELS:
        _cache.popitem(last=False)
    if model in settings.MARKETPLACE_MODELS or model in settings.GATEWAY_MODELS:
        hosts_available.labels(model).set(len(found))  # a label per model: known ones only
    return found
