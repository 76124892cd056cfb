"""A client's view of the hosts on the network: providers found on the DHT, their signed
records, kept live by gossip, gated by the registry.

Records come from strangers, so every one is checked before it is kept: its size, its
signature by the address it names, that the peer it came from holds that address's key,
its time to live. What fails is counted (inkmarket_p2p_records_rejected_total) and dropped;
a peer sending more than its rate is ignored (inkmarket_p2p_rate_limited_total). The store
is bounded. Whether the address may be paid is asked of the registry gate at use time, so a
valid record of an unstaked key is kept out of every answer.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass

from marketplace.p2p.gate import RegistryGate
from marketplace.p2p.node import Node, Provider, peer_address
from marketplace.p2p.ratelimit import PeerLimit
from marketplace.p2p.records import BadRecord, HostRecord, model_keys, model_topic, verify
from observability.metrics import p2p_rate_limited, p2p_records_rejected

log = logging.getLogger(__name__)

@dataclass(frozen=True)
class Limits:
    max_record_bytes: int = 8192
    max_ttl_s: int = 600
    max_records: int = 10_000
    per_peer_per_minute: int = 120
    lookup_interval_s: float = 10.0

    @classmethod
    def from_settings(cls) -> Limits:
        from django.conf import settings

        return cls(max_record_bytes=settings.P2P_MAX_RECORD_BYTES,
                   max_ttl_s=settings.P2P_MAX_RECORD_TTL_S,
                   max_records=settings.P2P_MAX_RECORDS,
                   per_peer_per_minute=settings.P2P_MESSAGES_PER_PEER_PER_MINUTE,
                   lookup_interval_s=settings.P2P_LOOKUP_INTERVAL_S)


class View:
    def __init__(self, *, private_key: bytes, bootstrap: list[str], gate: RegistryGate,
                 limits: Limits = Limits()):
        self.gate = gate
        self.limits = limits
        self.peer_limit = PeerLimit(limits.per_peer_per_minute)
        self.node = Node(private_key=private_key, bootstrap=bootstrap, server=False,
                         on_gossip=self._gossip, accept_gossip=self._accept_gossip,
                         max_record_bytes=limits.max_record_bytes)
        self._lock = threading.Lock()
        self._records: OrderedDict[str, HostRecord] = OrderedDict()
        self._looked_up: dict[str, float] = {}
        self._refreshing: dict[str, asyncio.Task] = {}
        self.lookups = 0

    def start(self) -> View:
        self.node.start()
        return self

    def stop(self) -> None:
        self.node.stop()

    @property
    def reachable(self) -> bool:
        """Up and connected to at least one peer (the bootstrap node or another)."""
        return self.node.running and self.node.peers() > 0

    # ---- records in ---------------------------------------------------------------------

    def _accept_gossip(self, peer: str, topic: str) -> bool:
        if self.peer_limit.hit(peer, "gossip"):
            return True
        p2p_rate_limited.labels("gossip").inc()
        return False

    def _gossip(self, topic: str, data: bytes, peer: str) -> None:
        self.take(data, peer)

    def take(self, data: bytes, peer: str) -> HostRecord | None:
        """Check a record `peer` sent and keep it if it is newer than the one we hold."""
        try:
            record = verify(data, max_bytes=self.limits.max_record_bytes,
                            max_ttl_s=self.limits.max_ttl_s)
            if peer_address(peer) != record.address:
                raise BadRecord("peer", f"record of {record.address} from peer {peer}")
        except BadRecord as exc:
            p2p_records_rejected.labels(exc.reason).inc()
            log.info("record from %s ignored: %s", peer, exc)
            return None
        with self._lock:
            held = self._records.get(record.address)
            if held is not None and held.seq >= record.seq:
                return held
            if record.leaving:
                self._records.pop(record.address, None)
                return None
            self._records[record.address] = record
            self._records.move_to_end(record.address)
            while len(self._records) > self.limits.max_records:
                self._records.popitem(last=False)
        return record

    def _wanted(self, provider: Provider) -> bool:
        """Fetch a provider's record unless we hold a current one from that peer (gossip
        keeps it live) with more than half its time to live left; at the peer's rate."""
        address = peer_address(provider.peer_id)
        with self._lock:
            held = self._records.get(address) if address else None
        if held is not None and held.expires_at - time.time() > held.ttl_s / 2:
            return False
        if not self.peer_limit.hit(provider.peer_id, "record"):
            p2p_rate_limited.labels("record").inc()
            return False
        return True

    async def lookup(self, model: str) -> int:
        """Ask the DHT who provides `model` and fetch the records we do not hold."""
        self.lookups += 1
        await asyncio.to_thread(self.node.subscribe, model_topic(model))
        providers = await asyncio.to_thread(self.node.find_providers, model_keys(model))
        unique = {p.peer_id: p for p in providers}
        wanted = [p for p in unique.values() if self._wanted(p)]
        if wanted:
            fetched = await asyncio.to_thread(self.node.fetch_records, wanted)
            for peer, data in fetched.items():
                if data:
                    self.take(data, peer)
        self._looked_up[model] = time.monotonic()
        return len(unique)

    # ---- records out --------------------------------------------------------------------

    def records(self, model: str) -> list[HostRecord]:
        now = time.time()
        with self._lock:
            for address in [a for a, r in self._records.items() if r.expired(now)]:
                del self._records[address]
            return [r for r in self._records.values() if model in r.prices()]

    async def hosts(self, model: str, chain) -> list[tuple[HostRecord, int]]:
        """The live records for `model` whose signer the registry lets serve it, with the
        registered price. A model seen for the first time is looked up before answering;
        afterwards lookups run in the background every lookup_interval_s."""
        last = self._looked_up.get(model)
        if last is None:
            await self.lookup(model)
        elif time.monotonic() - last > self.limits.lookup_interval_s:
            task = self._refreshing.get(model)
            if task is None or task.done():
                self._refreshing[model] = asyncio.get_running_loop().create_task(
                    self.lookup(model))
        found = []
        for record in self.records(model):
            try:
                price = await self.gate.price(chain, record.address, model)
            except Exception as exc:
                log.warning("registry check of %s failed: %s", record.address, exc)
                continue
            if price <= 0:
                p2p_records_rejected.labels("unstaked").inc()
                continue
            found.append((record, price))
        return found
