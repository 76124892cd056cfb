"""Per-tier request limits, counted in Redis so they hold across processes and replicas.

A moving window: a log of the last minute's requests per key, so "10 a minute" means at
most 10 in any 60 seconds (a fixed window would allow 20 across a boundary). In Redis the
log is the `limits` package's list, and one Lua script (_HIT) both counts the request and
reads the window for the headers: one round trip, from threads (window_hit) or from the
event loop (window_hit_async). Without REDIS_URL (the embedded default) `limits` counts
in process memory instead.
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
import weakref
from dataclasses import dataclass

from django.conf import settings
from limits import RateLimitItem, RateLimitItemPerMinute
from limits.errors import StorageError
from limits.storage import RedisStorage, storage_from_string
from limits.strategies import MovingWindowRateLimiter

from accounts.tiers import tier_policy
from observability.metrics import count_rate_limit_rejection

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


# Count the request if the window has room, then read the window: (1 if counted else 0,
# requests in the window, the oldest one's time). The list is limits' moving window: the
# newest time first, at most `limit` long.
_HIT = """
local key, now = KEYS[1], ARGV[1]
local limit, expiry = tonumber(ARGV[2]), tonumber(ARGV[3])
local since = tonumber(now) - expiry
local allowed = 0
local edge = redis.call('lindex', key, limit - 1)
if not (edge and tonumber(edge) >= since) then
    redis.call('lpush', key, now)
    redis.call('ltrim', key, 0, limit - 1)
    redis.call('expire', key, expiry)
    allowed = 1
end
local low, high, last = 0, redis.call('llen', key) - 1, -1
while low <= high do
    local mid = math.floor((low + high) / 2)
    local value = tonumber(redis.call('lindex', key, mid))
    if value and value >= since then
        last = mid
        low = mid + 1
    else
        high = mid - 1
    end
end
local oldest = now
if last >= 0 then
    oldest = redis.call('lindex', key, last)
end
return {allowed, last + 1, oldest}
"""
_PREFIX = "inkmarket:ratelimit"


def _limiter() -> MovingWindowRateLimiter:
    uri = settings.ACCOUNTS_RATELIMIT_STORAGE_URL
    with _lock:
        limiter = _limiters.get(uri)
        if limiter is None:
            options = {"key_prefix": _PREFIX} if uri.startswith("redis") else {}
            storage = storage_from_string(uri, wrap_exceptions=True, **options)
            limiter = _limiters[uri] = MovingWindowRateLimiter(storage)
        return limiter


def rate_limit_identity(*, account_id: int | None, client_ip: str | None) -> str:
    """What a request is counted against: the account its key belongs to (every key of an
    account shares one count, so more keys never mean more requests), else its client's
    address."""
    if account_id is not None:
        return f"account:{account_id}"
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
        if isinstance(limiter.storage, RedisStorage):
            uri = settings.ACCOUNTS_RATELIMIT_STORAGE_URL
            script = _scripts.get(uri)
            if script is None:
                script = _scripts[uri] = (
                    limiter.storage.get_connection().register_script(_HIT))
            return _answer(item, script(keys=[_key(item, identity)],
                                        args=_hit_args(item)))
        allowed = limiter.hit(item, *identity)
        stats = limiter.get_window_stats(item, *identity)
    except StorageError:
        return _unlimited(item)
    except Exception as exc:  # redis-py's own errors, from the script's call
        if not _is_redis_error(exc):
            raise
        return _unlimited(item)
    return _rate_limit(item, allowed, stats.remaining, stats.reset_time)


# The script by its SHA (EVALSHA, sent whole again only if Redis has forgotten it), on
# the threads' client or on each event loop's own async client.
_scripts: dict[str, object] = {}
_async_scripts: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _async_script(uri: str):
    import redis.asyncio

    scripts = _async_scripts.setdefault(asyncio.get_running_loop(), {})
    script = scripts.get(uri)
    if script is None:
        client = redis.asyncio.Redis.from_url(
            uri.replace("redis+unix", "unix"), socket_connect_timeout=2, socket_timeout=5)
        script = scripts[uri] = client.register_script(_HIT)
    return script


async def window_hit_async(item: RateLimitItem, *identity: str) -> RateLimit:
    """window_hit from the event loop: the one script on an async Redis client (no
    thread), or the in-memory count where there is no Redis."""
    uri = settings.ACCOUNTS_RATELIMIT_STORAGE_URL
    if not uri.startswith(("redis", "unix")):
        return window_hit(item, *identity)  # process memory: no I/O to wait for
    try:
        return _answer(item, await _async_script(uri)(keys=[_key(item, identity)],
                                                      args=_hit_args(item)))
    except Exception as exc:
        if not _is_redis_error(exc):
            raise
        return _unlimited(item)


async def rate_limit_clients_close() -> None:
    """Close the running loop's async Redis clients (tests, shutdown)."""
    for script in _async_scripts.pop(asyncio.get_running_loop(), {}).values():
        await script.registered_client.aclose()


def _key(item: RateLimitItem, identity: tuple[str, ...]) -> str:
    return f"{_PREFIX}:{item.key_for(*identity)}"


def _hit_args(item: RateLimitItem) -> list:
    return [repr(time.time()), item.amount, item.get_expiry()]


def _answer(item: RateLimitItem, reply) -> RateLimit:
    allowed, count, oldest = reply
    return _rate_limit(item, bool(allowed), item.amount - int(count),
                       float(oldest) + item.get_expiry())


def _rate_limit(item: RateLimitItem, allowed: bool, remaining: int,
                reset_time: float) -> RateLimit:
    return RateLimit(allowed=allowed, limit=item.amount, remaining=max(0, remaining),
                     reset_s=max(0, math.ceil(reset_time - time.time())))


def _is_redis_error(exc: Exception) -> bool:
    import redis

    return isinstance(exc, redis.RedisError | OSError)


def _unlimited(item: RateLimitItem) -> RateLimit:
    log.exception("rate limit store unreachable; letting the request through")
    return RateLimit(allowed=True, limit=item.amount, remaining=item.amount, reset_s=0)


def window_clear(item: RateLimitItem, *identity: str) -> None:
    """Forget the requests counted against `item` for `identity` (tests, support)."""
    _limiter().clear(item, *identity)


def rate_limit_hit(*, tier: str, account_id: int | None = None,
                   client_ip: str | None = None) -> RateLimit:
    """Count one request against the tier's per-minute limit (window_hit)."""
    item = RateLimitItemPerMinute(tier_policy(tier).requests_per_minute)
    return _counted(tier, window_hit(
        item, rate_limit_identity(account_id=account_id, client_ip=client_ip)))


async def rate_limit_hit_async(*, tier: str, account_id: int | None = None,
                               client_ip: str | None = None) -> RateLimit:
    """rate_limit_hit from the event loop (window_hit_async)."""
    item = RateLimitItemPerMinute(tier_policy(tier).requests_per_minute)
    return _counted(tier, await window_hit_async(
        item, rate_limit_identity(account_id=account_id, client_ip=client_ip)))


def _counted(tier: str, answer: RateLimit) -> RateLimit:
    if not answer.allowed:
        count_rate_limit_rejection(tier=tier)
    return answer


def rate_limit_clear(*, tier: str, account_id: int | None = None,
                     client_ip: str | None = None) -> None:
    """Forget the requests counted for an account or address (tests, support)."""
    window_clear(RateLimitItemPerMinute(tier_policy(tier).requests_per_minute),
                 rate_limit_identity(account_id=account_id, client_ip=client_ip))
