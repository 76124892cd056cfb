"""`manage.py p2p bootstrap | lookup MODEL`: run a bootstrap node of the discovery network,
or look a model's hosts up on the DHT as a client sees them (docs/discovery.md)."""

import asyncio
import signal
import threading
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError


class Command(BaseCommand):
    help = "Run a libp2p bootstrap node, or look up a model's hosts on the DHT."

    def add_arguments(self, parser):
        parser.add_argument("action", choices=["bootstrap", "lookup"])
        parser.add_argument("model", nargs="?", help="for lookup: the model id")
        parser.add_argument("--port", type=int, default=settings.P2P_DEVNET_BOOTSTRAP_PORT)
        parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
        parser.add_argument("--key-file", type=Path,
                            default=settings.DEVNET_DIR / "p2p-bootstrap.key")
        parser.add_argument("--addr-file", type=Path,
                            default=settings.DEVNET_DIR / "p2p-bootstrap.addr",
                            help="where to write this node's multiaddr")

    def handle(self, *args, action: str, model: str | None, **o):
        if action == "bootstrap":
            self._bootstrap(o)
        else:
            if not model:
                raise CommandError("usage: p2p lookup MODEL")
            self._lookup(model)

    def _bootstrap(self, o) -> None:
        from marketplace.p2p import bootstrap

        node = bootstrap.start(key_file=o["key_file"], port=o["port"], listen_host=o["host"],
                               models=list(settings.MARKETPLACE_MODELS),
                               bootstrap=list(settings.P2P_BOOTSTRAP),
                               addr_file=o["addr_file"])
        self.stdout.write(f"bootstrap node at {' '.join(node.addrs)}", ending="\n")
        self.stdout.flush()
        stop = threading.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
        while not stop.wait(1) and node.running:
            pass
        node.stop()

    def _lookup(self, model: str) -> None:
        from marketplace.client import discovery
        from marketplace.p2p import client as p2p

        async def run():
            found = await discovery.candidates(model, fresh=True)
            return found, p2p.status()

        found, status = asyncio.run(run())
        self.stdout.write(f"discovery by {status['mode']}: {status['detail']}")
        for c in found:
            self.stdout.write(f"{c.address} {c.url} {c.price_per_token_wei} wei/token")
        p2p.reset()
