"""Results cached for an hour under the sha256 of the normalized request: the same model,
prompt and parameters come back at no charge."""

from __future__ import annotations

import hashlib
import json

from django.conf import settings
from django.core.cache import caches

from marketplace.gateway.db import db


def cache_key(*, model: str, prompt: str, max_tokens: int, temperature: float) -> str:
    """sha256 of the model (case and spaces ignored), the prompt with its whitespace
    collapsed, and the parameters."""
    normalized = {"model": model.strip().lower(), "prompt": " ".join(prompt.split()),
                  "max_tokens": max_tokens, "temperature": round(temperature, 3)}
    return hashlib.sha256(json.dumps(normalized, sort_keys=True).encode()).hexdigest()


def _name(key: str) -> str:
    return f"gateway:result:{key}"


# Through the gateway's own threads, not cache.aget: Django's async cache methods are
# thread-sensitive, and a request task detached from its HTTP request must not wait for
# the request's own thread (under async_to_sync that thread waits for the task).


_shared = None


def _cache():
    """One cache client for the whole process. `django.core.cache.cache` is one per
    thread and async context, so under ASGI each request would make its own Redis
    client and open a new connection for its single look-up."""
    global _shared
    if _shared is None:
        _shared = caches.create_connection("default")
    return _shared


def cached_result_sync(key: str) -> dict | None:
    return _cache().get(_name(key))


def cache_result_sync(key: str, *, text: str, tokens: int, host: str,
                      finish_reason: str) -> None:
    _cache().set(_name(key), {"text": text, "tokens": tokens, "host": host,
                           "finish_reason": finish_reason}, settings.GATEWAY_CACHE_TTL_S)


async def cached_result(key: str) -> dict | None:
    return await db(cached_result_sync, key)
