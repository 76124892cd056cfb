"""One long-lived thread owns the model and serves generations from a bounded queue.

llama.cpp's OpenMP pool thrashes when calls come from changing threads (on two cores:
about 110 tokens/s from one owning thread against 64-75 from a thread pool), so every
generation runs on this one thread. Tokens cross back to the event loop with
call_soon_threadsafe; a full queue is refused at once (BUSY) so the client goes elsewhere.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from marketplace.host.backends import Backend
from marketplace.protocol import GenerationRequest

log = logging.getLogger(__name__)


class Busy(Exception):
    pass


@dataclass
class Work:
    request: GenerationRequest
    on_token: Callable[[str], None]
    on_done: Callable[[str | None], None]  # None, or an error message
    cancel: threading.Event = field(default_factory=threading.Event)
    enqueued: float = field(default_factory=time.monotonic)


class ModelWorker:
    def __init__(self, backend: Backend, *, capacity: int = 8):
        self.backend = backend
        self.capacity = capacity
        self._queue: queue.Queue[Work | None] = queue.Queue(maxsize=capacity)
        self.active = 0
        self.served = 0
        self._thread = threading.Thread(target=self._run, name="model", daemon=True)
        self._thread.start()

    @property
    def queued(self) -> int:
        return self._queue.qsize()

    def submit(self, work: Work) -> None:
        try:
            self._queue.put_nowait(work)
        except queue.Full:
            raise Busy(f"{self.capacity} generations already queued") from None

    def _run(self) -> None:
        while True:
            work = self._queue.get()
            if work is None:
                return
            if work.cancel.is_set():
                work.on_done("cancelled before it started")
                continue
            self.active = 1
            error = None
            try:
                for piece in self.backend.stream(work.request, work.cancel):
                    work.on_token(piece)
            except Exception as exc:  # a backend failure ends this job, never the thread
                log.exception("generation failed")
                error = f"{type(exc).__name__}: {exc}"
            finally:
                self.active = 0
                self.served += 1
            work.on_done(error)

    def stop(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=5)


def loop_callbacks(loop: asyncio.AbstractEventLoop, on_token, on_done):
    """Wrap event-loop callbacks so the model thread can call them."""

    def token(piece: str) -> None:
        loop.call_soon_threadsafe(on_token, piece)

    def done(error: str | None) -> None:
        loop.call_soon_threadsafe(on_done, error)

    return token, done
