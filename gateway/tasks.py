"""Celery tasks of the gateway: batch items. Each task takes item ids; the items claim
their own rows, so a task delivered twice (a lost worker, a sweep) does nothing twice.

Items run on one event loop per worker process, kept for the life of the process on a
thread of its own. Starting a loop per task would cost more than a short item itself: a
chain handle (contract deployment lookup, keystore decryption), the host connection pool
and the discovery cache are all made per loop. With one loop, every task of the process
shares them, and the items of a task (and of several tasks, under a threads pool) are in
flight together, as the hosts decode several jobs together.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

from celery import shared_task
from celery.signals import worker_process_shutdown, worker_shutdown
from django.conf import settings

from gateway import batch as batch_services

log = logging.getLogger(__name__)
T = TypeVar("T")


class _LoopThread:
    """The process's event loop, on a daemon thread; made again after a fork (a prefork
    child must not share its parent's loop) or if its thread died."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._pid = 0

    def loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            alive = self._thread is not None and self._thread.is_alive()
            if self._loop is None or self._pid != os.getpid() or not alive:
                self._loop = asyncio.new_event_loop()
                self._thread = threading.Thread(target=self._loop.run_forever,
                                                name="batch-loop", daemon=True)
                self._thread.start()
                self._pid = os.getpid()
            return self._loop

    def close(self, timeout: float = 10.0) -> None:
        """Close what the loop's items opened (host connections, the upstream client, the
        chain handle) and stop the loop: a worker shutting down leaves nothing unclosed."""
        with self._lock:
            loop, self._loop = self._loop, None
        if loop is None or not loop.is_running() or self._pid != os.getpid():
            return

        async def close_all() -> None:
            from gateway.conn import gateway_connections_close
            from gateway.upstream import upstream_close
            from marketplace import wallet
            from marketplace.client import pool

            await pool.close()
            await upstream_close()
            await gateway_connections_close()
            await wallet.close_loop_handles()

        try:
            asyncio.run_coroutine_threadsafe(close_all(), loop).result(timeout)
        except Exception:
            log.exception("closing the batch loop's connections failed")
        finally:
            loop.call_soon_threadsafe(loop.stop)

    def run(self, coro: Coroutine[Any, Any, T], timeout: float) -> T:
        future = asyncio.run_coroutine_threadsafe(coro, self.loop())
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise


loop_thread = _LoopThread()


@worker_shutdown.connect  # the threads and solo pools: the worker's own process
@worker_process_shutdown.connect  # a prefork child
def _close_loop(**_: Any) -> None:
    loop_thread.close()


def _task_time_limit() -> int:
    return settings.BATCH_ITEM_TIMEOUT_S + 30


# The tasks keep the names they had when the gateway lived inside the marketplace app:
# messages already queued, beat schedules and dead letters name them so.
@shared_task(name=batch_services.ITEM_TASK, bind=True, acks_late=True,
             reject_on_worker_lost=True, time_limit=settings.BATCH_ITEM_TIMEOUT_S + 45,
             soft_time_limit=settings.BATCH_ITEM_TIMEOUT_S + 30,
             autoretry_for=(Exception,), retry_backoff=5, retry_backoff_max=300,
             retry_jitter=True, max_retries=5)
def batch_items_run(self, item_ids: list[int]) -> dict[str, int]:
    """Run the items together; items whose failure may pass are sent again after their
    backoff. A failure of the task itself (the database away) retries it with backoff;
    whatever outlives that is found again by the sweep (batch_items_sweep)."""
    outcomes = loop_thread.run(batch_services.batch_items_process(item_ids=list(item_ids)),
                               timeout=_task_time_limit())
    summary: dict[str, int] = {}
    for outcome in outcomes:
        summary[outcome.status] = summary.get(outcome.status, 0) + 1
        if outcome.status in {"retry", "held"}:
            batch_services.batch_items_enqueue(item_ids=[outcome.item_id],
                                               countdown=outcome.retry_in_s)
    return summary


def _broker_backlog() -> int | None:
    """Messages waiting in the default queue; None when the broker cannot say."""
    from celery import current_app

    try:
        with current_app.connection_for_read() as connection:
            queue = current_app.conf.task_default_queue
            return connection.default_channel.queue_declare(
                queue=queue, passive=True).message_count
    except Exception:
        log.warning("could not read the broker's queue length", exc_info=True)
        return None


@shared_task(name="marketplace.gateway.tasks.batch_items_sweep", acks_late=True,
             time_limit=120, soft_time_limit=100)
def batch_items_sweep() -> int:
    """Beat, every minute: queue again the items whose task was lost (a broker restart,
    a worker killed past its redelivery), and fail those that killed every worker."""
    batch_services.batch_items_exhausted()
    # A queued item whose task is still waiting in the broker is not lost, only behind a
    # backlog: queued items are sent again only once the broker's queue is empty.
    backlog = _broker_backlog()
    stuck = batch_services.batch_items_stuck(queued_too=backlog == 0)
    if stuck:
        log.warning("requeueing %d batch items nobody was running", len(stuck))
        batch_services.batch_items_enqueue(item_ids=stuck)
    return len(stuck)


@shared_task(name="gateway.tasks.till_reconcile", acks_late=True, time_limit=120,
             soft_time_limit=100)
def till_reconcile() -> dict[str, int]:
    """Beat, every minute: the till's mirrors checked against PostgreSQL; idle ones, and
    ones a dead process left with steps unwritten, taken back (accounts.till)."""
    from django.db import connection

    from accounts.till import till_reconcile as reconcile

    # Also with the till switched off: mirrors it left go back once idle.
    if not settings.REDIS_URL or connection.vendor != "postgresql":
        return {}
    return reconcile()
