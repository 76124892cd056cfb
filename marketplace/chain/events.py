"""Reading contract events: catch up from a stored block, then follow new blocks.

The cursor (the last block fully read) is stored by the caller through `save_cursor`, so a
restarted reader neither misses nor repeats a block's events. On a chain that can reorganise,
`confirmations` keeps the reader that many blocks behind the head. Delivery is at least
once: a fault in the middle of a range reads that range again, so handlers should be
idempotent (each event carries its block and log index).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from web3.contract.async_contract import AsyncContract

from marketplace.chain.tx import RPC_FAULTS, rpc_error

log = logging.getLogger(__name__)

MAX_RANGE = 2000  # blocks per eth_getLogs request


@dataclass(frozen=True)
class Event:
    name: str
    block: int
    log_index: int
    tx_hash: str
    args: dict[str, Any]


async def read_range(contract: AsyncContract, names: list[str], start: int,
                     end: int, filters: dict[str, Any] | None = None) -> list[Event]:
    """The events `names` of blocks start..end, in chain order; `filters` matches indexed
    arguments ({"host": address})."""
    found: list[Event] = []
    for name in names:
        logs = await getattr(contract.events, name)().get_logs(
            from_block=start, to_block=end, argument_filters=filters)
        for item in logs:
            found.append(Event(name=name, block=int(item["blockNumber"]),
                               log_index=int(item["logIndex"]),
                               tx_hash=item["transactionHash"].to_0x_hex(),
                               args=dict(item["args"])))
    found.sort(key=lambda e: (e.block, e.log_index))
    return found


async def follow(
    contract: AsyncContract, names: list[str], *, from_block: int,
    save_cursor: Callable[[int], Awaitable[None]] | None = None,
    poll_s: float = 0.5, stop: asyncio.Event | None = None, confirmations: int = 0,
) -> AsyncIterator[Event]:
    """Yield events in chain order from `from_block` on, forever (or until `stop`)."""
    w3 = contract.w3
    next_block = from_block
    while stop is None or not stop.is_set():
        try:
            head = await w3.eth.block_number - confirmations
            while next_block <= head:
                end = min(head, next_block + MAX_RANGE - 1)
                for event in await read_range(contract, names, next_block, end):
                    yield event
                next_block = end + 1
                if save_cursor is not None:
                    await save_cursor(end)
        except RPC_FAULTS as exc:
            # The node is away: keep the cursor and try again; nothing is skipped.
            log.warning("event reader waiting for the chain: %s", rpc_error(exc))
        if stop is not None:
            try:
                await asyncio.wait_for(stop.wait(), poll_s)
            except TimeoutError:
                pass
        else:
            await asyncio.sleep(poll_s)


async def read_all(contract: AsyncContract, names: list[str], start: int, end: int,
                   filters: dict[str, Any] | None = None) -> list[Event]:
    """The events of blocks start..end, read MAX_RANGE blocks a request."""
    found: list[Event] = []
    for first in range(start, end + 1, MAX_RANGE):
        found += await read_range(contract, names, first, min(end, first + MAX_RANGE - 1),
                                  filters)
    return found
