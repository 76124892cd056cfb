"""A bootstrap node: a DHT server with a stable identity that others dial first. It also
subscribes to the known models' topics, so gossip reaches clients through it before they
have met the hosts themselves. Any host can serve as one as well (its multiaddr in
P2P_BOOTSTRAP)."""

from __future__ import annotations

import os
from pathlib import Path

from marketplace.p2p.node import Node
from marketplace.p2p.records import model_topic


def identity(key_file: Path) -> bytes:
    """The node's key, made once and kept, so its multiaddr stays the same across runs."""
    if not key_file.exists():
        key_file.parent.mkdir(parents=True, exist_ok=True)
        key_file.write_bytes(os.urandom(32))
        key_file.chmod(0o600)
    return key_file.read_bytes()


def start(*, key_file: Path, port: int, models: list[str], listen_host: str = "127.0.0.1",
          bootstrap: list[str] | None = None, addr_file: Path | None = None) -> Node:
    node = Node(private_key=identity(key_file), port=port, listen_host=listen_host,
                bootstrap=bootstrap or [], server=True).start()
    for model in models:
        node.subscribe(model_topic(model))
    if addr_file is not None:
        addr_file.parent.mkdir(parents=True, exist_ok=True)
        addr_file.write_text("\n".join(node.addrs) + "\n")
    return node
