"""Our chain connections stay usable when web3's process-wide session lock is stuck."""

from __future__ import annotations

import asyncio
import threading

from web3 import AsyncWeb3
from web3._utils.http_session_manager import HTTPSessionManager

from marketplace.chain.connect import http_provider


async def test_a_chain_call_goes_through_while_web3s_shared_lock_is_held(anvil):
    """web3 7 takes one lock, shared by every provider of the process, around each
    request; a request cancelled at the wrong moment leaves it held for good (web3.py
    issue #3867), and every chain call after it would wait forever. Here another thread
    holds it for the whole test: a call through our provider still answers."""
    taken, done = threading.Event(), threading.Event()

    def hold() -> None:
        with HTTPSessionManager._lock:
            taken.set()
            done.wait(30)

    holder = threading.Thread(target=hold, daemon=True)
    holder.start()
    assert taken.wait(5)
    w3 = AsyncWeb3(http_provider(anvil))
    try:
        async with asyncio.timeout(10):
            assert await w3.eth.chain_id == 31337
            assert await w3.eth.block_number >= 0
    finally:
        done.set()
        holder.join(5)
        await w3.provider.disconnect()
