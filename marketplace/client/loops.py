"""Chain work from sync code (Celery tasks, management commands): one event loop per call."""

from __future__ import annotations

import asyncio

from marketplace import wallet
from marketplace.client import pool


def run_async(coro):
    """Run chain work from a worker's sync code on a loop of its own, and close the HTTP
    sessions it opened before the loop goes (handles and pools belong to one loop)."""

    async def main():
        # Handles are keyed by loop: a dead loop's handle may sit under this loop's id, and
        # other loops of this process (a batch's) keep theirs.
        key = id(asyncio.get_running_loop())
        wallet._handles.pop(key, None)
        wallet._arbitrator_handles.pop(key, None)
        try:
            return await coro
        finally:
            await wallet.close_loop_handles()
            await pool.close()

    return asyncio.run(main())
