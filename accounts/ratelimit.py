"""Per-tier request limits, counted in Redis so they hold across processes and replicas.

The `limits` package does the counting: its moving-window strategy keeps a log of the
last minute's requests per key, updated by one Lua script, so "10 a minute" means at most
10 in any 60 seconds (a fixed window would allow 20 across a boundary). Without
REDIS_URL (the embedded default) it counts in process memory instead.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from dataclasses import dataclass

from django.conf import settings
from limits import RateLimitItem, RateLimitItemPerMinute
from limits.errors import StorageError
from limits.storage import storage_from_string
from limits.strategies import MovingWindowRateLimiter

from accounts.tiers import tier_policy
from config.metrics import count_rate_limit_rejection

log = logging.getLogger(__name__)

_lock = threading.Lock()
_limiters: dict[str, MovingWindowRateLimiter] = {}


@dataclass(frozen=True)
class RateLimit:
    """The answer for one request: whether it may go on, and the figures for headers."""

    allowed: bool
    limit: int
    remaining: int
    reset_s: int  # seconds until the oldest request in the window leaves it

    def headers(self) -> dict[str, str]:
        """X-RateLimit-* headers, and Retry-After when the request is refused."""
        headers = {"X-RateLimit-Limit": str(self.limit),
                   "X-RateLimit-Remaining": str(self.remaining),
                   "X-RateLimit-Reset": str(self.reset_s)}
        if not self.allowed:
            headers["Retry-After"] = str(max(self.reset_s, 1))
        return headers


def _limiter() -> MovingWindowRateLimiter:
    uri = settings.ACCOUNTS_RATELIMIT_STORAGE_URL
    with _lock:
        limiter = _limiters.get(uri)
        if limiter is None:
            options = {"key_prefix": "inkmarket:ratelimit"} if uri.startswith("redis") else {}
            storage = storage_from_string(uri, wrap_exceptions=True, **options)
            limiter = _limiters[uri] = MovingWindowRateLimiter(storage)
        return limiter


def rate_limit_identity(*, api_key_id: int | None, client_ip: str | None) -> str:
    """What a request is counted against: its API key, else its client's address."""
    if api_key_id is not None:
        return f"key:{api_key_id}"
    if client_ip:
        return f"ip:{client_ip}"
    raise ValueError("a request needs an API key id or a client address to be limited")


def window_hit(item: RateLimitItem, *identity: str) -> RateLimit:
    """Count one request against `item` (so many per minute, hour, ...) for `identity`
    in the shared moving window, and answer whether it may go on.

    If the counter store is unreachable the request is let through and the failure
    logged: balances are protected by reservations, and an outage of Redis should not
    turn into an outage of the API.
    """
    limiter = _limiter()
    try:
        allowed = limiter.hit(item, *identity)
        stats = limiter.get_window_stats(item, *identity)
    except StorageError:
        log.exception("rate limit store unreachable; letting the request through")
        return RateLimit(allowed=True, limit=item.amount, remaining=item.amount, reset_s=0)
    reset_s = max(0, math.ceil(stats.reset_time - time.time()))
    return RateLimit(allowed=allowed, limit=item.amount, remaining=max(0, stats.remaining),
                     reset_s=reset_s)


def window_clear(item: RateLimitItem, *identity: str) -> None:
    """Forget the requests counted against `item` for `identity` (tests, support)."""
    _limiter().clear(item, *identity)


def rate_limit_hit(*, tier: str, api_key_id: int | None = None,
                   client_ip: str | None = None) -> RateLimit:
    """Count one request against the tier's per-minute limit (window_hit)."""
    item = RateLimitItemPerMinute(tier_policy(tier).requests_per_minute)
    answer = window_hit(item, rate_limit_identity(api_key_id=api_key_id, client_ip=client_ip))
    if not answer.allowed:
        count_rate_limit_rejection(tier=tier)
    return answer


def rate_limit_clear(*, tier: str, api_key_id: int | None = None,
                     client_ip: str | None = None) -> None:
    """Forget the requests counted for a key or address (tests, support)."""
    window_clear(RateLimitItemPerMinute(tier_policy(tier).requests_per_minute),
                 rate_limit_identity(api_key_id=api_key_id, client_ip=client_ip))
