"""One shared HTTP/WebSocket connection pool for talking to hosts.

At most 50 connections, idle ones closed after 5 minutes. aiohttp's connector does the
pooling; this module only owns its lifetime per event loop, because a session bound to
one loop cannot be used from another (tests and management commands each run their own).

Hosts are strangers (docs/security.md, "Hostile hosts: bounded bytes"): names resolve
through the host URL policy (hosturl.HostResolver), a redirect is refused rather than
followed (its Location is a URL nobody checked, and aiohttp's WebSocket handshake would
follow it), and answers are read as sent: nothing inflates a gzip body behind our back.
"""

from __future__ import annotations

import asyncio

import aiohttp

from marketplace.client.errors import ClientError, HostFault
from marketplace.client.hosturl import HostResolver

POOL_LIMIT = 50
IDLE_TIMEOUT_S = 300.0

_sessions: dict[int, aiohttp.ClientSession] = {}


async def _refuse_redirects(request: aiohttp.ClientRequest, handler) -> aiohttp.ClientResponse:
    response = await handler(request)
    if 300 <= response.status < 400:
        response.release()
        raise ClientError(HostFault.MALFORMED, f"{request.url.origin()} answered with a "
                          f"redirect ({response.status}); hosts may not redirect",
                          permanent=False)
    return response


def session() -> aiohttp.ClientSession:
    loop = asyncio.get_running_loop()
    key = id(loop)
    current = _sessions.get(key)
    if current is None or current.closed:
        connector = aiohttp.TCPConnector(limit=POOL_LIMIT, keepalive_timeout=IDLE_TIMEOUT_S,
                                         resolver=HostResolver())
        current = aiohttp.ClientSession(
            connector=connector, timeout=aiohttp.ClientTimeout(total=None, connect=5),
            auto_decompress=False, headers={"Accept-Encoding": "identity"},
            middlewares=(_refuse_redirects,),
        )
        _sessions[key] = current
    return current


async def close() -> None:
    loop = asyncio.get_running_loop()
    current = _sessions.pop(id(loop), None)
    if current is not None:
        await current.close()
