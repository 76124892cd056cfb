"""The gateway's own connections for its hot path, used on the event loop itself: a small
pool of async psycopg connections to PostgreSQL, and an async Redis client.

Django's ORM is synchronous, so every query from an async view is a hop to a thread and
back, and under ASGI a request's own thread opens a connection of its own. A /v1 request
needs four round trips to the database and three to Redis; made from the loop on
long-lived connections, they cost a fraction of what the ORM and the hops cost (see
docs/gateway.md, "Benchmark").

Both are kept per event loop (connections belong to the loop that opened them): one for
the life of a server process, one per test. `gateway_connections_close()` closes the
running loop's. Without PostgreSQL (the embedded SQLite default) `pg_pool()` is None and
the gateway uses the ORM; without REDIS_URL `redis_client()` is None.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import psycopg
from django.conf import settings
from django.db import connections
from psycopg.pq import TransactionStatus


class PgPool:
    """At most `size` autocommit connections, opened on demand and kept; with
    `synchronous_commit` False their commits do not wait for the disk. A connection
    that broke, or was left inside a transaction (a query cancelled half-way), is closed
    rather than handed to the next caller."""

    def __init__(self, params: dict, size: int, *, synchronous_commit: bool = True):
        self._params = params
        self._synchronous = synchronous_commit
        self._idle: list[psycopg.AsyncConnection] = []
        self._slots = asyncio.Semaphore(size)
        self._closed = False

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[psycopg.AsyncConnection]:
        async with self._slots:
            conn = None
            while self._idle and conn is None:
                conn = self._idle.pop()
                if conn.closed:
                    conn = None
            if conn is None:
                conn = await psycopg.AsyncConnection.connect(**self._params, autocommit=True)
                if not self._synchronous:
                    await conn.execute("SET synchronous_commit TO off")
            reusable = False
            try:
                yield conn
                reusable = True
            finally:
                if (reusable and not self._closed and not conn.closed
                        and conn.info.transaction_status == TransactionStatus.IDLE):
                    self._idle.append(conn)
                else:
                    await _close_quietly(conn)

    async def close(self) -> None:
        self._closed = True
        idle, self._idle = self._idle, []
        for conn in idle:
            await _close_quietly(conn)


async def _close_quietly(conn: psycopg.AsyncConnection) -> None:
    try:
        await conn.close()
    except Exception:  # a broken connection: nothing left to close
        pass


_pools: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_redis: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def pg_pool() -> PgPool | None:
    """The running loop's pool, or None when the database is not PostgreSQL or the
    gateway's direct SQL is switched off (GATEWAY_DIRECT_SQL)."""
    loop = asyncio.get_running_loop()
    pool = _pools.get(loop)
    if pool is None:
        if not settings.GATEWAY_DIRECT_SQL:
            return None
        # Looked at once per loop: under ASGI each request has a connection handler of
        # its own, and asking it here would build a database wrapper for every request.
        wrapper = connections["default"]
        if wrapper.vendor != "postgresql":
            return None
        # The same server, database and options as Django's own connection (under the
        # test runner, the test database).
        params = wrapper.get_connection_params()
        # Server-side binding, and psycopg's own prepared statements (after five uses
        # of a statement; Django turns them off for the sake of connection poolers).
        for name in ("cursor_factory", "context", "prepare_threshold"):
            params.pop(name, None)
        # Named in pg_stat_activity, apart from Django's own connections.
        params.setdefault("application_name", "inkmarket-gateway")
        pool = _pools[loop] = PgPool(params, settings.GATEWAY_DB_CONNECTIONS,
                                     synchronous_commit=settings.GATEWAY_SYNCHRONOUS_COMMIT)
    return pool


def redis_client():
    """The running loop's redis.asyncio client, or None without REDIS_URL."""
    if not settings.REDIS_URL:
        return None
    import redis.asyncio

    loop = asyncio.get_running_loop()
    client = _redis.get(loop)
    if client is None:
        client = _redis[loop] = redis.asyncio.Redis.from_url(
            settings.REDIS_URL, socket_connect_timeout=2, socket_timeout=5,
            health_check_interval=30)
    return client


_on_close: list = []


def connections_on_close(hook) -> None:
    """Await `hook()` first whenever a loop's connections are closed (the till's writer
    registers its drain here)."""
    if hook not in _on_close:
        _on_close.append(hook)


async def gateway_connections_close() -> None:
    """Close the running loop's database connections and Redis client (tests, shutdown)."""
    for hook in _on_close:
        await hook()
    loop = asyncio.get_running_loop()
    pool = _pools.pop(loop, None)
    if pool is not None:
        await pool.close()
    client = _redis.pop(loop, None)
    if client is not None:
        await client.aclose()

