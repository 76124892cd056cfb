"""What the products call: run a job, price a model. marketplace.client is the machinery
behind these two; a job run here is handed to the processor (marketplace.processor) when
it ends, however it ends."""

from __future__ import annotations

import re
import statistics
import uuid
from dataclasses import dataclass

from marketplace.chain.errors import ChainError
from marketplace.client import discovery, runner
from marketplace.client.errors import ClientError
from marketplace.client.ranking import OUTLIER_FACTOR, Candidate
from marketplace.client.runner import JobOutcome, JobSpec

__all__ = ["MAX_PRICE_CEILING_WEI", "OUTLIER_FACTOR", "ClientError", "JobOutcome", "JobSpec",
           "PriceQuote", "price_ceiling_parse", "price_quote", "run_job"]


async def _hand_to_processor(job_id: uuid.UUID) -> None:
    from asgiref.sync import sync_to_async

    from marketplace.processor import job_finished

    await sync_to_async(job_finished)(job_id=job_id)


async def run_job(spec: JobSpec, **options) -> JobOutcome:
    """Run a job to the end (marketplace.client.runner.run_job takes the same options);
    raises ClientError with a code when it cannot be done."""
    return await runner.run_job(spec, after=_hand_to_processor, **options)


# The largest price ceiling a user may give: 28 digits, so that a pattern states it
# exactly; the contract's prices are uint96 (up to about 7.9 × 10^28).
MAX_PRICE_CEILING_WEI = 10**28 - 1
_CEILING = re.compile(r"[1-9][0-9]{0,27}")


def price_ceiling_parse(value: object) -> int | None:
    """A user's max price per token (wei) as given: None, a positive integer, or its
    decimal string; ValueError for anything else, with words a person can read."""
    if value is None:
        return None
    if isinstance(value, str):
        # Exactly what the API's schema publishes: no sign, no blank, no leading zero.
        if not _CEILING.fullmatch(value):
            raise ValueError("max_price_per_token must be a whole number of wei, "
                             f"1 to {MAX_PRICE_CEILING_WEI}")
        return int(value)
    if isinstance(value, int) and not isinstance(value, bool) \
            and 1 <= value <= MAX_PRICE_CEILING_WEI:
        return value
    raise ValueError(f"max_price_per_token must be a whole number of wei, 1 to "
                     f"{MAX_PRICE_CEILING_WEI}")


@dataclass(frozen=True)
class PriceQuote:
    """The prices of the hosts answering for `model` now. `median_price_wei` is the lower
    median (a price some host really asks, and one that a single dear host cannot move);
    what a job reserves is `reserve_price_wei(ceiling)`, never `max_price_wei`."""

    model: str
    nodes: int
    min_price_wei: int
    median_price_wei: int
    max_price_wei: int
    ttft_ms: float | None
    tokens_per_s: float | None
    prices: tuple[int, ...] = ()  # every answering host's, cheapest first
    hosts: tuple[Candidate, ...] = ()  # every answering host with its figures, cheapest first

    @property
    def outlier_above_wei(self) -> int:
        return OUTLIER_FACTOR * self.median_price_wei

    def used_prices(self, ceiling_wei: int | None = None) -> list[int]:
        """The prices of the hosts a job would use: not outliers, and within the user's
        ceiling when there is one."""
        return [p for p in self.prices if p <= self.outlier_above_wei
                and (ceiling_wei is None or p <= ceiling_wei)]

    def reserve_price_wei(self, ceiling_wei: int | None = None) -> int | None:
        """The price per token a job reserves and is capped at: the dearest host it
        would use, so that any of them can take over (failover); None when none is left."""
        used = self.used_prices(ceiling_wei)
        return used[-1] if used else None


def _median_of(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return round(statistics.median(known), 1) if known else None


async def price_quote(model: str) -> PriceQuote | None:
    """Current prices of the hosts serving `model` (None when no host serves it)."""
    try:
        found = await discovery.candidates(model)
    except (ChainError, ClientError, OSError):
        return None
    if not found:
        return None
    prices = sorted(c.price_per_token_wei for c in found)
    median = statistics.median_low(prices)
    # The speed of the hosts a job would use (an outlier's is not on offer): the median
    # of their own figures over the recent window (marketplace.figures).
    used = [c for c in found if c.price_per_token_wei <= OUTLIER_FACTOR * median]
    return PriceQuote(model=model, nodes=len(found), min_price_wei=prices[0],
                      median_price_wei=median, max_price_wei=prices[-1],
                      ttft_ms=_median_of([c.ttft_ms for c in used]),
                      tokens_per_s=_median_of([c.figures.tokens_per_s for c in used]),
                      prices=tuple(prices),
                      hosts=tuple(sorted(found, key=lambda c: (c.price_per_token_wei,
                                                               c.address))))
