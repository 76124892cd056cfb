"""Discovery: who serves a model, from NodeRegistry plus each host's own capabilities.

The registry says who registered and at what price; our own record and the chain's
job history say how far to trust each host (marketplace.reputation); a capability
request to each host says whether it is up and how busy it is, and is stored as one probe
of its uptime; the host's figures over the recent window (marketplace.figures: TTFT p50,
tokens per second, success rate, uptime) come with it for ranking. The combined list is
cached for a short TTL per model, so a burst of jobs does not probe every host for each
one.

A host whose registered URL the host URL policy refuses (hosturl.py: loopback, private
and metadata addresses, unless settings.MARKETPLACE_ALLOWED_HOST_NETWORKS lets them in)
is never probed: it is logged, counted (inkmarket_hosts_refused_total) and left out. A host
whose answer is too large or does not follow the protocol (bounded.py) is left out too.
"""

from __future__ import annotations

import asyncio
import logging
import statistics
import time
from collections import OrderedDict

import aiohttp
from asgiref.sync import sync_to_async
from django.conf import settings
from web3.exceptions import Web3Exception

from marketplace import figures, reputation
from marketplace.chain.contracts import Chain
from marketplace.chain.errors import ChainError
from marketplace.client import pool
from marketplace.client.bounded import Limits, SeenCapabilities, parse_body, read_body
from marketplace.client.errors import ClientError
from marketplace.client.hosturl import host_url_check
from marketplace.client.ranking import Candidate
from observability.metrics import hosts_available, hosts_refused

log = logging.getLogger(__name__)

TTL_S = 10.0
READ_ERRORS = (OSError, TimeoutError, aiohttp.ClientError, ValueError, Web3Exception)
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


def _credits(nodes, history: reputation.ChainHistory | None,
             exclude: frozenset[str]) -> dict[str, tuple[float, float]]:
    """The chain's evidence per host, in reference jobs at the median registered price."""
    if history is None or not nodes:
        return {}
    median = statistics.median_low(n.price_per_token_wei for n in nodes)
    unit = max(median, 1) * reputation.REFERENCE_TOKENS
    return {n.address: reputation.chain_credit(history.hosts.get(n.address.lower()),
                                               unit_wei=unit, exclude=exclude)
            for n in nodes}


async def _history(chain: Chain, fresh: bool) -> reputation.ChainHistory | None:
    try:
        return await reputation.chain_history(chain, fresh=fresh)
    except (ChainError, *READ_ERRORS) as exc:
        # Without the chain's history a host is judged on our own record alone.
        log.warning("could not read the chain's job history: %s", exc)
        return None


async def candidates(model: str, *, chain: Chain | None = None,
                     fresh: bool = False) -> list[Candidate]:
    cached = _cache.get(model)
    if cached and not fresh and time.monotonic() - cached[0] < TTL_S:
        _cache.move_to_end(model)
        return cached[1]
    if chain is None:
        from marketplace.wallet import platform_chain

        chain = await platform_chain()
    found = await _from_dht(model, chain)
    if found is None:
        found = await _from_registry(model, chain, fresh)
    _cache[model] = (time.monotonic(), found)
    _cache.move_to_end(model)
    while len(_cache) > settings.DISCOVERY_CACHE_MAX_MODELS:
        _cache.popitem(last=False)
    if model in settings.MARKETPLACE_MODELS or model in settings.GATEWAY_MODELS:
        hosts_available.labels(model).set(len(found))  # a label per model: known ones only
    return found


async def _from_dht(model: str, chain: Chain) -> list[Candidate] | None:
    """Hosts from the DHT's signed records, gated by the registry (docs/discovery.md); None
    when the DHT is off or unreachable. No capability probe: the record carries what the
    probe would say, kept live by gossip."""
    from marketplace.p2p import client as p2p

    records = await p2p.hosts(model, chain)
    if records is None:
        return None
    addresses = [r.address for r, _ in records]
    local = await sync_to_async(reputation.local_record)(addresses)
    measured = await sync_to_async(figures.host_figures)(addresses)
    found: list[Candidate] = []
    for record, registered_price in records:
        try:
            capabilities = SeenCapabilities.model_validate(record.capabilities)
            await host_url_check(record.url)  # the same URL policy as a registered URL's
        except ClientError as exc:
            hosts_refused.labels(exc.code).inc()
            log.warning("host %s skipped: %s", record.address, exc)
            continue
        except ValueError:
            continue
        good, bad = local.get(record.address, (0, 0))
        queue = capabilities.queue
        # The host may say it charges more than it registered, never less: the chain's
        # price is what escrow holds it to.
        price = max(record.prices().get(model, 0), registered_price)
        found.append(Candidate(
            address=record.address, url=record.url, model=model, price_per_token_wei=price,
            probe_ms=0.0, figures=measured[record.address], local_good=good, local_bad=bad,
            queue_free=queue is None or queue.length < queue.capacity,
            channels=capabilities.channels))
    return found


async def _from_registry(model: str, chain: Chain, fresh: bool) -> list[Candidate]:
    nodes = await chain.active_nodes(model)
    probes = await asyncio.gather(*(_probe(node.address, node.url) for node in nodes))
    await sync_to_async(figures.host_probes_record)(
        {n.address: None if p is None else round(p[1], 1)
         for n, p in zip(nodes, probes, strict=True)})
    local = await sync_to_async(reputation.local_record)([n.address for n in nodes])
    measured = await sync_to_async(figures.host_figures)(
        [n.address for n, p in zip(nodes, probes, strict=True) if p is not None])
    ours = chain.sender.address.lower() if chain.sender is not None else ""
    credits = _credits(nodes, await _history(chain, fresh), frozenset({ours}))
    found: list[Candidate] = []
    for node, probe in zip(nodes, probes, strict=True):
        if probe is None:
            continue  # down or not answering: not a candidate this round
        capabilities, probe_ms = probe
        if model not in {m.id for m in capabilities.models}:
            continue
        good, bad = local.get(node.address, (0, 0))
        chain_good, chain_bad = credits.get(node.address, (0.0, 0.0))
        queue = capabilities.queue
        found.append(Candidate(
            address=node.address, url=node.url, model=model,
            price_per_token_wei=node.price_per_token_wei, probe_ms=probe_ms,
            figures=measured[node.address],
            local_good=good, local_bad=bad, chain_good=chain_good, chain_bad=chain_bad,
            queue_free=queue is None or queue.length < queue.capacity,
            channels=capabilities.channels,
        ))
    return found
