"""Prometheus metrics (prometheus-client), served at /metrics: the registry, and the
primitives every part of the product counts with.

Figures the database or the broker already knows are read when Prometheus scrapes, so
every process (web replicas, workers) reports the same truth: the Celery queue's length
here, the marketplace's jobs, payments and gas in marketplace.metrics (a collector it
registers). Counts that only the code sees as they happen (result cache hits and misses,
rate-limit rejections) go through `count_cache_lookup` and `count_rate_limit_rejection`,
which add to Redis so that all processes share one total; so does the gateway's time per
phase (`observe_gateway_phases`, a histogram kept as bucket counts).
"""

from __future__ import annotations

import asyncio
import atexit
import bisect
import concurrent.futures
import logging
import threading
import time
from collections import Counter as _Tally
from collections.abc import Callable

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

log = logging.getLogger(__name__)
registry = CollectorRegistry()

# Set by discovery in the process that runs jobs, and by every scrape from /health's probe.
hosts_available = Gauge("inkmarket_hosts_available", "Hosts that answered the last probe",
                        ["model"], registry=registry)
# Registered hosts discovery skipped unprobed: their URL points where we do not send.
hosts_refused = Counter("inkmarket_hosts_refused", "Registered hosts skipped for their URL",
                        ["code"], registry=registry)
# Host records from the DHT or gossip that were ignored (oversized, malformed, signature,
# expired, peer: served by a peer of another key, unstaked: not registered and staked),
# messages dropped from peers over their rate, and discoveries that fell back to the
# registry because the DHT was unreachable (marketplace.p2p).
p2p_records_rejected = Counter("inkmarket_p2p_records_rejected", "Host records ignored",
                               ["reason"], registry=registry)
p2p_rate_limited = Counter("inkmarket_p2p_rate_limited", "Peer messages over their rate",
                           ["kind"], registry=registry)
p2p_fallbacks = Counter("inkmarket_p2p_fallbacks", "Discoveries by the registry path "
                        "because the DHT was unreachable", registry=registry)


# ---- counts that code reports as they happen -------------------------------------------


class _SharedCounts:
    """Counters kept in a Redis hash (one total across processes), or in this process
    when there is no Redis. Counting never fails the caller and rarely waits: counts
    gather in the process and go to Redis at most once a second (and at exit); while
    Redis is unreachable they stay here and are added when it is back."""

    RETRY_AFTER_S = 5.0
    FLUSH_EVERY_S = 1.0

    def __init__(self, key: str):
        self.key = key
        self.local: _Tally[str] = _Tally()
        self.lock = threading.Lock()
        self._down_until = 0.0
        self._flushed_at = 0.0
        atexit.register(self.flush)

    def _client(self):
        from django.conf import settings

        if not settings.REDIS_URL:
            return None
        return _redis_client(settings.REDIS_URL)

    def add(self, field: str, amount: int = 1) -> None:
        with self.lock:
            self.local[field] += amount
        if time.monotonic() - self._flushed_at >= self.FLUSH_EVERY_S:
            self._flush_soon()

    def add_many(self, amounts: dict[str, int]) -> None:
        """Several fields at once (one lock, one look at the clock)."""
        with self.lock:
            self.local.update(amounts)
        if time.monotonic() - self._flushed_at >= self.FLUSH_EVERY_S:
            self._flush_soon()

    def _flush_soon(self) -> None:
        """Flush now, or, called on an event loop, on the counts' own thread: a Redis
        call (up to its timeout when Redis is slow) must not hold every request of the
        loop."""
        self._flushed_at = time.monotonic()
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            self.flush()
            return
        _flusher().submit(self.flush)

    def flush(self) -> None:
        client = self._client()
        if client is None or time.monotonic() < self._down_until:
            return
        self._flushed_at = time.monotonic()
        with self.lock:
            pending, self.local = self.local, _Tally()
        if not pending:
            return
        try:
            with client.pipeline(transaction=False) as pipe:
                for field, amount in pending.items():
                    pipe.hincrby(self.key, field, amount)
                pipe.execute()
        except Exception as exc:  # redis-py raises several families; all mean "not now"
            self._down_until = time.monotonic() + self.RETRY_AFTER_S
            with self.lock:
                self.local.update(pending)
            log.debug("metrics counts kept in process: %s", exc)

    def read(self) -> dict[str, int]:
        self.flush()
        client = self._client()
        totals: _Tally[str] = _Tally()
        if client is not None and time.monotonic() >= self._down_until:
            try:
                totals.update({k.decode(): int(v) for k, v in client.hgetall(self.key).items()})
            except Exception:
                self._down_until = time.monotonic() + self.RETRY_AFTER_S
        with self.lock:
            totals.update(self.local)
        return dict(totals)


_clients: dict[str, object] = {}
_flush_thread: list[concurrent.futures.ThreadPoolExecutor] = []


def _flusher() -> concurrent.futures.ThreadPoolExecutor:
    """One thread for every count's flushes from event loops (they queue behind each
    other, never beside a request)."""
    if not _flush_thread:
        _flush_thread.append(concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="metrics-flush"))
    return _flush_thread[0]


def _redis_client(url: str):
    import redis

    client = _clients.get(url)
    if client is None:
        # Short timeouts: a metric is never worth holding up a request for.
        client = _clients[url] = redis.Redis.from_url(url, socket_timeout=0.5,
                                                       socket_connect_timeout=0.5)
    return client


cache_counts = _SharedCounts("inkmarket:metrics:cache")
rate_limit_counts = _SharedCounts("inkmarket:metrics:ratelimit")
till_counts = _SharedCounts("inkmarket:metrics:till")
TILL_EVENTS = ("installed", "released", "release_unwritten", "deferred", "written_off",
               "reconcile_stuck", "reconcile_drift", "batches", "steps")


def count_cache_lookup(*, hit: bool, cache: str = "result") -> None:
    """Count one look-up in a result cache (`cache` names which: writer, gateway, ...).
    Fine to call from async code: at most one short Redis call a second per process."""
    cache_counts.add(f"{cache}:{'hit' if hit else 'miss'}")


def count_rate_limit_rejection(*, tier: str) -> None:
    """Count one request refused by a rate limit, by the caller's tier."""
    rate_limit_counts.add(tier or "unknown")


def count_till(event: str, amount: int = 1) -> None:
    """Count an event of the gateway's till (accounts.till, gateway.till; TILL_EVENTS)."""
    till_counts.add(event, amount)


# The gateway's time per phase (gateway.timing): fine enough below a millisecond.
PHASE_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                 0.25, 0.5, 1.0)
GATEWAY_PHASES = ("gw", "money", "upstream", "upstream_first", "total")
_PHASE_BOUNDS_NS = tuple(round(b * 1e9) for b in PHASE_BUCKETS)
_PHASE_FIELDS = {phase: (tuple(f"{phase}:{i}" for i in range(len(PHASE_BUCKETS) + 1)),
                         f"{phase}:sum") for phase in GATEWAY_PHASES}
phase_counts = _SharedCounts("inkmarket:metrics:gateway_phase")


def observe_gateway_phases(figures: dict[str, int]) -> None:
    """One /v1 request's time per phase, in nanoseconds (names from GATEWAY_PHASES; others
    are ignored). Each goes to one bucket ("phase:index", the index of the first bound at
    or above it; len(PHASE_BUCKETS) past the last) and to the phase's sum ("phase:sum",
    nanoseconds)."""
    amounts: dict[str, int] = {}
    for phase, ns in figures.items():
        fields = _PHASE_FIELDS.get(phase)
        if fields is not None:
            amounts[fields[0][bisect.bisect_left(_PHASE_BOUNDS_NS, ns)]] = 1
            amounts[fields[1]] = ns
    phase_counts.add_many(amounts)


def gateway_phase_histogram() -> HistogramMetricFamily:
    """The shared bucket counts as a Prometheus histogram (cumulative, seconds)."""
    read = phase_counts.read()
    family = HistogramMetricFamily("inkmarket_gateway_phase_seconds",
                                   "Time of /v1 requests by phase: gw (the gateway's own), "
                                   "money, upstream, upstream_first (streams), total",
                                   labels=["phase"])
    for phase in GATEWAY_PHASES:
        per_bucket = [read.get(f"{phase}:{i}", 0) for i in range(len(PHASE_BUCKETS) + 1)]
        if not any(per_bucket):
            continue
        running, buckets = 0, []
        for bound, n in zip((*map(str, PHASE_BUCKETS), "+Inf"), per_bucket, strict=True):
            running += n
            buckets.append((bound, running))
        family.add_metric([phase], buckets, sum_value=read.get(f"{phase}:sum", 0) / 1e9)
    return family


# ---- figures read at scrape time ----------------------------------------------------------


class _CountsCollector:
    """The shared counts and the broker's queue, read when Prometheus scrapes."""

    def describe(self):
        return []  # nothing to read until a scrape

    def collect(self):
        cache = CounterMetricFamily("inkmarket_cache_requests", "Result cache look-ups",
                                    labels=["cache", "result"])
        for field, n in sorted(cache_counts.read().items()):
            name, _, result = field.rpartition(":")
            cache.add_metric([name, result], n)
        yield cache

        limited = CounterMetricFamily("inkmarket_rate_limit_rejections",
                                      "Requests refused by a rate limit", labels=["tier"])
        for tier, n in sorted(rate_limit_counts.read().items()):
            limited.add_metric([tier], n)
        yield limited
        till = CounterMetricFamily(
            "inkmarket_gateway_till_events",
            "The gateway's till: mirrors installed and released, steps and batches written, "
            "reservations deferred or written off (the platform's), reconciliations",
            labels=["event"])
        read = till_counts.read()
        for event in TILL_EVENTS:
            till.add_metric([event], read.get(event, 0))
        yield till
        yield gateway_phase_histogram()

        length = celery_queue_length()
        if length is not None:
            yield GaugeMetricFamily("inkmarket_celery_queue_length",
                                    "Tasks waiting in the Celery queue", value=length)


def celery_queue_length() -> int | None:
    from django.conf import settings

    if not settings.REDIS_URL:
        return None
    import redis

    try:
        return int(_redis_client(settings.REDIS_URL).llen("celery"))
    except redis.RedisError:
        return None


registry.register(_CountsCollector())
_before_scrape: list[Callable[[], None]] = []


def before_scrape_register(hook: Callable[[], None]) -> None:
    """Run `hook` before each scrape (to refresh a gauge); its failure is logged only."""
    _before_scrape.append(hook)


def render() -> tuple[bytes, str]:
    for hook in _before_scrape:
        try:
            hook()
        except Exception as exc:  # an unreachable chain must not take /metrics down with it
            log.warning("metrics refresh %s failed: %s", getattr(hook, "__name__", hook), exc)
    return generate_latest(registry), CONTENT_TYPE_LATEST
