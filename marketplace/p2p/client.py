"""The process's client of the network: one view (its own libp2p node and thread) shared by
every discovery in the process (web, Celery worker, CLI), started on first use.

`hosts` answers None when discovery should take the registry path instead: P2P discovery
off, no bootstrap node configured, or none reachable. That state is what /health shows.
"""

from __future__ import annotations

import logging
import os
import threading
import time

from django.conf import settings

from marketplace.chain.contracts import Chain
from marketplace.p2p.gate import RegistryGate
from marketplace.p2p.node import P2PError
from marketplace.p2p.records import HostRecord
from marketplace.p2p.view import Limits, View
from observability.metrics import p2p_fallbacks

log = logging.getLogger(__name__)

RETRY_START_S = 15.0  # after a failed start, the registry path this long before trying again

_lock = threading.Lock()
_view: View | None = None
_gate = RegistryGate()
_state = {"mode": "off", "detail": "", "since": 0.0, "tried": 0.0}


def bootstrap_addrs() -> list[str]:
    """settings.P2P_BOOTSTRAP, or the devnet's bootstrap node when it has written its
    address (marketplace.p2p.bootstrap)."""
    if settings.P2P_BOOTSTRAP:
        return list(settings.P2P_BOOTSTRAP)
    if not settings.P2P_DISCOVERY:
        return []
    path = settings.DEVNET_DIR / "p2p-bootstrap.addr"
    try:
        return [line.strip() for line in path.read_text().splitlines() if line.strip()]
    except OSError:
        return []


def _set(mode: str, detail: str) -> None:
    if _state["mode"] != mode:
        _state["since"] = time.time()
    _state["mode"], _state["detail"] = mode, detail


def view() -> View | None:
    """The started view, or None (and the reason in `status`)."""
    global _view
    if not settings.P2P_DISCOVERY:
        _set("registry", "P2P_DISCOVERY is off")
        return None
    with _lock:
        if _view is not None and _view.node.running:
            return _view
        if time.monotonic() - _state["tried"] < RETRY_START_S:
            return None
        _state["tried"] = time.monotonic()
        addrs = bootstrap_addrs()
        if not addrs:
            _set("registry", "no bootstrap nodes configured (P2P_BOOTSTRAP)")
            return None
        try:
            _view = View(private_key=os.urandom(32), bootstrap=addrs, gate=_gate,
                         limits=Limits.from_settings()).start()
        except P2PError as exc:
            _set("registry", f"the libp2p node did not start: {exc}")
            return None
        return _view


async def hosts(model: str, chain: Chain) -> list[tuple[HostRecord, int]] | None:
    """Gated records for `model` from the DHT, or None: take the registry path."""
    import asyncio

    current = await asyncio.to_thread(view)
    if current is None:
        p2p_fallbacks.inc()
        return None
    if not current.reachable:
        _set("registry", "bootstrap nodes unreachable: discovery uses the registry")
        p2p_fallbacks.inc()
        return None
    try:
        found = await current.hosts(model, chain)
    except P2PError as exc:
        _set("registry", f"DHT lookup failed: {exc}")
        p2p_fallbacks.inc()
        return None
    _set("dht", f"{current.node.peers()} peers connected")
    return found


def status() -> dict:
    """For /health: which path discovery takes, and why."""
    found = {"mode": _state["mode"], "detail": _state["detail"]}
    if _state["mode"] == "registry" and settings.P2P_DISCOVERY:
        found["warning"] = "discovery fell back to the registry: " + _state["detail"]
    return found


def gate() -> RegistryGate:
    return _gate


def reset() -> None:
    """Stop the view and forget every state (tests, and a change of bootstrap nodes)."""
    global _view
    with _lock:
        if _view is not None:
            _view.stop()
        _view = None
        _gate.stop()
        _state.update(mode="off", detail="", since=0.0, tried=0.0)
