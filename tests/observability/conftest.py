"""What the observability tests share: the metrics token, and a counting listener that
stands where the chain's RPC node or a host would be and counts every request it gets."""

from __future__ import annotations

import threading
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

TOKEN = "metrics-token-for-tests-0123456789abcdef"


@pytest.fixture
def metrics_token(settings) -> dict[str, str]:
    """A configured metrics token; returns the header that presents it."""
    settings.METRICS_TOKEN = TOKEN
    settings.METRICS_ALLOW_ANONYMOUS = False
    return {"Authorization": f"Bearer {TOKEN}"}


class Counting:
    """An HTTP listener that counts requests. With `forward_to` it passes each POST on
    (a JSON-RPC proxy in front of anvil); without, it answers GET /v1/capabilities as a
    host would."""

    def __init__(self, forward_to: str | None = None):
        self.requests: list[tuple[str, str]] = []
        self.lock = threading.Lock()
        counting = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _answer(self, status: int, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self):
                with counting.lock:
                    counting.requests.append(("GET", self.path))
                self._answer(200, b'{"models": []}')

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with counting.lock:
                    counting.requests.append(("POST", self.path))
                if forward_to is None:
                    self._answer(404, b"{}")
                    return
                request = urllib.request.Request(forward_to, data=body, headers={
                    "Content-Type": "application/json"})
                with urllib.request.urlopen(request, timeout=10) as response:
                    self._answer(response.status, response.read())

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def count(self) -> int:
        with self.lock:
            return len(self.requests)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def counting_rpc(network, settings):
    """The chain's RPC as the product sees it: a counting proxy in front of anvil."""
    rpc = Counting(forward_to=network.anvil.url)
    settings.CHAIN_RPC = rpc.url
    yield rpc
    rpc.close()


@pytest.fixture
def counting_host():
    host = Counting()
    yield host
    host.close()
