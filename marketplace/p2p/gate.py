"""The registry as the gate: a record found on the DHT is used only if the key that signed
it is registered, active, staked at least the minimum and prices the model on chain.

Answers are cached per (address, model) and dropped when the registry says something
changed about that address (its events, followed from the chain in the background), so a
warm client asks the chain nothing per job. The cache is bounded: addresses come from
strangers' records.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict

from marketplace.chain.contracts import Chain
from marketplace.chain.events import follow

log = logging.getLogger(__name__)

# Every registry event that can change whether a node may be paid for a model.
EVENTS = ["NodeRegistered", "NodeUpdated", "ModelPriced", "ModelRemoved", "StakeAdded",
          "UnregisterRequested", "StakeWithdrawn", "Slashed", "BlockedChanged",
          "MinStakeChanged"]
MAX_ENTRIES = 10_000


class RegistryGate:
    def __init__(self, *, max_entries: int = MAX_ENTRIES):
        self.max_entries = max_entries
        self._cache: OrderedDict[tuple[str, str], int] = OrderedDict()
        self._min_stake: int | None = None
        self._next_block: int | None = None  # the first block the follower has not read
        self.rpc_reads = 0  # chain reads made for the gate (the benchmark reports them)
        self._follower: asyncio.Task | None = None
        self._stop = asyncio.Event()

    async def price(self, chain: Chain, address: str, model: str) -> int:
        """The registered price per token for `model` if `address` may serve it; 0 if not."""
        key = (address.lower(), model)
        if self._next_block is None:
            # The head before the first answer is cached: an event after it is followed.
            self.rpc_reads += 1
            self._next_block = await chain.w3.eth.block_number + 1
        self.ensure_watching(chain)
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        if self._min_stake is None:
            self.rpc_reads += 1
            self._min_stake = await chain.min_stake()
        self.rpc_reads += 2  # getNode and activePrice, in one round trip
        node = await chain.get_node(address, model)
        allowed = (node.active and node.stake >= self._min_stake
                   and node.price_per_token_wei > 0)
        price = node.price_per_token_wei if allowed else 0
        self._cache[key] = price
        while len(self._cache) > self.max_entries:
            self._cache.popitem(last=False)
        return price

    def forget(self, address: str | None = None) -> None:
        if address is None:
            self._cache.clear()
            self._min_stake = None
            return
        for key in [k for k in self._cache if k[0] == address.lower()]:
            del self._cache[key]

    async def watch(self, chain: Chain, from_block: int, poll_s: float = 0.5) -> None:
        """Follow the registry's events and forget what they change (runs until stopped)."""
        async def save_cursor(end: int) -> None:
            self._next_block = end + 1

        async for event in follow(chain.registry, EVENTS, from_block=from_block,
                                  save_cursor=save_cursor, poll_s=poll_s, stop=self._stop):
            if event.name == "MinStakeChanged":
                self.forget()
            else:
                node = event.args.get("node") or event.args.get("account")
                if node:
                    self.forget(node)
            log.debug("registry %s: gate refreshed", event.name)

    def ensure_watching(self, chain: Chain) -> None:
        """Follow the registry from the current event loop, unless that is done already.
        Each loop (the web process's, a Celery task's) reads with its own connection; when
        the loop that was following has gone, the next one goes on from the block after the
        last one read, so the cache is kept and no event is missed."""
        loop = asyncio.get_running_loop()
        if self._follower is not None and not self._follower.done() \
                and self._follower.get_loop() is loop:
            return
        self._stop = asyncio.Event()
        self._follower = loop.create_task(self.watch(chain, self._next_block))

    def stop(self) -> None:
        """Stop following (from the follower's own thread) and forget everything."""
        self._stop.set()
        follower, self._follower = self._follower, None
        if follower is not None and not follower.done() and not follower.get_loop().is_closed():
            follower.cancel()
        self._next_block = None
        self.forget()
