"""In-process events of jobs: a token arrived, the state changed.

Subscribers are coroutines; a slow or failing subscriber never holds up the job or other
subscribers (each delivery is its own task, and errors are logged, not raised).
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TokenEvent:
    job_id: str
    index: int
    text: str


@dataclass(frozen=True)
class StateEvent:
    job_id: str
    state: str
    detail: dict[str, Any]


Event = TokenEvent | StateEvent
Handler = Callable[[Event], Awaitable[None]]
ANY_JOB = "*"


class EventBus:
    def __init__(self) -> None:
        self._handlers: dict[str, list[Handler]] = defaultdict(list)

    def subscribe(self, handler: Handler, job_id: str = ANY_JOB) -> Callable[[], None]:
        """Call `handler` for each event of `job_id` (or of every job); returns unsubscribe."""
        self._handlers[job_id].append(handler)

        def unsubscribe() -> None:
            handlers = self._handlers.get(job_id, [])
            if handler in handlers:
                handlers.remove(handler)
            if not handlers:
                self._handlers.pop(job_id, None)

        return unsubscribe

    async def publish(self, event: Event) -> None:
        handlers = [*self._handlers.get(event.job_id, ()), *self._handlers.get(ANY_JOB, ())]
        for handler in handlers:
            try:
                await handler(event)
            except Exception:
                log.exception("event handler failed for job %s", event.job_id)


bus = EventBus()


async def wait_for_state(job_id: str, states: set[str]) -> StateEvent:
    """Wait until `job_id` reaches one of `states`; bound it with `asyncio.timeout`."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[StateEvent] = loop.create_future()

    async def handler(event: Event) -> None:
        if isinstance(event, StateEvent) and event.state in states and not done.done():
            done.set_result(event)

    unsubscribe = bus.subscribe(handler, job_id)
    try:
        return await done
    finally:
        unsubscribe()
