"""What the products call: run a job, price a model. marketplace.client is the machinery
behind these two; a job run here is handed to the processor (marketplace.processor) when
it ends, however it ends."""

from __future__ import annotations

import statistics
import uuid
from dataclasses import dataclass

from marketplace.chain.errors import ChainError
from marketplace.client import discovery, runner
from marketplace.client.errors import ClientError
from marketplace.client.runner import JobOutcome, JobSpec

__all__ = ["ClientError", "JobOutcome", "JobSpec", "PriceQuote", "price_quote", "run_job"]


async def _hand_to_processor(job_id: uuid.UUID) -> None:
    from asgiref.sync import sync_to_async

    from marketplace.processor import job_finished

    await sync_to_async(job_finished)(job_id=job_id)


async def run_job(spec: JobSpec, **options) -> JobOutcome:
    """Run a job to the end (marketplace.client.runner.run_job takes the same options);
    raises ClientError with a code when it cannot be done."""
    return await runner.run_job(spec, after=_hand_to_processor, **options)


@dataclass(frozen=True)
class PriceQuote:
    model: str
    nodes: int
    min_price_wei: int
    median_price_wei: int
    max_price_wei: int
    ttft_ms: float | None
    tokens_per_s: float | None


def _measured(address_list: list[str]) -> tuple[float | None, float | None]:
    from django.db.models import Avg

    from marketplace.models import JobAttempt

    figures = JobAttempt.objects.filter(host_address__in=address_list,
                                        ttft_ms__isnull=False).aggregate(
        ttft=Avg("ttft_ms"), tps=Avg("tokens_per_s"))
    return figures["ttft"], figures["tps"]


async def price_quote(model: str) -> PriceQuote | None:
    """Current prices of the hosts serving `model` (None when no host serves it)."""
    from asgiref.sync import sync_to_async

    try:
        found = await discovery.candidates(model)
    except (ChainError, ClientError, OSError):
        return None
    if not found:
        return None
    prices = sorted(c.price_per_token_wei for c in found)
    ttft, tps = await sync_to_async(_measured)([c.address for c in found])
    return PriceQuote(model=model, nodes=len(found), min_price_wei=prices[0],
                      median_price_wei=int(statistics.median(prices)),
                      max_price_wei=prices[-1],
                      ttft_ms=round(ttft, 1) if ttft else None,
                      tokens_per_s=round(tps, 1) if tps else None)
