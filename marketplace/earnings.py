"""What a host earned, read from the contracts' events: jobs, tokens, earnings, protocol
fees, gas spent and net, per day (UTC) and in total, with what it may withdraw now and its
stake. Everything comes from the chain, so an operator sees the figures anyone reading the
contracts would; nothing of ours is needed.

A job counts on the day it was paid (JobCompleted, or the end of its dispute), with the
tokens its result reported. Gas is what the host's own transactions cost (gas used × the
price paid): those behind its events (register, update, claim, submit, unregister,
withdraw), and any settlement it sent itself.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import UTC, date, datetime

from eth_utils import to_checksum_address

from marketplace.chain.contracts import Chain
from marketplace.chain.errors import ChainError
from marketplace.chain.events import Event, read_all
from marketplace.chain.tx import RPC_FAULTS, rpc_error

# Receipts and blocks fetched at once (each is one RPC request).
FETCH_CONCURRENCY = 8

_PAID = ("JobCompleted", "DisputeResolved", "DisputeExpired")
_NODE_EVENTS = ["NodeRegistered", "NodeUpdated", "ModelPriced", "ModelRemoved", "StakeAdded",
                "UnregisterRequested", "StakeWithdrawn"]


@dataclass
class Figures:
    jobs: int = 0
    tokens: int = 0
    earned_wei: int = 0
    fees_wei: int = 0
    gas_wei: int = 0

    @property
    def net_wei(self) -> int:
        return self.earned_wei - self.gas_wei

    def add(self, other: Figures) -> None:
        self.jobs += other.jobs
        self.tokens += other.tokens
        self.earned_wei += other.earned_wei
        self.fees_wei += other.fees_wei
        self.gas_wei += other.gas_wei


@dataclass
class DayFigures(Figures):
    day: date = date.min


@dataclass
class HostEarnings:
    address: str
    from_block: int
    to_block: int
    days: list[DayFigures]  # oldest first, days with something in them only
    total: Figures
    claimed: int  # jobs claimed, paid or not
    refunded: int  # jobs refunded to their client after the host failed them
    slashed_wei: int
    withdrawn_wei: int
    withdrawable_wei: int
    stake_wei: int
    active: bool
    unregister_available_at: int | None = None  # unix time, once unregistering
    open_disputes: int = 0
    tx_count: int = field(default=0)


async def _gather(calls, limit: int = FETCH_CONCURRENCY):
    gate = asyncio.Semaphore(limit)

    async def one(call):
        async with gate:
            return await call

    return await asyncio.gather(*(one(c) for c in calls))


async def host_earnings(chain: Chain, address: str, *, from_block: int | None = None,
                        to_block: int | None = None) -> HostEarnings:
    address = to_checksum_address(address)
    start = chain.deployment.block if from_block is None else from_block
    end = await chain.w3.eth.block_number if to_block is None else to_block
    market, registry, escrow = chain.market, chain.registry, chain.escrow
    host = {"host": address}
    claims = await read_all(market, ["JobClaimed"], start, end, host)
    submits = await read_all(market, ["ResultSubmitted"], start, end, host)
    completed = await read_all(market, ["JobCompleted"], start, end, host)
    jobs = {e.args["jobId"] for e in claims}
    # Disputes' ends and refunds name the job, not the host: read them all, keep ours.
    settled_later = [e for e in await read_all(market, ["DisputeResolved", "DisputeExpired",
                                                        "JobRefunded"], start, end)
                     if e.args["jobId"] in jobs]
    node_events = await read_all(registry, _NODE_EVENTS, start, end, {"node": address})
    slashes = await read_all(registry, ["Slashed"], start, end, {"node": address})
    withdrawals = await read_all(escrow, ["Withdrawn"], start, end, {"account": address})

    tokens = {e.args["jobId"]: int(e.args["tokensUsed"]) for e in submits}
    paid: list[Event] = completed + [e for e in settled_later if e.name in _PAID]

    sent_by_host = {e.tx_hash for e in (*claims, *submits, *node_events, *withdrawals,
                                        *paid)}
    receipts = await _gather(chain.w3.eth.get_transaction_receipt(h) for h in sent_by_host)
    gas_by_block: dict[int, int] = {}
    tx_count = 0
    for receipt in receipts:
        if to_checksum_address(receipt["from"]) != address:
            continue  # a settlement the client or anyone else sent
        tx_count += 1
        block = int(receipt["blockNumber"])
        gas_by_block[block] = gas_by_block.get(block, 0) + (
            int(receipt["gasUsed"]) * int(receipt["effectiveGasPrice"]))

    blocks = sorted({e.block for e in paid} | set(gas_by_block))
    stamps = await _gather(chain.w3.eth.get_block(b) for b in blocks)
    day_of = {b: datetime.fromtimestamp(int(s["timestamp"]), UTC).date()
              for b, s in zip(blocks, stamps, strict=True)}
    days: dict[date, DayFigures] = {}

    def on(block: int) -> DayFigures:
        day = day_of[block]
        return days.setdefault(day, DayFigures(day=day))

    for event in paid:
        figures = on(event.block)
        figures.jobs += 1
        figures.tokens += tokens.get(event.args["jobId"], 0)
        figures.earned_wei += int(event.args["hostAmount"])
        figures.fees_wei += int(event.args["fee"])
    for block, gas in gas_by_block.items():
        on(block).gas_wei += gas
    total = Figures()
    for figures in days.values():
        total.add(figures)

    node = await chain.get_node(address)
    unregister_at = None
    if node.unregister_requested_at:
        cooldown = int(await registry.functions.cooldown().call())
        unregister_at = node.unregister_requested_at + cooldown
    return HostEarnings(
        address=address, from_block=start, to_block=end,
        days=[days[d] for d in sorted(days)], total=total, claimed=len(jobs),
        refunded=sum(1 for e in settled_later
                     if e.name == "JobRefunded" and e.args["hostFailed"]),
        # Every slash, the arbitrator's own or a dispute's, emits Slashed.
        slashed_wei=sum(int(e.args["amount"]) for e in slashes),
        withdrawn_wei=sum(int(e.args["amount"]) for e in withdrawals),
        withdrawable_wei=await chain.withdrawable(address), stake_wei=node.stake,
        active=node.active, unregister_available_at=unregister_at,
        open_disputes=node.open_disputes, tx_count=tx_count)


# Reading a host's history costs a request per event range, receipt and block: one reading
# serves every look at the same address for this long.
CACHE_S = 30


async def host_earnings_read(address: str) -> HostEarnings:
    """`host_earnings` on the chain the product uses (CHAIN_RPC and its recorded
    deployment), read at most once every CACHE_S per address; ChainError when the chain
    does not answer or has no contracts."""
    from django.conf import settings
    from django.core.cache import cache

    from marketplace.chain.connect import web3
    from marketplace.chain.deploy import load_deployment

    address = to_checksum_address(address)
    w3 = web3(settings.CHAIN_RPC)
    try:
        deployment = await load_deployment(w3, settings.CHAIN_DEPLOYMENTS_DIR)
        if deployment is None:
            raise ChainError("NOT_DEPLOYED", "no contracts are recorded for this chain",
                             permanent=True)
        key = f"host-earnings:{deployment.chain_id}:{deployment.registry}:{address}"
        earnings = await cache.aget(key)
        if earnings is None:
            earnings = await host_earnings(Chain(w3, deployment), address)
            await cache.aset(key, earnings, CACHE_S)
        return earnings
    except RPC_FAULTS as exc:
        raise rpc_error(exc) from None
    finally:
        await w3.provider.disconnect()
