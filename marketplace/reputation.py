"""Reputation that cannot be bought or defamed (docs/trust.md, "Reputation").

Two kinds of evidence, never mixed as equals:

- Our own record (`local_record`): the attempts this client ran on the host. Accepted
  ones count for it; a failure counts against it only where the client proved it was
  there: the host answered our StreamInit (JobAttempt.answered_at), sent bytes the
  protocol refuses (a HOST_* fault), streamed and never submitted (NO_RESULT), or
  delivered a result we disputed. Nobody else can write this record.
- The chain's history (`ChainHistory`, read from JobMarketplace's events): only value
  paid by payers other than the host and other than us, each payer's weight capped, the
  whole capped below what a few jobs of our own weigh. A refund, and a dispute that no
  arbitrator has resolved, count for nothing: neither proves the client was there. A
  dispute the arbitrator resolved against the host counts against it, per payer, capped.

The event reading is incremental, cached per deployment and bounded (blocks per read,
reads per minute, jobs and payers remembered), so discovery never waits on a scan of the
whole chain.
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from collections import OrderedDict
from dataclasses import dataclass, field

from marketplace.chain.contracts import Chain

log = logging.getLogger(__name__)

# A reference job: this many tokens at the market's median price. Value paid is counted
# in reference jobs, so the bar moves with the market and a host cannot lower it by
# registering a price of 1 wei.
REFERENCE_TOKENS = 100
# A job that paid for fewer tokens than this is not evidence of anything (the contract
# refuses 0-token jobs; 1-token jobs to oneself are the cheapest way to fake history).
MIN_PAID_TOKENS = 16
# One payer vouches for at most one reference job's worth, however much it paid: many
# jobs from one address are one opinion.
PAYER_CAP = 1.0
# The chain vouches for at most this many jobs of our own: two jobs we measured ourselves
# outweigh any history a stranger can show us (docs/trust.md explains the number).
CHAIN_CAP = 2.0
# A dispute the client lost is worth two successes against the host, as locally.
DISPUTE_WEIGHT = 2

# Bounds of the event reader.
REFRESH_S = 10.0  # at most one read of new blocks per deployment this often
MAX_BLOCKS_PER_READ = 5_000  # a long way behind is caught up over several reads
MAX_OPEN_JOBS = 50_000  # jobs posted and not yet settled, remembered to join their events
MAX_HOSTS = 10_000
MAX_PAYERS_PER_HOST = 64  # past PAYER_CAP the smallest payers cannot change the sum
MAX_DEPLOYMENTS = 4


# ---- our own record -------------------------------------------------------------------

# Codes that show the host's own bytes or silence after it had the stream.
PROVEN_CODES = frozenset({"NO_RESULT"})
# HOST_* codes given before the host said anything: no connection (or a lost one before
# it answered), or a registered URL we refuse to contact at all.
UNPROVEN_CODES = frozenset({"HOST_UNAVAILABLE", "HOST_URL_REFUSED"})


def proven():
    """The attempts where the client proved it was there: the host answered the stream (or
    sent tokens), broke the protocol with its own bytes, or streamed and never submitted.
    Only their failures count against a host."""
    from django.db.models import Q

    return (Q(answered_at__isnull=False) | Q(tokens__gt=0) | Q(error_code__in=PROVEN_CODES)
            | (Q(error_code__startswith="HOST_") & ~Q(error_code__in=UNPROVEN_CODES)))


FAILED_STATES = ("ABANDONED", "FAILED", "REFUNDED")


def local_record(addresses: list[str]) -> dict[str, tuple[int, int]]:
    """This client's own record per host: (good, bad); a dispute counts DISPUTE_WEIGHT."""
    from django.db.models import Count, Q

    from marketplace.models import AttemptState, JobAttempt

    rows = (
        JobAttempt.objects.filter(host_address__in=addresses)
        .values("host_address")
        .annotate(
            good=Count("id", filter=Q(state=AttemptState.ACCEPTED)),
            # A disputed result is one we held and refused: proof enough.
            disputed=Count("id", filter=Q(state=AttemptState.DISPUTED)),
            failed=Count("id", filter=Q(state__in=FAILED_STATES) & proven()),
        )
    )
    return {r["host_address"]: (r["good"], r["failed"] + DISPUTE_WEIGHT * r["disputed"])
            for r in rows if r["good"] or r["failed"] or r["disputed"]}


# ---- the chain's history --------------------------------------------------------------


@dataclass
class HostHistory:
    """What the chain shows of one host: wei paid by each payer in jobs that count, and
    the share of each payer's disputes the arbitrator decided against the host."""

    paid_by: dict[str, int] = field(default_factory=dict)
    lost_to: dict[str, float] = field(default_factory=dict)

    def add_paid(self, payer: str, wei: int) -> None:
        self.paid_by[payer] = self.paid_by.get(payer, 0) + wei
        _trim(self.paid_by)

    def add_lost(self, payer: str, share: float) -> None:
        self.lost_to[payer] = self.lost_to.get(payer, 0.0) + share
        _trim(self.lost_to)


def _trim(by_payer: dict) -> None:
    if len(by_payer) > MAX_PAYERS_PER_HOST:
        del by_payer[min(by_payer, key=by_payer.__getitem__)]


def chain_credit(history: HostHistory | None, *, unit_wei: int,
                 exclude: frozenset[str] = frozenset()) -> tuple[float, float]:
    """(good, bad) in jobs' worth, from the chain's history of one host. `unit_wei` is a
    reference job's value; payers in `exclude` (ourselves: our record is counted apart)
    count nothing."""
    if history is None or unit_wei <= 0:
        return 0.0, 0.0
    good = sum(min(wei / unit_wei, PAYER_CAP) for payer, wei in history.paid_by.items()
               if payer not in exclude)
    bad = sum(min(share, PAYER_CAP) for payer, share in history.lost_to.items()
              if payer not in exclude)
    return min(good, CHAIN_CAP), min(DISPUTE_WEIGHT * bad, DISPUTE_WEIGHT * CHAIN_CAP)


@dataclass
class _Job:
    client: str
    host: str = ""
    price: int = 0


class ChainHistory:
    """JobMarketplace's events of one deployment, folded into HostHistory per host."""

    def __init__(self, first_block: int):
        self.next_block = first_block
        self.read_at = float("-inf")
        self.jobs: OrderedDict[int, _Job] = OrderedDict()
        self.hosts: OrderedDict[str, HostHistory] = OrderedDict()

    def host(self, address: str) -> HostHistory:
        found = self.hosts.get(address.lower())
        if found is None:
            found = self.hosts[address.lower()] = HostHistory()
            while len(self.hosts) > MAX_HOSTS:
                self.hosts.popitem(last=False)
        self.hosts.move_to_end(address.lower())
        return found

    def apply(self, name: str, args: dict) -> None:
        """Fold one event in (events of a range in chain order)."""
        job_id = int(args["jobId"])
        if name == "JobPosted":
            self.jobs[job_id] = _Job(client=args["client"].lower())
            while len(self.jobs) > MAX_OPEN_JOBS:
                self.jobs.popitem(last=False)  # never settled: it can count for nothing
            return
        job = self.jobs.get(job_id)
        if job is None:
            return  # posted before our window, or forgotten: counts for nothing
        if name == "JobClaimed":
            job.host, job.price = args["host"].lower(), int(args["price"])
            return
        self.jobs.pop(job_id, None)  # settled: nothing more comes of it
        if not job.host or job.client == job.host:
            return  # paying oneself from the same address is no evidence at all
        if name in ("JobCompleted", "DisputeExpired"):
            # An expired dispute settles as if the result stood: the arbitrator had
            # nothing against it.
            paid = int(args["hostAmount"]) + int(args["fee"])
            if job.price > 0 and paid >= MIN_PAID_TOKENS * job.price:
                self.host(job.host).add_paid(job.client, paid)
        elif name == "DisputeResolved":
            share = int(args["hostShareBps"]) / 10_000
            if share < 1.0:
                self.host(job.host).add_lost(job.client, 1.0 - share)
            paid = int(args["hostAmount"]) + int(args["fee"])
            if job.price > 0 and paid >= MIN_PAID_TOKENS * job.price:
                self.host(job.host).add_paid(job.client, paid)
        # JobRefunded, JobCancelled: the chain cannot tell a host that went silent from a
        # client that never connected (hosts claim assigned jobs as they are posted), so
        # a refund says nothing about the host. JobDisputed waits for its resolution.


EVENTS = ("JobPosted", "JobClaimed", "JobCompleted", "DisputeResolved", "DisputeExpired",
          "JobRefunded", "JobCancelled")

_histories: OrderedDict[str, ChainHistory] = OrderedDict()
_locks: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def forget() -> None:
    _histories.clear()


async def chain_history(chain: Chain, *, fresh: bool = False) -> ChainHistory:
    """This deployment's history, with the blocks since the last read folded in (at most
    MAX_BLOCKS_PER_READ of them; no read at all within REFRESH_S unless `fresh`)."""
    key = chain.deployment.marketplace.lower()
    history = _histories.get(key)
    if history is None:
        history = _histories[key] = ChainHistory(chain.deployment.block)
        while len(_histories) > MAX_DEPLOYMENTS:
            _histories.popitem(last=False)
    _histories.move_to_end(key)
    loop = asyncio.get_running_loop()
    lock = _locks.setdefault(loop, asyncio.Lock())
    async with lock:  # two discoveries at once must not fold the same blocks twice
        if not fresh and time.monotonic() - history.read_at < REFRESH_S:
            return history
        latest = await chain.w3.eth.block_number
        while history.next_block <= latest:
            last = min(latest, history.next_block + MAX_BLOCKS_PER_READ - 1)
            found = await asyncio.gather(*(
                getattr(chain.market.events, name)().get_logs(
                    from_block=history.next_block, to_block=last) for name in EVENTS))
            events = sorted(((e["blockNumber"], e["logIndex"], e["event"], dict(e["args"]))
                             for logs in found for e in logs), key=lambda e: e[:2])
            for _, _, name, args in events:
                history.apply(name, args)
            history.next_block = last + 1
            if not fresh:
                break  # bounded work per call; the next call goes on from here
        history.read_at = time.monotonic()
    return history
