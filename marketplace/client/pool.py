"""One shared HTTP/WebSocket connection pool for talking to hosts.

At most 50 connections, idle ones closed after 5 minutes. aiohttp's connector does the
pooling; this module only owns its lifetime per event loop, because a session bound to
one loop cannot be used from another (tests and management commands each run their own).
"""

from __future__ import annotations

import asyncio

import aiohttp

POOL_LIMIT = 50
IDLE_TIMEOUT_S = 300.0

_sessions: dict[int, aiohttp.ClientSession] = {}


def session() -> aiohttp.ClientSession:
    loop = asyncio.get_running_loop()
    key = id(loop)
    current = _sessions.get(key)
    if current is None or current.closed:
        connector = aiohttp.TCPConnector(limit=POOL_LIMIT, keepalive_timeout=IDLE_TIMEOUT_S)
        current = aiohttp.ClientSession(
            connector=connector, timeout=aiohttp.ClientTimeout(total=None, connect=5)
        )
        _sessions[key] = current
    return current


async def close() -> None:
    loop = asyncio.get_running_loop()
    current = _sessions.pop(id(loop), None)
    if current is not None:
        await current.close()
