"""Verifying attempts: the record each one gets, the one thread that owns the model, and
which results are checked.

The runner opens a record before a host streams (it holds the request and its sampling
secret), files what the host reported once the stream ends, and asks for the check before
it accepts the result, while the escrow is still open. The check runs where
settings.MARKETPLACE_VERIFIER says: "inline" on this process's verifier thread, or
"celery" on a worker of the `verify` queue (marketplace.tasks.verify_attempt). Either way
the model is owned by one thread (a llama.cpp context is not thread-safe), and every
database read and write happens outside it.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import random
import time
from collections.abc import Callable
from concurrent.futures import CancelledError, Future, ThreadPoolExecutor
from pathlib import Path

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from marketplace import queue, sampling
from marketplace.models import VerificationRecord, VerificationState
from marketplace.protocol import GenerationRequest
from marketplace.verifier.scoring import Finding, Reported, Thresholds, score
from marketplace.weights import file_sha256, model_file

log = logging.getLogger(__name__)

VERIFY_TASK = "marketplace.tasks.verify_attempt"
# Why a result was not re-scored when it failed the hash or bill gates: the arbitrator
# reads it as bad faith (marketplace.arbitration).
GATES_FAILED = "the result failed the hash or budget checks"
DONE = frozenset({VerificationState.PASSED, VerificationState.FAILED,
                  VerificationState.SKIPPED, VerificationState.ERROR})


def verification_open(*, attempt_id: int, host_address: str, request: GenerationRequest,
                      chain_id: int, chain_job_id: int | None = None) -> VerificationRecord:
    return VerificationRecord.objects.create(
        attempt_id=attempt_id, host_address=host_address, model=request.model,
        chain_id=chain_id, chain_job_id=chain_job_id,
        request=request.model_dump(mode="json", by_alias=True))


def verification_report(*, record_id: int, tokens: list[tuple[int | None, float | None, str]],
                        complete: bool) -> None:
    """File what the host reported, token by token, once its stream has ended."""
    VerificationRecord.objects.filter(pk=record_id, state=VerificationState.PENDING).update(
        tokens=[list(t) for t in tokens], complete=complete)


def verification_sampled(*, host_address: str, model: str) -> bool:
    """Whether this host's result is checked. Every result of a model with pinned weights
    while the host is on probation (fewer than MARKETPLACE_VERIFY_PROBATION passed checks);
    after that, MARKETPLACE_VERIFY_FRACTION of them, drawn after the result is in."""
    if model_file(model) is None:
        return False
    fraction = settings.MARKETPLACE_VERIFY_FRACTION
    if fraction >= 1.0:
        return True
    passed = VerificationRecord.objects.filter(
        host_address=host_address, state=VerificationState.PASSED)[
        :settings.MARKETPLACE_VERIFY_PROBATION].count()
    if passed < settings.MARKETPLACE_VERIFY_PROBATION:
        return True
    return random.random() < fraction  # the host cannot see the draw: no secret needed


def verification_skip(*, record_id: int, reason: str) -> None:
    VerificationRecord.objects.filter(pk=record_id, state=VerificationState.PENDING).update(
        state=VerificationState.SKIPPED, reason=reason, finished_at=timezone.now())


# ---- the check ------------------------------------------------------------------------

class _Owner:
    """The thread that owns the re-scoring models (one per GGUF file, loaded on first use)."""

    def __init__(self) -> None:
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="verifier")
        self.saver = ThreadPoolExecutor(max_workers=1, thread_name_prefix="verifier-save")
        self.rescorers: dict[Path, object] = {}
        self.pieces: dict[Path, list[bytes]] = {}
        # Freed before the interpreter tears down llama_cpp's module (its finalizers need it).
        atexit.register(self.close)

    def close(self) -> None:
        self.executor.shutdown(wait=True)
        self.saver.shutdown(wait=True)
        for rescorer in self.rescorers.values():
            rescorer.close()
        self.rescorers.clear()

    def submit(self, fn, *args) -> Future:
        return self.executor.submit(fn, *args)

    def save_later(self, record_id: int, done: Future) -> None:
        """Save the verdict of a check nobody waits for any more, off the model's thread."""
        self.saver.submit(_save_outcome, record_id, done)

    def check(self, path: Path, request: GenerationRequest, key: int,
              reported: list[Reported], complete: bool) -> tuple[Finding, float]:
        from marketplace.verifier.rescore import Rescorer
        from marketplace.weights import token_pieces

        rescorer = self.rescorers.get(path)
        if rescorer is None:
            rescorer = self.rescorers[path] = Rescorer(path)
            self.pieces[path] = token_pieces(rescorer.vocab)
        started = time.thread_time()
        finding = score(
            logits=rescorer.logits(rescorer.prompt_tokens(request),
                                   [t.id if t.id is not None else 0 for t in reported]),
            reported=reported, temperature=request.temperature, key=key,
            pieces=self.pieces[path], eog=rescorer.eog, complete=complete,
            thresholds=Thresholds())
        return finding, (time.thread_time() - started) * 1000


_owner: _Owner | None = None


def _the_owner() -> _Owner:
    global _owner
    if _owner is None:
        _owner = _Owner()
    return _owner


# (registry, model id) -> (the file its weights are in, when its sha256 was last found to
# be the one pinned on chain). A verifier judges only with the weights the registry pins: a
# file that differs (an upgrade, a corrupted copy) would fail honest hosts.
_pinned: dict[tuple[str, str], tuple[Path, float]] = {}
PIN_RECHECK_S = 300.0


async def pinned_weights(model: str) -> tuple[Path | None, str]:
    """The GGUF file to re-score `model` with, or why there is none: no local file, or a
    file whose sha256 is not the one the chain pins for the model id."""
    path = model_file(model)
    if path is None:
        return None, f"no pinned weights for {model}"
    from marketplace.wallet import platform_chain

    chain = await platform_chain()
    key = (chain.registry.address, model)
    known = _pinned.get(key)
    if known is not None and known[0] == path and time.monotonic() - known[1] < PIN_RECHECK_S:
        return path, ""
    pinned = await chain.model_hash(model)
    actual = await asyncio.to_thread(file_sha256, path)
    if actual != pinned:
        _pinned.pop(key, None)
        log.error("the verifier's %s (sha256 %s) is not the file the chain pins for %s "
                  "(%s): no result of it is judged", path, actual.hex(), model, pinned.hex())
        return None, (f"the verifier's weights for {model} (sha256 {actual.hex()}) are not "
                      f"the ones pinned on chain ({pinned.hex()})")
    _pinned[key] = (path, time.monotonic())
    return path, ""


def _job(record: VerificationRecord, path: Path | None, why: str):
    """What the owner thread needs, or the reason there is nothing to check."""
    if path is None:
        return None, why
    if record.chain_job_id is None:
        return None, "no job on chain"
    request = GenerationRequest.model_validate(record.request)
    key = sampling.job_key(bytes.fromhex(request.seed), record.chain_id, record.chain_job_id)
    reported = [Reported(t[0], t[1], t[2]) for t in record.tokens]
    return (path, request, key, reported, record.complete), ""


@transaction.atomic
def _save(record_id: int, finding: Finding | None, cpu_ms: float, error: str = "") -> None:
    record = VerificationRecord.objects.select_for_update().get(pk=record_id)
    if record.state != VerificationState.PENDING:
        return  # checked already (a retried task): the first verdict stands
    record.finished_at = timezone.now()
    record.cpu_ms = round(cpu_ms, 2)
    if finding is None:
        record.state, record.reason = VerificationState.ERROR, error[:2000]
    else:
        record.state = VerificationState.PASSED if finding.passed else VerificationState.FAILED
        if not finding.passed:
            log.warning("verification %s of %s failed: %s %s", record_id, record.host_address,
                        finding.reason, finding.evidence[:3])
        record.positions = finding.positions
        record.failures = finding.failures
        record.mismatches = finding.mismatches
        record.clear_misses = finding.clear_misses
        record.mean_logprob_error = round(finding.mean_logprob_error, 6)
        record.max_logprob_error = round(finding.max_logprob_error, 6)
        record.reason = finding.reason[:2000]
        record.evidence = finding.evidence
    record.save()


def _save_outcome(record_id: int, done: Future) -> None:
    from django.db import connections

    try:
        finding, cpu_ms = done.result()
    except CancelledError:  # the process is going away: the record stays PENDING
        return
    except (ValueError, RuntimeError) as exc:
        _save(record_id, None, 0.0, str(exc))
    else:
        _save(record_id, finding, cpu_ms)
    finally:
        connections.close_all()  # this thread's: saves are rare, a connection is not kept


def verification_run(record_id: int, weights: Callable[[str], tuple[Path | None, str]],
                     ) -> VerificationRecord:
    """Check one record now, on the owner thread, and save the verdict (idempotent).
    `weights` is `pinned_weights` run from sync code (it reads the chain)."""
    record = VerificationRecord.objects.get(pk=record_id)
    if record.state in DONE:
        return record
    job, why = _job(record, *weights(record.model))
    if job is None:
        verification_skip(record_id=record_id, reason=why)
    else:
        try:
            finding, cpu_ms = _the_owner().submit(_the_owner().check, *job).result()
        except (ValueError, RuntimeError) as exc:  # too long for the context, decode failed
            log.warning("verification %s could not run: %s", record_id, exc)
            _save(record_id, None, 0.0, str(exc))
        else:
            _save(record_id, finding, cpu_ms)
    return VerificationRecord.objects.get(pk=record_id)


async def verify(record_id: int) -> VerificationRecord:
    """The verdict on one record, checked inline or by the `verify` queue; a record still
    PENDING after MARKETPLACE_VERIFY_TIMEOUT_S is returned as it is."""
    if settings.MARKETPLACE_VERIFIER == "inline":
        record = await sync_to_async(VerificationRecord.objects.get)(pk=record_id)
        if record.state in DONE:
            return record
        job, why = _job(record, *await pinned_weights(record.model))
        if job is None:
            await sync_to_async(verification_skip)(record_id=record_id, reason=why)
        else:
            owner = _the_owner()
            checking = owner.submit(owner.check, *job)
            # asyncio.wait, not a timeout around the await: cancelling the awaited future
            # would cancel a check still queued behind others, and its verdict with it.
            waiting = asyncio.wrap_future(checking)
            done, _ = await asyncio.wait({waiting}, timeout=settings.MARKETPLACE_VERIFY_TIMEOUT_S)
            if not done:
                # The check goes on without us; its verdict is still saved when it is in
                # (for the processor, the arbitrator and the host's record).
                waiting.add_done_callback(lambda f: f.cancelled() or f.exception())
                checking.add_done_callback(lambda done: owner.save_later(record_id, done))
                return record
            try:
                finding, cpu_ms = waiting.result()
            except (ValueError, RuntimeError) as exc:
                await sync_to_async(_save)(record_id, None, 0.0, str(exc))
            else:
                await sync_to_async(_save)(record_id, finding, cpu_ms)
        return await sync_to_async(VerificationRecord.objects.get)(pk=record_id)
    await sync_to_async(queue.send)(VERIFY_TASK, record_id, queue="verify")
    deadline = time.monotonic() + settings.MARKETPLACE_VERIFY_TIMEOUT_S
    while True:
        record = await sync_to_async(VerificationRecord.objects.get)(pk=record_id)
        if record.state in DONE or time.monotonic() >= deadline:
            return record
        await asyncio.sleep(0.05)
