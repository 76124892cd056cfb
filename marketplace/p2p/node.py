"""A libp2p node (Kademlia DHT + gossipsub) on its own thread and trio loop.

py-libp2p is written for trio; the rest of our stack is asyncio. Rather than run trio
inside asyncio (trio-asyncio is unmaintained) or port our stack, the node owns one thread
running `trio.run`, and every call from outside crosses with `trio.from_thread.run`: the
caller's thread blocks until the trio side answers, so asyncio callers go through
`asyncio.to_thread` (see `AsyncNode`). Gossip reaches the owner through a callback run on
the trio thread; it must be quick and thread-safe (marketplace.p2p.view takes a lock).

The peer id is derived from the host's chain key: a secp256k1 libp2p identity made from
the same private key, so a peer id names one Ethereum address (`peer_address`), and a
record a peer serves must be signed by that address.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass

import coincurve
import multiaddr
import trio
from eth_utils import keccak, to_checksum_address
from libp2p import new_host
from libp2p.crypto.keys import KeyPair
from libp2p.crypto.secp256k1 import Secp256k1PrivateKey, Secp256k1PublicKey
from libp2p.custom_types import TProtocol
from libp2p.kad_dht.kad_dht import DHTMode, KadDHT
from libp2p.network.stream.exceptions import StreamEOF
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo, info_from_p2p_addr
from libp2p.pubsub.gossipsub import PROTOCOL_ID as GOSSIPSUB_10
from libp2p.pubsub.gossipsub import PROTOCOL_ID_V11 as GOSSIPSUB_11
from libp2p.pubsub.gossipsub import GossipSub
from libp2p.pubsub.pubsub import Pubsub
from libp2p.tools.anyio_service import background_trio_service

log = logging.getLogger(__name__)

RECORD_PROTOCOL = TProtocol("/inkmarket/record/1.0.0")
CALL_TIMEOUT_S = 10.0


class P2PError(Exception):
    """The libp2p node could not do what was asked (not started, timed out, unreachable)."""


@dataclass(frozen=True)
class Provider:
    peer_id: str
    addrs: tuple[str, ...]


def key_pair(private_key: bytes) -> KeyPair:
    secret = Secp256k1PrivateKey(coincurve.PrivateKey(private_key))
    return KeyPair(secret, secret.get_public_key())


def peer_address(peer_id: str | ID) -> str | None:
    """The Ethereum address whose key made this peer id, or None (not a secp256k1 id)."""
    try:
        pid = peer_id if isinstance(peer_id, ID) else ID.from_base58(peer_id)
        key = pid.extract_public_key()
    except (ValueError, KeyError, TypeError):
        return None
    if not isinstance(key, Secp256k1PublicKey):
        return None
    raw = coincurve.PublicKey(key.to_bytes()).format(compressed=False)[1:]
    return to_checksum_address(keccak(raw)[-20:])


class Node:
    """One libp2p host, its DHT and its gossipsub, run by a thread of its own.

    `serve_record` (for hosts) gives the bytes answered on RECORD_PROTOCOL; `on_gossip`
    (for clients) gets (topic, data, sender peer id) for each message that passed
    `accept_gossip` (sender peer id, topic) -> bool, the rate limit."""

    def __init__(self, *, private_key: bytes, port: int = 0, listen_host: str = "127.0.0.1",
                 bootstrap: list[str] | tuple[str, ...] = (), server: bool = True,
                 serve_record: Callable[[str], bytes | None] | None = None,
                 accept_record_request: Callable[[str], bool] | None = None,
                 on_gossip: Callable[[str, bytes, str], None] | None = None,
                 accept_gossip: Callable[[str, str], bool] | None = None,
                 max_record_bytes: int = 8192):
        self.key_pair = key_pair(private_key)
        self.peer_id = ID.from_pubkey(self.key_pair.public_key).to_base58()
        self.port = port
        self.listen_host = listen_host
        self.bootstrap = list(bootstrap)
        self.server = server
        self.serve_record = serve_record
        self.accept_record_request = accept_record_request
        self.on_gossip = on_gossip
        self.accept_gossip = accept_gossip
        self.max_record_bytes = max_record_bytes
        self.addrs: list[str] = []
        self.bootstrapped = False
        self._token: trio.lowlevel.TrioToken | None = None
        self._ready = threading.Event()
        self._failed: BaseException | None = None
        self._thread: threading.Thread | None = None
        self._stop: trio.Event | None = None
        self._nursery: trio.Nursery | None = None
        self._subscribed: set[str] = set()

    # ---- life ---------------------------------------------------------------------------

    def start(self, timeout: float = 20.0) -> Node:
        self._thread = threading.Thread(target=self._run, name=f"libp2p-{self.peer_id[-6:]}",
                                        daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            raise P2PError("the libp2p node did not start in time")
        if self._failed is not None:
            raise P2PError(f"the libp2p node failed to start: {self._failed}") from self._failed
        return self

    def stop(self, timeout: float = 10.0) -> None:
        if self._token is not None and self._stop is not None:
            try:
                trio.from_thread.run_sync(self._stop.set, trio_token=self._token)
            except trio.RunFinishedError:
                pass
        if self._thread is not None:
            self._thread.join(timeout)

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive() and self._ready.is_set() \
            and self._failed is None

    def _run(self) -> None:
        try:
            trio.run(self._main)
        except BaseException as exc:
            self._failed = exc
            log.warning("libp2p node stopped: %r", exc)
        finally:
            self._ready.set()

    async def _main(self) -> None:
        listen = multiaddr.Multiaddr(f"/ip4/{self.listen_host}/tcp/{self.port}")
        host = new_host(key_pair=self.key_pair, listen_addrs=[listen])
        self.host = host
        self._stop = trio.Event()
        async with host.run(listen_addrs=[listen]), trio.open_nursery() as nursery:
            self._nursery = nursery
            self.addrs = [f"{a}" if "/p2p/" in str(a) else f"{a}/p2p/{self.peer_id}"
                          for a in host.get_addrs()]
            if self.serve_record is not None:
                host.set_stream_handler(RECORD_PROTOCOL, self._answer_record)
            self.dht = KadDHT(host, DHTMode.SERVER if self.server else DHTMode.CLIENT)
            self.gossipsub = GossipSub(protocols=[GOSSIPSUB_11, GOSSIPSUB_10], degree=6,
                                       degree_low=4, degree_high=12,
                                       heartbeat_initial_delay=0.1, heartbeat_interval=1)
            self.pubsub = Pubsub(host, self.gossipsub)
            async with background_trio_service(self.dht), \
                    background_trio_service(self.pubsub), \
                    background_trio_service(self.gossipsub):
                await self.pubsub.wait_until_ready()
                await self._bootstrap()
                self._token = trio.lowlevel.current_trio_token()
                self._ready.set()
                nursery.start_soon(self._keep_bootstrapped)
                await self._stop.wait()
                nursery.cancel_scope.cancel()

    async def _bootstrap(self) -> None:
        ok = False
        for addr in self.bootstrap:
            try:
                info = info_from_p2p_addr(multiaddr.Multiaddr(addr))
                if str(info.peer_id) == self.peer_id:
                    continue
                self.host.get_peerstore().add_addrs(info.peer_id, info.addrs, 3600)
                with trio.fail_after(5):
                    await self.host.connect(info)
                await self.dht.routing_table.add_peer(info.peer_id)
                ok = True
            except Exception as exc:
                log.info("bootstrap %s unreachable: %r", addr, exc)
        self.bootstrapped = ok or not self.bootstrap

    async def _keep_bootstrapped(self) -> None:
        # py-libp2p can be left with an empty routing table after bootstrap (its issue
        # tracker, see docs/discovery.md): connect again whenever it is.
        # Only the bootstrap nodes are added by hand: a connected peer may be a DHT client,
        # which answers no DHT queries and must stay out of the table.
        while True:
            await trio.sleep(2)
            if self.bootstrap and (self.dht.routing_table.size() == 0
                                   or not self.host.get_connected_peers()):
                await self._bootstrap()

    async def _answer_record(self, stream) -> None:
        try:
            peer = str(stream.muxed_conn.peer_id)
            if self.accept_record_request is not None and not self.accept_record_request(peer):
                return
            data = self.serve_record(peer) if self.serve_record else None
            if data:
                await stream.write(data)
        finally:
            await stream.close()

    # ---- calls from other threads ------------------------------------------------------

    def _call(self, fn, *args, timeout: float = CALL_TIMEOUT_S):
        if self._token is None or not self.running:
            raise P2PError("the libp2p node is not running")

        async def bounded():
            with trio.fail_after(timeout):
                return await fn(*args)

        try:
            return trio.from_thread.run(bounded, trio_token=self._token)
        except trio.TooSlowError:
            raise P2PError(f"{getattr(fn, '__name__', 'call')} timed out") from None
        except trio.RunFinishedError:
            raise P2PError("the libp2p node stopped") from None
        except (Exception, BaseExceptionGroup, trio.Cancelled) as exc:
            # py-libp2p lets a peer's failure out of its queries' nurseries (an exception
            # group from provide or find_providers when a peer in the table has gone):
            # one failed call, not a failed node.
            raise P2PError(f"{getattr(fn, '__name__', 'call')} failed: {exc!r}"[:300]) from exc

    def provide(self, key: str) -> bool:
        return bool(self._call(self.dht.provide, key))

    def find_providers(self, keys: list[str], count: int = 20,
                       per_key_s: float = 3.0) -> list[Provider]:
        """The providers of any of `keys`, looked up together. A key's walk that takes
        longer than `per_key_s` (py-libp2p waits on peers that have gone, see
        docs/discovery.md) is cut short, with what it had found by then: each answer is
        kept in the node's own provider store as it arrives."""
        from libp2p.kad_dht.kad_dht import _encode_key

        async def find_all() -> list:
            found: list = []

            async def one(key: str) -> None:
                with trio.move_on_after(per_key_s):
                    try:
                        found.extend(await self.dht.find_providers(key, count))
                    except Exception as exc:
                        log.debug("providers of %s: %r", key, exc)
                found.extend(self.dht.provider_store.get_providers(_encode_key(key)))

            async with trio.open_nursery() as nursery:
                for key in keys:
                    nursery.start_soon(one, key)
            return found

        found = self._call(find_all)
        return [Provider(str(p.peer_id), tuple(str(a) for a in p.addrs)) for p in found]

    def fetch_record(self, provider: Provider, timeout: float = 5.0) -> bytes:
        return self._call(self._fetch, provider, timeout=timeout)

    def fetch_records(self, providers: list[Provider], timeout: float = 5.0,
                      concurrency: int = 32) -> dict[str, bytes]:
        """Each provider's record, fetched at once on the trio side (one thread hop for
        all); a provider that fails or is slower than `timeout` is left out."""
        async def fetch_all() -> dict[str, bytes]:
            found: dict[str, bytes] = {}
            limit = trio.Semaphore(concurrency)

            async def one(provider: Provider) -> None:
                async with limit:
                    with trio.move_on_after(timeout):
                        try:
                            found[provider.peer_id] = await self._fetch(provider)
                        except Exception as exc:
                            log.debug("no record from %s: %r", provider.peer_id, exc)

            async with trio.open_nursery() as nursery:
                for provider in providers:
                    nursery.start_soon(one, provider)
            return found

        return self._call(fetch_all, timeout=timeout + 1)

    async def _fetch(self, provider: Provider) -> bytes:
        pid = ID.from_base58(provider.peer_id)
        if provider.addrs:
            info = PeerInfo(pid, [multiaddr.Multiaddr(a) for a in provider.addrs])
            self.host.get_peerstore().add_addrs(pid, info.addrs, 600)
            await self.host.connect(info)
        stream = await self.host.new_stream(pid, [RECORD_PROTOCOL])
        try:
            data = b""
            while len(data) <= self.max_record_bytes:
                try:
                    chunk = await stream.read(self.max_record_bytes + 1 - len(data))
                except StreamEOF:
                    break
                if not chunk:
                    break
                data += chunk
            return data  # one byte over the limit tells the caller it was oversized
        finally:
            await stream.close()

    def publish(self, topic: str, data: bytes) -> None:
        self._call(self.pubsub.publish, topic, data)

    def subscribe(self, topic: str) -> None:
        if topic not in self._subscribed:
            self._call(self._subscribe, topic)

    async def _subscribe(self, topic: str) -> None:
        if topic in self._subscribed:
            return
        self._subscribed.add(topic)
        if self.accept_gossip is not None:
            accept = self.accept_gossip
            self.pubsub.set_topic_validator(
                topic, lambda peer, msg: accept(str(ID(msg.from_id)), topic), False)
        subscription = await self.pubsub.subscribe(topic)
        self._nursery.start_soon(self._deliver, topic, subscription)

    async def _deliver(self, topic: str, subscription) -> None:
        while True:
            msg = await subscription.get()
            if self.on_gossip is not None and msg.from_id != self.host.get_id().to_bytes():
                try:
                    self.on_gossip(topic, bytes(msg.data), str(ID(msg.from_id)))
                except Exception:
                    log.exception("gossip handler failed")

    def connect(self, addr: str) -> None:
        async def dial() -> None:
            info = info_from_p2p_addr(multiaddr.Multiaddr(addr))
            self.host.get_peerstore().add_addrs(info.peer_id, info.addrs, 3600)
            await self.host.connect(info)
            await self.dht.routing_table.add_peer(info.peer_id)

        self._call(dial)

    def peers(self) -> int:
        return len(self.host.get_connected_peers()) if self.running else 0

    def routing_table_size(self) -> int:
        return self.dht.routing_table.size() if self.running else 0


class AsyncNode:
    """The same node for asyncio code: each call runs in a worker thread."""

    def __init__(self, node: Node):
        self.node = node

    async def find_providers(self, keys: list[str]) -> list[Provider]:
        return await asyncio.to_thread(self.node.find_providers, keys)

    async def fetch_record(self, provider: Provider) -> bytes:
        return await asyncio.to_thread(self.node.fetch_record, provider)

    async def provide(self, key: str) -> bool:
        return await asyncio.to_thread(self.node.provide, key)

    async def publish(self, topic: str, data: bytes) -> None:
        await asyncio.to_thread(self.node.publish, topic, data)
