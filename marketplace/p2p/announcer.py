"""A host's side: join the network with a peer id made from the chain key, announce itself
as a provider of each model it serves, answer for its signed record, and gossip changes
(price, load, going away) on each model's topic.

Used by the host process (marketplace.host.main) and by lightweight hosts that serve no
model (tests and benchmarks of discovery).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from marketplace.p2p.node import Node, P2PError
from marketplace.p2p.ratelimit import PeerLimit
from marketplace.p2p.records import HostRecord, model_key, model_topic, sign

log = logging.getLogger(__name__)


class Announcer:
    """`capabilities` gives the host's current capabilities body (the GET /v1/capabilities
    JSON); the record is built from it each time it is served or published."""

    def __init__(self, *, private_key: bytes, address: str, url: str,
                 capabilities: Callable[[], dict[str, Any]], bootstrap: list[str],
                 ttl_s: int = 30, port: int = 0, requests_per_minute: int = 120):
        self.private_key = private_key
        self.address = address
        self.url = url
        self.capabilities = capabilities
        self.ttl_s = ttl_s
        self.limit = PeerLimit(requests_per_minute)
        self.node = Node(private_key=private_key, port=port, bootstrap=bootstrap,
                         server=True, serve_record=self._serve,
                         accept_record_request=lambda peer: self.limit.hit(peer, "record"))
        self._seq = int(time.time() * 1000)
        self._lock = threading.Lock()
        self._last: dict[str, Any] | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def models(self) -> list[str]:
        return [str(m["id"]) for m in self.capabilities().get("models") or []]

    def record(self, *, leaving: bool = False) -> bytes:
        with self._lock:
            self._seq += 1
            seq = self._seq
        return sign(HostRecord(address=self.address, url=self.url,
                               capabilities=self.capabilities(), seq=seq,
                               issued_at=int(time.time()), ttl_s=self.ttl_s, leaving=leaving),
                    self.private_key)

    def _serve(self, peer: str) -> bytes | None:
        if self._stop.is_set():
            return None  # going away: a record served now would outlive the goodbye
        return self.record()

    def start(self) -> Announcer:
        self.node.start()
        self.announce()
        self._thread = threading.Thread(target=self._refresh, name="p2p-announce", daemon=True)
        self._thread.start()
        return self

    def announce(self) -> None:
        """Provide every model on the DHT and publish the record on each model's topic."""
        record = self.record()
        for model in self.models():
            try:
                # Gossip first: it reaches subscribed clients in a heartbeat, while providing
                # walks the DHT and waits on any peer in it that has gone.
                self.node.publish(model_topic(model), record)
                self.node.provide(model_key(model, self.address))
            except P2PError as exc:
                log.warning("could not announce %s: %s", model, exc)
        self._last = self.capabilities()

    def changed(self) -> None:
        """Publish the record now (a price or load change), without waiting for the refresh."""
        record = self.record()
        for model in self.models():
            try:
                self.node.publish(model_topic(model), record)
            except P2PError as exc:
                log.warning("could not publish a change for %s: %s", model, exc)
        self._last = self.capabilities()

    def _refresh(self) -> None:
        # Records live ttl_s; publish well before that, and at once when the body changes.
        # Providing again every round also repairs a DHT that lost us (eviction, restarts).
        every = max(1.0, self.ttl_s / 3)
        next_full = time.monotonic() + every
        while not self._stop.wait(0.5):
            if time.monotonic() >= next_full:
                self.announce()
                next_full = time.monotonic() + every
            elif self.capabilities() != self._last:
                self.changed()

    def stop(self, *, say_goodbye: bool = True) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()  # no refresh may follow the goodbye
        if say_goodbye and self.node.running:
            goodbye = self.record(leaving=True)
            for model in self.models():
                try:
                    self.node.publish(model_topic(model), goodbye)
                except P2PError:
                    pass
            time.sleep(0.5)  # publish only queues: let the goodbye leave before the node does
        self.node.stop()
