"""The gateway's database (and cache) work, off the event loop, on a small pool of
long-lived threads.

Django under ASGI gives each request a thread of its own, so a connection opened there
is a new connection per request. The gateway's queries (the key lookup, the reservation,
the settlement, the request record) run here instead: each thread keeps its connection
between requests, and concurrent requests really meet at the account's row lock on
separate connections.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import close_old_connections, connections

_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def _executor() -> ThreadPoolExecutor:
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(max_workers=settings.GATEWAY_DB_THREADS,
                                       thread_name_prefix="gateway-db")
        return _pool


def _fresh(fn, *args, **kwargs):
    close_old_connections()  # drops a connection that broke or outlived CONN_MAX_AGE
    return fn(*args, **kwargs)


async def db(fn, *args, **kwargs):
    """Run the synchronous (ORM) function `fn` on the gateway's database threads."""
    return await sync_to_async(_fresh, thread_sensitive=False, executor=_executor())(
        fn, *args, **kwargs)


def db_sync(fn, *args, **kwargs):
    """db() for synchronous callers: the same threads, waited for."""
    return _executor().submit(_fresh, fn, *args, **kwargs).result()


def gateway_db_close() -> None:
    """Close every connection the threads hold and stop them (tests, before the test
    database is dropped). Blocking: call it from synchronous code."""
    global _pool
    with _pool_lock:
        pool, _pool = _pool, None
    if pool is None:
        return
    size = pool._max_workers
    barrier = threading.Barrier(size)

    def close() -> None:
        connections.close_all()
        barrier.wait(timeout=10)  # holds each thread until all have run one close

    for future in [pool.submit(close) for _ in range(size)]:
        future.result()
    pool.shutdown(wait=True)
