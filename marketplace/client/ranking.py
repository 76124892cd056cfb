"""Ranking hosts: filter, then score = 0.3 latency + 0.5 reputation + 0.2 price.

Every input is measured: latency is the host's TTFT p50 over our own recent attempts on it
(marketplace.figures), reputation is this client's own record of the host first and the
chain's value-weighted history second (marketplace.reputation, docs/trust.md), and price
is the host's registered price. Each term is normalised against the best candidate, so the
best host on a term scores 1 on it.

A host we have not measured in the window is given the median TTFT of those we have:
neither rewarded nor punished for being new, so it gets jobs on its price and
reputation, and after its first job it is judged on its own figure.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field, replace

from marketplace.client.bounded import SeenChannelTerms
from marketplace.figures import HostFigures

W_LATENCY, W_REPUTATION, W_PRICE = 0.3, 0.5, 0.2
# TTFT is compared on a scale where a few milliseconds of jitter do not matter but tens of
# milliseconds do: (LATENCY_SCALE + best) / (LATENCY_SCALE + this host's).
LATENCY_SCALE_MS = 50.0
# A host asking more than this many times the lower median price of the hosts serving
# the model is an outlier: never used, never reserved for (docs/trust.md, "Prices").
OUTLIER_FACTOR = 10


def outlier_above(prices: list[int]) -> int | None:
    """The price above which a host is an outlier among `prices` (None: no host)."""
    return OUTLIER_FACTOR * statistics.median_low(prices) if prices else None


@dataclass(frozen=True)
class Candidate:
    address: str
    url: str
    model: str
    price_per_token_wei: int
    # The capability request's round trip just now: says the host is up, ranks nothing.
    probe_ms: float
    # Our measurements of the host over the recent window (marketplace.figures).
    figures: HostFigures = field(default_factory=HostFigures)
    # Our own record: accepted attempts, and failures where we proved we were there
    # (a dispute counts double). marketplace.reputation.local_record.
    local_good: int = 0
    local_bad: int = 0
    # The chain's history in jobs' worth: value paid by distinct other payers, each
    # capped, the whole capped (marketplace.reputation.chain_credit).
    chain_good: float = 0.0
    chain_bad: float = 0.0
    queue_free: bool = True
    score: float = 0.0
    # How the host takes channel payments, as it says (None: per-job escrow only).
    channels: SeenChannelTerms | None = None

    @property
    def ttft_ms(self) -> float | None:
        return self.figures.ttft_p50_ms

    @property
    def reputation(self) -> float:
        """Laplace-smoothed success rate: our record plus the chain's capped evidence."""
        good = self.local_good + self.chain_good
        bad = self.local_bad + self.chain_bad
        return (good + 1) / (good + bad + 2)


def rank(
    candidates: list[Candidate],
    *,
    model: str,
    max_latency_ms: float | None = None,
    max_price_per_token_wei: int | None = None,
    exclude: set[str] | frozenset[str] = frozenset(),
) -> list[Candidate]:
    """The usable candidates for `model`, best first, each with its score. A host priced
    as an outlier among all who serve the model is never usable, whatever the limits.
    `max_latency_ms` bounds the measured TTFT p50; an unmeasured host passes it."""
    serving = [c for c in candidates if c.model == model]
    outlier = outlier_above([c.price_per_token_wei for c in serving])
    usable = [
        c for c in serving
        if c.price_per_token_wei <= outlier
        and c.queue_free
        and c.address.lower() not in {e.lower() for e in exclude}
        and (max_latency_ms is None or c.ttft_ms is None or c.ttft_ms <= max_latency_ms)
        and (max_price_per_token_wei is None or c.price_per_token_wei <= max_price_per_token_wei)
    ]
    if not usable:
        return []
    measured = [c.ttft_ms for c in usable if c.ttft_ms is not None]
    unmeasured = statistics.median(measured) if measured else LATENCY_SCALE_MS
    ttft = {c.address: max(unmeasured if c.ttft_ms is None else c.ttft_ms, 0.0)
            for c in usable}
    best_latency = min(ttft.values())
    best_price = max(min(c.price_per_token_wei for c in usable), 1)
    best_reputation = max(c.reputation for c in usable)
    scored = []
    for c in usable:
        latency = (LATENCY_SCALE_MS + best_latency) / (LATENCY_SCALE_MS + ttft[c.address])
        price = best_price / max(c.price_per_token_wei, 1)
        reputation = c.reputation / best_reputation
        score = W_LATENCY * latency + W_REPUTATION * reputation + W_PRICE * price
        scored.append(replace(c, score=round(score, 6)))
    return sorted(scored, key=lambda c: (-c.score, c.price_per_token_wei, c.address))
