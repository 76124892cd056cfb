"""One long-lived thread owns the model and serves generations from a bounded queue.

llama.cpp's OpenMP pool thrashes when calls come from changing threads (on two cores:
about 110 tokens/s from one owning thread against 64-75 from a thread pool), so every
generation runs on this one thread. A backend that can batch (llama.cpp, engine.py) runs
several generations at once, one decode step for all of them; any other backend serves
them one after another. Tokens cross back to the event loop with call_soon_threadsafe; a
full queue is refused at once (BUSY) so the client goes elsewhere.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from marketplace.protocol import GenerationRequest

log = logging.getLogger(__name__)


class Busy(Exception):
    pass


@dataclass(frozen=True)
class Token:
    text: str
    id: int | None = None  # None from a backend that does not report token ids
    logprob: float | None = None


@dataclass
class Work:
    request: GenerationRequest
    on_token: Callable[[Token], None]
    on_done: Callable[[str | None], None]  # None, or an error message
    # The job's sampling key (marketplace.sampling.job_key); the engine samples with it.
    key: int = 0
    cancel: threading.Event = field(default_factory=threading.Event)
    enqueued: float = field(default_factory=time.monotonic)


class ModelWorker:
    def __init__(self, backend, *, capacity: int = 8):
        self.backend = backend
        self.capacity = capacity
        self.active = 0
        self.served = 0
        self._waiting: deque[Work] = deque()
        self._calls: deque[tuple[Callable[[], Any], concurrent.futures.Future]] = deque()
        self._cond = threading.Condition()
        self._stopping = False
        self._started = threading.Event()
        self._engine = None
        self._failed: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="model", daemon=True)
        self._thread.start()
        self._started.wait()
        if self._failed is not None:
            raise self._failed

    @property
    def queued(self) -> int:
        """Generations waiting for the model (running ones are not counted)."""
        return len(self._waiting)

    @property
    def parallel(self) -> int:
        return self._engine.parallel if self._engine is not None else 1

    def submit(self, work: Work) -> None:
        with self._cond:
            if len(self._waiting) >= self.capacity:
                raise Busy(f"{self.capacity} generations already queued")
            self._waiting.append(work)
            self._cond.notify()

    def call(self, fn: Callable[[], Any]) -> concurrent.futures.Future:
        """Run `fn` on the model thread between decode steps (for measuring the model
        without the host around it)."""
        future: concurrent.futures.Future = concurrent.futures.Future()
        with self._cond:
            self._calls.append((fn, future))
            self._cond.notify()
        return future

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify()
        self._thread.join(timeout=10)

    # ---- the model thread -----------------------------------------------------------

    def _run(self) -> None:
        open_engine = getattr(self.backend, "open_engine", None)
        try:
            # The engine's context is created on the thread that will decode with it.
            self._engine = open_engine() if open_engine is not None else None
        except BaseException as exc:
            self._failed = exc
            return
        finally:
            self._started.set()
        try:
            while self._next_round():
                pass
        finally:
            for work in self._drain():
                work.on_done("the host is stopping")
            if self._engine is not None:
                self._engine.close()

    def _drain(self) -> list[Work]:
        with self._cond:
            waiting = list(self._waiting)
            self._waiting.clear()
            return waiting

    def _next_round(self) -> bool:
        engine = self._engine
        with self._cond:
            while (not self._stopping and not self._waiting and not self._calls
                   and (engine is None or engine.running == 0)):
                self._cond.wait()
            if self._stopping:
                return False
            calls = list(self._calls)
            self._calls.clear()
            room = (engine.parallel - engine.running) if engine is not None else 1
            admitted = [self._waiting.popleft() for _ in range(min(room, len(self._waiting)))]
        for fn, future in calls:
            if future.set_running_or_notify_cancel():
                try:
                    future.set_result(fn())
                except Exception as exc:
                    future.set_exception(exc)
        for work in admitted:
            self._count(work)
            if work.cancel.is_set():
                work.on_done("cancelled before it started")
            elif engine is not None:
                try:
                    engine.start(work)
                except Exception as exc:  # a bad request ends its job, never the thread
                    log.exception("could not start a generation")
                    work.on_done(f"{type(exc).__name__}: {exc}")
            else:
                self._serve_alone(work)
        if engine is not None:
            self.active = engine.running
            try:
                engine.step()
            except Exception as exc:
                log.exception("decode step failed")
                engine.fail_all(f"{type(exc).__name__}: {exc}")
            self.active = engine.running
        return True

    def _count(self, work: Work) -> None:
        on_done = work.on_done

        def done(error: str | None) -> None:
            self.served += 1
            on_done(error)

        work.on_done = done

    def _serve_alone(self, work: Work) -> None:
        self.active = 1
        error = None
        try:
            for piece in self.backend.stream(work.request, work.cancel):
                work.on_token(Token(piece))
        except Exception as exc:  # a backend failure ends this job, never the thread
            log.exception("generation failed")
            error = f"{type(exc).__name__}: {exc}"
        finally:
            self.active = 0
        work.on_done(error)


def loop_callbacks(loop: asyncio.AbstractEventLoop, on_token, on_done):
    """Wrap event-loop callbacks so the model thread can call them."""

    def token(piece: Token) -> None:
        loop.call_soon_threadsafe(on_token, piece)

    def done(error: str | None) -> None:
        loop.call_soon_threadsafe(on_done, error)

    return token, done
