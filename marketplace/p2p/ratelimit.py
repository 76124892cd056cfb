"""Per-peer rate limits on what strangers send us over libp2p (records, gossip)."""

from __future__ import annotations

from limits import RateLimitItemPerMinute
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter


class PeerLimit:
    """`per_minute` messages of one kind per peer; over that, `hit` says no."""

    def __init__(self, per_minute: int):
        self.item = RateLimitItemPerMinute(per_minute)
        # limits' memory storage expires its keys, so peers that come and go do not pile up.
        self.limiter = MovingWindowRateLimiter(MemoryStorage())

    def hit(self, peer: str, kind: str) -> bool:
        return self.limiter.hit(self.item, kind, peer)
