"""Each host's figures as we measured them over a recent window (docs/trust.md, "Figures").

- TTFT p50: the median, over our attempts on the host, of the time from the start of the
  stream (StreamInit sent; the host still has to claim the job on chain) to the first
  token. JobAttempt.ttft_ms.
- Tokens per second: the median of each attempt's rate from its first token to its last.
  JobAttempt.tokens_per_s.
- Success rate: accepted attempts over accepted, disputed and failed ones, failures
  counted only where we proved the host had the stream (marketplace.reputation.proven).
- Uptime: the share of our capability probes (discovery's and the health beat's) that the
  host answered. HostProbe.

Only rows of the last MARKETPLACE_FIGURES_WINDOW_S count, and only our own: a stranger
cannot write any of them. Ranking (marketplace.client.ranking) and GET /v1/models read the
same figures.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings

from marketplace import reputation

# The most recent attempts read per host: a median over more says nothing new, and the
# read stays bounded however busy the host.
MAX_ATTEMPTS_PER_HOST = 200


@dataclass(frozen=True)
class HostFigures:
    ttft_p50_ms: float | None = None
    tokens_per_s: float | None = None
    success_rate: float | None = None
    uptime: float | None = None
    attempts: int = 0  # attempts that ended, in the window
    probes: int = 0


def _since() -> datetime:
    from django.utils import timezone

    return timezone.now() - timedelta(seconds=settings.MARKETPLACE_FIGURES_WINDOW_S)


def _median(values: list[float]) -> float | None:
    return round(statistics.median(values), 1) if values else None


def host_probes_record(results: dict[str, float | None]) -> None:
    """Store one probe per host: its round trip in ms, or None where it did not answer.
    Rows older than the window are deleted for these hosts as it goes."""
    from django.utils import timezone

    from marketplace.models import HostProbe

    if not results:
        return
    now = timezone.now()
    HostProbe.objects.bulk_create(
        HostProbe(host_address=address, ok=ms is not None, ms=ms, checked_at=now)
        for address, ms in results.items())
    HostProbe.objects.filter(host_address__in=list(results), checked_at__lt=_since()).delete()


def host_figures(addresses: list[str]) -> dict[str, HostFigures]:
    """The figures of each host in `addresses` over the window (every address is in the
    answer; a figure with nothing measured is None)."""
    from django.db.models import BooleanField, Count, ExpressionWrapper, Q

    from marketplace.models import AttemptState, HostProbe, JobAttempt

    since = _since()
    samples: dict[str, dict[str, list]] = {a: {"ttft": [], "tps": []} for a in addresses}
    outcomes: dict[str, list[int]] = {a: [0, 0] for a in addresses}  # good, bad
    for address in addresses:
        rows = (JobAttempt.objects.filter(host_address=address, created__gte=since)
                .annotate(proven=ExpressionWrapper(reputation.proven(),
                                                   output_field=BooleanField()))
                .order_by("-created")
                .values_list("state", "ttft_ms", "tokens_per_s", "proven")
                [:MAX_ATTEMPTS_PER_HOST])
        for state, ttft, tps, proven in rows:
            if ttft is not None:
                samples[address]["ttft"].append(ttft)
            if tps is not None:
                samples[address]["tps"].append(tps)
            if state == AttemptState.ACCEPTED:
                outcomes[address][0] += 1
            elif state == AttemptState.DISPUTED or (
                    state in reputation.FAILED_STATES and proven):
                outcomes[address][1] += 1
    probes = {r["host_address"]: (r["up"], r["all"]) for r in (
        HostProbe.objects.filter(host_address__in=addresses, checked_at__gte=since)
        .values("host_address")
        .annotate(up=Count("id", filter=Q(ok=True)), all=Count("id")))}
    found = {}
    for address in addresses:
        good, bad = outcomes[address]
        up, probed = probes.get(address, (0, 0))
        found[address] = HostFigures(
            ttft_p50_ms=_median(samples[address]["ttft"]),
            tokens_per_s=_median(samples[address]["tps"]),
            success_rate=round(good / (good + bad), 4) if good + bad else None,
            uptime=round(up / probed, 4) if probed else None,
            attempts=good + bad, probes=probed)
    return found
