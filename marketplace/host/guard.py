"""What a public host grants a stranger before it knows who they are.

A host is reached by anyone's client. Two bounds keep a few of them from taking it over:
open requests and streams per client network and in total (`ConnectionCaps`), and failed
stream handshakes per network per minute (`HandshakeFailures`): each failure may have cost
a signature recovery (about 13 ms of the event loop with eth-keys' pure-Python backend)
and a chain read, so a network that keeps failing is refused before either. Both answer
BUSY, which an honest client takes as "try another host".
"""

from __future__ import annotations

from collections import Counter

from limits import RateLimitItemPerMinute
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter


class ConnectionCaps:
    """Requests and streams open at once, per client network and in total."""

    def __init__(self, *, total: int, per_network: int):
        self.total = total
        self.per_network = per_network
        self.by_network: Counter[str] = Counter()
        self.open = 0

    def enter(self, network: str) -> str | None:
        """Count one more; None if it may go on, else why not (and nothing is counted)."""
        if self.by_network[network] >= self.per_network:
            return f"more than {self.per_network} connections from your address"
        if self.open >= self.total:
            return "the host is at its connection limit"
        self.by_network[network] += 1
        self.open += 1
        return None

    def leave(self, network: str) -> None:
        self.open -= 1
        self.by_network[network] -= 1
        if self.by_network[network] <= 0:
            del self.by_network[network]


class HandshakeFailures:
    """Failed stream handshakes per client network in any 60 seconds (a moving window,
    so the limit holds across a minute's boundary too)."""

    def __init__(self, *, per_minute: int):
        self.limit = RateLimitItemPerMinute(per_minute)
        # In process memory: a host has no Redis, and its limits are its own.
        self.limiter = MovingWindowRateLimiter(MemoryStorage())

    def exhausted(self, network: str) -> bool:
        return not self.limiter.test(self.limit, "host-handshake-failures", network)

    def record(self, network: str) -> None:
        self.limiter.hit(self.limit, "host-handshake-failures", network)
