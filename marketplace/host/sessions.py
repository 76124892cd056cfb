"""A job's generation on this host: the tokens so far, kept for resume, and its outcome.

A session outlives its WebSocket: a client that drops and reconnects with a checkpoint
gets the rest from the buffer. If nobody is attached for GRACE_S while it still
generates, the generation is cancelled (the client is gone; the chain's timeout path
refunds it).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

from marketplace.e2e import result_commitment
from marketplace.host.worker import Token, Work
from marketplace.protocol import GenerationRequest

GRACE_S = 30.0
RETAIN_S = 600.0  # a finished session stays resumable this long after its last client left


def session_key(job_id: int, channel_id: int | None) -> int | tuple[int, int]:
    return job_id if channel_id is None else (channel_id, job_id)


@dataclass
class Session:
    job_id: int
    request: GenerationRequest
    # A channel stream's channel (protocol.py): paid by vouchers, nothing on chain. Its
    # job id is the client's own, so sessions are keyed by both (`key`).
    channel_id: int | None = None
    price_per_token_wei: int = 0
    billed: int = 0  # tokens charged to the channel so far (a resume re-sends, never re-bills)
    tokens: list[str] = field(default_factory=list)
    # Each token's {"id", "logprob"} (TokenMeta), or None from a backend without them.
    metadata: list[dict | None] = field(default_factory=list)
    timestamps: list[float] = field(default_factory=list)
    done: bool = False
    error: str | None = None
    result_hash: str | None = None
    # marketplace.e2e.result_key of the job: what the result hash and the copy at rest
    # are keyed with. Held in memory only, for as long as the session.
    result_key: bytes = b""
    cid: str | None = None
    submitted_tx: str | None = None
    attached: int = 0
    reaped: bool = False
    detached_at: float | None = None
    work: Work | None = None
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    submitted: asyncio.Event = field(default_factory=asyncio.Event)
    started: float = field(default_factory=time.monotonic)
    opened_at: float = field(default_factory=time.time)  # wall clock, as the timestamps

    @property
    def key(self) -> int | tuple[int, int]:
        return session_key(self.job_id, self.channel_id)

    @property
    def text(self) -> str:
        return "".join(self.tokens)

    def add(self, token: Token) -> None:
        self.tokens.append(token.text)
        self.metadata.append(None if token.id is None else
                             {"id": token.id, "logprob": token.logprob})
        self.timestamps.append(time.time())
        self._wake()

    def finish(self, error: str | None) -> None:
        self.done = True
        self.error = error
        self.result_hash = result_commitment(self.text, self.result_key)
        self._wake()

    def _wake(self) -> None:
        self.changed.set()
        self.changed = asyncio.Event()

    def attach(self) -> None:
        self.attached += 1
        self.detached_at = None

    def detach(self) -> None:
        self.attached -= 1
        if self.attached == 0:
            self.detached_at = time.monotonic()

    def abandoned(self, now: float) -> bool:
        return (not self.done and self.attached == 0 and self.detached_at is not None
                and now - self.detached_at > GRACE_S)

    def expired(self, now: float) -> bool:
        return (self.done and self.submitted.is_set() and self.attached == 0
                and self.detached_at is not None and now - self.detached_at > RETAIN_S)
