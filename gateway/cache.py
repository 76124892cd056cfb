"""Results cached for an hour under the sha256 of the normalized request: the same model,
prompt and parameters come back at no charge.

In Redis (REDIS_URL) as JSON, read and written from the event loop on the gateway's async
client (gateway.conn); without Redis (the embedded default), in Django's
local-memory cache. The key carries the default cache's KEY_PREFIX, so a deployment (or
a test) that namespaces its cache namespaces these too.
"""

from __future__ import annotations

import json
import logging

from django.conf import settings
from django.core.cache import caches

from gateway.conn import redis_client
from marketplace.results import cache_key  # noqa: F401  (the one normalization)
from observability.metrics import count_cache_lookup

log = logging.getLogger(__name__)


def _name(key: str) -> str:
    prefix = settings.CACHES.get("default", {}).get("KEY_PREFIX", "")
    return f"{prefix}:gateway:result:{key}" if prefix else f"gateway:result:{key}"


async def cached_result(key: str) -> dict | None:
    """The cached result for `key`, or None. A cache that cannot be reached is a miss."""
    client = redis_client()
    if client is None:
        found = caches["default"].get(_name(key))
    else:
        try:
            raw = await client.get(_name(key))
        except Exception:
            log.warning("result cache unreachable; treating the request as a miss",
                        exc_info=True)
            raw = None
        found = json.loads(raw) if raw is not None else None
    count_cache_lookup(hit=found is not None, cache="gateway")
    return found


async def cache_result(key: str, *, text: str, tokens: int, host: str,
                       finish_reason: str) -> None:
    """Keep a result for settings.GATEWAY_CACHE_TTL_S. Failing to keep it loses nothing."""
    value = {"text": text, "tokens": tokens, "host": host, "finish_reason": finish_reason}
    client = redis_client()
    if client is None:
        caches["default"].set(_name(key), value, settings.GATEWAY_CACHE_TTL_S)
        return
    try:
        await client.set(_name(key), json.dumps(value), ex=settings.GATEWAY_CACHE_TTL_S)
    except Exception:
        log.warning("result cache unreachable; the result is not kept", exc_info=True)
