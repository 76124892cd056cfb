"""Carries one job through the marketplace: rank, negotiate, post with escrow, wait for
the claim, stream, verify, accept — and on a dead, stalled or junk host, go on with the
next-ranked host from the text accepted so far.

A host that takes payment channels (its capabilities say so, for our deployment's
contract) is paid through the platform's channel to it instead (docs/sessions.md):
nothing goes on chain for the job, the stream carries vouchers for what was received,
and a result that later fails verification gets the host slashed by the arbitrator.
The first prompt to such a host with no channel yet waits for the channel's open or
goes per-job while it opens (MARKETPLACE_CHANNEL_FIRST_PROMPT).

Each host's part is its own on-chain job ("attempt"). A host that dies or stalls is paid
nothing: its escrow comes back through the contract's timeout path. A host whose result
fails verification is disputed. Only verified text is kept: whenever a host's part is not
accepted (it died, stalled, sent what the protocol refuses, or failed verification), its
text is taken back from the reader and from Job.text (a REWOUND event) before the next
host starts, and a job that fails keeps only text that was accepted.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import secrets
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import aiohttp
from asgiref.sync import sync_to_async
from django.conf import settings
from django.core.cache import cache
from eth_account.messages import encode_defunct

from marketplace import channels as channel_services
from marketplace import jobs as job_services
from marketplace.chain.contracts import Chain
from marketplace.chain.errors import ChainError
from marketplace.client import discovery, negotiation, stream
from marketplace.client.errors import ClientError
from marketplace.client.events import StateEvent, TokenEvent, bus
from marketplace.client.ranking import Candidate, rank
from marketplace.client.retry import with_retries
from marketplace.client.verify import job_result_key, verify_result
from marketplace.models import AttemptState, JobState, VerificationState
from marketplace.protocol import GenerationRequest, TokenMeta
from marketplace.verifier import service as verifier
from marketplace.wallet import platform_chain
from observability.logging import job_id_var

log = logging.getLogger(__name__)

MAX_HOSTS = 4
RESULT_TIMEOUT_S = 30.0
# A chain RPC outage is waited out (about a minute, backing off to 15 s) as long as
# nothing was sent; past that the job fails and the background processor settles it.
CHAIN_WAIT_ATTEMPTS = 8
_UNREACHABLE = (OSError, TimeoutError, aiohttp.ClientConnectionError)

TokenCallback = Callable[[int, str], Awaitable[None]]
StateCallback = Callable[[str, dict], Awaitable[None]]
FinishedCallback = Callable[[uuid.UUID], Awaitable[None]]


@dataclass
class JobSpec:
    model: str
    prompt: str
    max_tokens: int
    temperature: float = 0.7
    content_type: str | None = None
    max_price_per_token_wei: int | None = None
    max_latency_ms: float | None = None
    owner_id: int | None = None
    # A conversation's key: each prompt of it goes first to the host that answered the
    # last one, whose engine still holds the context's prefix in its KV cache. Each prompt
    # carries the whole context, so any other host can take over from it.
    session: str | None = None


@dataclass
class JobOutcome:
    job_id: uuid.UUID
    text: str
    tokens: int
    model: str
    host: str
    cost_wei: int
    quality: float
    attempts: int
    ttft_ms: float | None
    tx_hashes: list[str] = field(default_factory=list)
    cancelled: bool = False
    # The result passed verification (quality at or above the threshold). A cancelled job
    # may be accepted on its hash alone: paid for, but not verified, and never cached.
    verified: bool = False
    # Each token's text and what its host reported of it (id, log-probability), in order.
    pieces: list[str] = field(default_factory=list)
    metadata: list[TokenMeta | None] = field(default_factory=list)


class _Progress:
    """The text delivered so far, as the reader sees it, and who to tell."""

    def __init__(self, job_id: uuid.UUID, on_token: TokenCallback | None,
                 on_state: StateCallback | None, with_metadata: bool = False):
        self.job_id = job_id
        self.pieces: list[str] = []
        self.metadata: list[TokenMeta | None] = []
        self.with_metadata = with_metadata
        self._meta: TokenMeta | None = None
        self.on_token = on_token
        self.on_state = on_state
        self.started = time.perf_counter()
        self.first_token_s: float | None = None
        self._last_saved = 0.0
        self.kept = 0  # pieces from accepted results; the rest is a host's, unverified

    @property
    def text(self) -> str:
        return "".join(self.pieces)

    async def token(self, piece: str) -> None:
        index = len(self.pieces)
        self.pieces.append(piece)
        meta, self._meta = self._meta, None
        self.metadata.append(meta)
        if self.first_token_s is None:
            self.first_token_s = time.perf_counter() - self.started
        if self.on_token is not None:
            if self.with_metadata:
                await self.on_token(index, piece, meta)
            else:
                await self.on_token(index, piece)
        await bus.publish(TokenEvent(str(self.job_id), index, piece))
        # Persist the text so far at most a few times a second; the end writes it all.
        now = time.monotonic()
        if now - self._last_saved > 0.25:
            self._last_saved = now
            await sync_to_async(job_services.job_record_progress)(
                job_id=self.job_id, text=self.text, tokens=len(self.pieces))

    def meta(self, meta: TokenMeta | None) -> None:
        """What the host reported of the token that comes next."""
        self._meta = meta

    async def rewind(self, to_index: int) -> None:
        del self.pieces[to_index:]
        del self.metadata[to_index:]
        await sync_to_async(job_services.job_rewind)(
            job_id=self.job_id, text=self.text, tokens=len(self.pieces))
        await self.state("REWOUND", {"index": to_index, "text": self.text})

    async def drop_unverified(self) -> None:
        """Take back whatever no accepted result covers."""
        if len(self.pieces) > self.kept:
            await self.rewind(self.kept)

    async def state(self, state: str, detail: dict | None = None) -> None:
        detail = detail or {}
        if self.on_state is not None:
            await self.on_state(state, detail)
        await bus.publish(StateEvent(str(self.job_id), state, detail))


async def _chain_wait(call: Callable[[], Awaitable]):
    """Call the chain, waiting out an outage while the call had sent nothing (a read, or a
    write refused before sending); a write that may have landed is never repeated here."""
    delay = 1.0
    for attempt in range(CHAIN_WAIT_ATTEMPTS):
        try:
            return await call()
        except (ChainError, *_UNREACHABLE) as exc:
            transient = (isinstance(exc, _UNREACHABLE) or exc.code == "RPC_UNAVAILABLE"
                         and exc.tx_hash is None)
            if not transient or attempt == CHAIN_WAIT_ATTEMPTS - 1:
                raise
            log.warning("chain unreachable, waiting %.0f s: %s", delay, exc)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 15.0)
    raise AssertionError("unreachable: the last attempt re-raises")


async def _finished(job_id: uuid.UUID, after: FinishedCallback | None) -> None:
    """Hand the job to whoever runs what follows it; never fails the job itself."""
    if after is None:
        return
    try:
        await after(job_id)
    except Exception:  # the beat's sweep of unprocessed jobs is the fallback
        log.exception("could not queue processing of job %s", job_id)


async def _transition(progress: _Progress, to: str, **fields) -> None:
    await sync_to_async(job_services.job_transition)(job_id=progress.job_id, to=to, **fields)
    await progress.state(to, {k: str(v) for k, v in fields.items()})


async def run_job(
    spec: JobSpec, *, job_id: uuid.UUID | None = None, on_token: TokenCallback | None = None,
    on_state: StateCallback | None = None, cancel: asyncio.Event | None = None,
    chain: Chain | None = None, after: FinishedCallback | None = None,
    with_metadata: bool = False,
) -> JobOutcome:
    """Run a job to the end; raises ClientError with a code when it cannot be done.
    `after(job_id)` runs once the job has ended, however it ended (marketplace.services
    hands it to the processor there). With `with_metadata`, `on_token` also gets what the
    host reported of each token (protocol.TokenMeta, or None): on_token(index, text, meta)."""
    job = await sync_to_async(job_services.job_create)(
        model=spec.model, prompt=spec.prompt, max_tokens=spec.max_tokens,
        temperature=spec.temperature, owner_id=spec.owner_id,
        max_price_per_token_wei=spec.max_price_per_token_wei, job_id=job_id,
    )
    token = job_id_var.set(str(job.id))
    progress = _Progress(job.id, on_token, on_state, with_metadata)
    cancel = cancel or asyncio.Event()
    try:
        chain = chain or await _chain_wait(platform_chain)
        return await _run(spec, job.id, progress, chain, cancel)
    except (ChainError, *_UNREACHABLE) as exc:
        if not isinstance(exc, ChainError):
            exc = ChainError("RPC_UNAVAILABLE", str(exc) or type(exc).__name__,
                             permanent=False)
        error = ClientError(exc.code, exc.message, permanent=True)
        await _fail(progress, error)
        raise error from exc
    except ClientError as exc:
        await _fail(progress, exc)
        raise
    except asyncio.CancelledError:
        await _fail(progress, ClientError("CANCELLED", "the job was cancelled"))
        raise
    finally:
        await _finished(job.id, after)
        job_id_var.reset(token)


async def _fail(progress: _Progress, exc: ClientError) -> None:
    await progress.drop_unverified()
    try:
        await _transition(progress, JobState.FAILED, error_code=exc.code,
                          error_message=exc.message, text=progress.text,
                          tokens=len(progress.pieces))
    except job_services.IllegalTransition:
        pass


async def _run(spec: JobSpec, job_id: uuid.UUID, progress: _Progress, chain: Chain,
               cancel: asyncio.Event) -> JobOutcome:
    excluded: set[str] = set()
    paid = 0
    tx_hashes: list[str] = []
    last_error: ClientError | None = None
    for number in range(1, MAX_HOSTS + 1):
        remaining = spec.max_tokens - len(progress.pieces)
        candidates = await _chain_wait(lambda: discovery.candidates(spec.model, chain=chain))
        ranked = rank(candidates, model=spec.model, max_latency_ms=spec.max_latency_ms,
                      max_price_per_token_wei=spec.max_price_per_token_wei, exclude=excluded)
        if not ranked:
            if last_error is not None:
                raise ClientError(last_error.code, f"no host left to try: {last_error.message}",
                                  permanent=True)
            raise ClientError("NO_HOSTS_AVAILABLE",
                              f"no host on the network serves {spec.model} within the limits")
        host = await _session_host(spec.session, ranked)
        try:
            result = await _attempt(spec, job_id, number, host, remaining, progress, chain,
                                    cancel)
        except ClientError as exc:
            if exc.permanent or cancel.is_set():
                raise
            log.warning("host %s failed: %s", host.address, exc)
            excluded.add(host.address)
            discovery.invalidate(spec.model)  # the next job ranks it on this failure too
            last_error = exc
            await progress.drop_unverified()
            await sync_to_async(job_services.job_transition)(
                job_id=job_id, to=JobState.NEGOTIATING)
            await progress.state("FAILOVER", {"host": host.address, "code": exc.code,
                                              "index": len(progress.pieces)})
            continue
        paid += result.paid_wei
        tx_hashes.extend(result.tx_hashes)
        if result.accepted:
            await _session_remember(spec.session, host.address)
            progress.kept = len(progress.pieces)
            text = progress.text
            tokens = len(progress.pieces)
            await _transition(progress, JobState.COMPLETED, text=text, tokens=tokens,
                              paid_wei=paid, quality=result.quality)
            return JobOutcome(
                job_id=job_id, text=text, tokens=tokens, model=spec.model, host=host.address,
                cost_wei=paid, quality=result.quality, attempts=number,
                ttft_ms=None if progress.first_token_s is None
                else round(progress.first_token_s * 1000, 1),
                tx_hashes=tx_hashes, cancelled=cancel.is_set(), verified=result.verified,
                pieces=list(progress.pieces), metadata=list(progress.metadata),
            )
        excluded.add(host.address)
        discovery.invalidate(spec.model)
        last_error = ClientError("QUALITY_TOO_LOW",
                                 f"the result scored {result.quality:.2f}", permanent=False)
        await sync_to_async(job_services.job_transition)(job_id=job_id, to=JobState.NEGOTIATING)
    raise ClientError(last_error.code if last_error else "NO_HOSTS_AVAILABLE",
                      f"gave up after {MAX_HOSTS} hosts", permanent=True)


SESSION_HOST_TTL_S = 3600


def _session_key(session: str) -> str:
    return "marketplace:session-host:" + hashlib.sha256(session.encode()).hexdigest()


async def _session_host(session: str | None, ranked: list[Candidate]) -> Candidate:
    """The conversation's last host when it is still among the ranked, else the best."""
    if session is None:
        return ranked[0]
    try:
        last = await cache.aget(_session_key(session))
    except Exception as exc:  # the cache is a preference: without it, the best host
        log.warning("no session preference for this prompt: %s", exc)
        return ranked[0]
    return next((c for c in ranked if c.address == last), ranked[0])


async def _session_remember(session: str | None, host: str) -> None:
    if session is None:
        return
    try:
        await cache.aset(_session_key(session), host, SESSION_HOST_TTL_S)
    except Exception as exc:
        log.warning("could not remember the session's host: %s", exc)


class _Track:
    """One attempt's record as it streams: its state changes, its time to first token
    and its speed (marketplace.figures)."""

    def __init__(self, attempt_id: int, progress: _Progress):
        self.attempt_id = attempt_id
        self.progress = progress
        self.started = time.perf_counter()
        self.first_at: float | None = None
        self.last_at: float | None = None

    async def note(self, **fields) -> None:
        await sync_to_async(job_services.attempt_update)(attempt_id=self.attempt_id,
                                                         **fields)

    def start(self) -> None:
        """The stream is opened now: its time to first token counts from here."""
        self.started = time.perf_counter()

    async def on_ready(self) -> None:
        # The host answers the stream only once it holds the claim on chain (per-job) or
        # has checked the channel (channel streams).
        await self.note(state=AttemptState.CLAIMED)
        await _transition(self.progress, JobState.CLAIMED)
        await _transition(self.progress, JobState.PROCESSING)

    async def on_piece(self, piece: str) -> None:
        if self.first_at is None:
            self.first_at = time.perf_counter()
            await self.note(state=AttemptState.STREAMING,
                            ttft_ms=round((self.first_at - self.started) * 1000, 1))
            await _transition(self.progress, JobState.STREAMING)
        self.last_at = time.perf_counter()
        await self.progress.token(piece)

    async def abandon(self, exc: ClientError, start_index: int,
                      cancel: asyncio.Event) -> ClientError:
        """The host's part ended short: recorded as abandoned and its text taken back
        before anyone else goes on. Returns the error to raise (CANCELLED when the job
        was cancelled)."""
        await self.note(state=AttemptState.ABANDONED, error_code=exc.code,
                        tokens=len(self.progress.pieces) - start_index)
        if len(self.progress.pieces) > start_index:
            await self.progress.rewind(start_index)
        if cancel.is_set():
            return ClientError("CANCELLED", "the job was cancelled", permanent=True)
        return exc

    def speed(self, delivered: int) -> float | None:
        """The host's speed once it streams: the tokens after the first, over the time
        from the first to the last. TTFT is measured apart."""
        if self.first_at is None or self.last_at is None or delivered < 2:
            return None
        decoding = self.last_at - self.first_at
        return round((delivered - 1) / decoding, 2) if decoding > 0 else None


@dataclass
class _AttemptResult:
    accepted: bool
    quality: float
    paid_wei: int
    tx_hashes: list[str]
    verified: bool = False


def signer(chain: Chain):
    account = chain.sender.account

    def sign(text: str) -> str:
        signature = account.sign_message(encode_defunct(text=text)).signature.hex()
        return "0x" + signature.removeprefix("0x")

    return sign


async def _attempt(spec: JobSpec, job_id: uuid.UUID, number: int, host: Candidate,
                   remaining: int, progress: _Progress, chain: Chain,
                   cancel: asyncio.Event) -> _AttemptResult:
    start_index = len(progress.pieces)
    prefix = progress.text
    request = GenerationRequest(model=spec.model, prompt=spec.prompt, prefix=prefix,
                                maxTokens=remaining, temperature=spec.temperature)
    price = await negotiation.negotiate(host, request,
                                        max_price_per_token_wei=spec.max_price_per_token_wei)
    lease = await _channel_lease(host, chain, need_wei=remaining * price)
    if lease is not None:
        return await _attempt_channel(spec, job_id, host, request, price, lease, progress,
                                      chain, cancel)
    attempt = await sync_to_async(job_services.attempt_create)(
        job_id=job_id, host_address=host.address, host_url=host.url,
        price_per_token_wei=price, start_index=start_index)

    track = _Track(attempt.pk, progress)
    note = track.note
    deadline = await _chain_wait(chain.block_time) + settings.MARKETPLACE_JOB_DEADLINE_S
    posted = await with_retries(lambda: _chain_wait(lambda: chain.post_job(
        model=spec.model, prompt_hash=request.digest(), max_tokens=remaining,
        max_price_per_token_wei=price, deadline=deadline, host=host.address)))
    await note(chain_job_id=posted.job_id, escrow_wei=posted.escrow_wei,
               tx={"post": posted.tx_hash})
    # Before a byte is streamed: the record holds the job's sampling secret, so the check
    # can be made again whatever happens to this process (the processor does).
    record = await sync_to_async(verifier.verification_open)(
        attempt_id=attempt.pk, host_address=host.address, request=request,
        chain_id=chain.deployment.chain_id, chain_job_id=posted.job_id)
    await _transition(progress, JobState.POSTED)
    tx_hashes = [posted.tx_hash]
    track.start()
    try:
        end = await stream.stream_job(host.url, chain_job_id=posted.job_id,
                                      chain_id=chain.deployment.chain_id,
                                      node_id=host.address, request=request,
                                      signer=signer(chain), on_token=track.on_piece,
                                      on_ready=track.on_ready, cancel=cancel,
                                      compression=settings.MARKETPLACE_STREAM_COMPRESSION,
                                      on_metadata=progress.meta)
    except ClientError as exc:
        # The host died, stalled or sent what the protocol refuses: it is paid nothing;
        # its escrow comes back through the contract's timeout path once the deadline
        # passes (see refunds.py).
        error = await track.abandon(exc, start_index, cancel)
        if error is exc:
            raise
        raise error from exc
    delivered = len(progress.pieces) - start_index
    await note(tokens=delivered, tokens_per_s=track.speed(delivered))

    submitted = await _wait_submitted(chain, posted.job_id)
    attempt_text = progress.text[len(prefix):]
    if submitted is None:
        await note(state=AttemptState.ABANDONED, error_code="NO_RESULT")
        await progress.rewind(start_index)
        raise ClientError("NO_RESULT", f"{host.address} never submitted its result",
                          permanent=False)
    key = job_result_key(request.seed, chain.deployment.chain_id, posted.job_id)
    verdict = verify_result(text=attempt_text, result_hash=submitted.result_hash, key=key,
                            tokens=submitted.tokens_used, max_tokens=remaining,
                            content_type=spec.content_type)
    if submitted.tokens_used != delivered:
        # The host bills for tokens we never received.
        verdict = verify_result(text=attempt_text, result_hash=None, key=key, tokens=0,
                                max_tokens=remaining)
    await note(state=AttemptState.SUBMITTED, tokens_billed=submitted.tokens_used,
               result_hash=submitted.result_hash, result_cid=submitted.cid,
               quality=verdict.score)
    # What no re-score can excuse: a text other than the one committed on chain, or a bill
    # for tokens we never received.
    gates = verdict.checks.get("hash") == 1.0 and submitted.tokens_used == delivered
    checked = await result_check(record.pk, host.address, end,
                                 progress.pieces[start_index:], request,
                                 gates=gates, on_state=progress.state)
    if checked is not None and checked.state == VerificationState.FAILED:
        return await _dispute(chain, posted.job_id, progress, start_index, note, tx_hashes,
                              verdict.score, f"verification failed: {checked.reason}")
    verified = checked is not None and checked.state == VerificationState.PASSED
    # A result the verifier re-scored stands on that; one it did not (not sampled, a model
    # without pinned weights, no verdict in time) on the text checks, as does what a
    # cancelled job received, which is paid on its hash alone.
    if verified or verdict.accepted or (cancel.is_set() and gates):
        settled = await with_retries(lambda: _chain_wait(
            lambda: chain.accept_result(posted.job_id)))
        tx_hashes.append(settled.tx_hash)
        await note(state=AttemptState.ACCEPTED, paid_wei=settled.paid_wei,
                   refund_wei=settled.refund, tx={"accept": settled.tx_hash})
        return _AttemptResult(True, verdict.score, settled.paid_wei, tx_hashes,
                              verified=verified or verdict.accepted)
    return await _dispute(chain, posted.job_id, progress, start_index, note, tx_hashes,
                          verdict.score, f"quality {verdict.score:.2f}: {verdict.checks}")


# Opens and top-ups started for this process's jobs, kept so they are not collected.
_background: set[asyncio.Task] = set()


def _in_background(coro) -> None:
    task = asyncio.ensure_future(coro)
    _background.add(task)
    task.add_done_callback(_background.discard)


async def _quietly(coro) -> None:
    try:
        await coro
    except Exception as exc:  # the beat's channels_maintain tries again
        log.warning("channel work failed: %s", exc)


async def _channel_lease(host: Candidate, chain: Chain, *,
                         need_wei: int) -> channel_services.Lease | None:
    """Headroom on our channel to `host` for this stream, or None: per-job escrow then.
    Only a host whose capabilities name our deployment's channel contract is paid this
    way. A channel missing or short is opened or topped up off the critical path."""
    contract = chain.deployment.channels
    terms = host.channels
    if (not settings.MARKETPLACE_CHANNELS or terms is None or not contract
            or terms.contract.lower() != contract.lower()):
        return None

    def lease() -> channel_services.Lease | None:
        return channel_services.channel_lease(chain_id=chain.deployment.chain_id,
                                              contract=contract, host_address=host.address,
                                              need_wei=need_wei)

    found = await sync_to_async(lease)()
    if found is not None:
        return found
    channel = await sync_to_async(channel_services.live_channel)(
        chain_id=chain.deployment.chain_id, contract=contract, host_address=host.address)
    if channel is not None and channel.state == channel_services.OPEN:
        # Open but short of headroom: topped up for the prompts after this one.
        _in_background(_quietly(channel_services.channel_top_up(chain, channel)))
        return None
    opening = _quietly(channel_services.channel_ensure(chain, host.address))
    if settings.MARKETPLACE_CHANNEL_FIRST_PROMPT != "wait":
        _in_background(opening)
        return None
    await opening
    return await sync_to_async(lease)()


async def _attempt_channel(spec: JobSpec, job_id: uuid.UUID, host: Candidate,
                           request: GenerationRequest, price: int,
                           lease: channel_services.Lease, progress: _Progress, chain: Chain,
                           cancel: asyncio.Event) -> _AttemptResult:
    """One host's part, paid through our channel to it: no job on chain. The stream's id is
    ours (random), the vouchers pay for what arrives; the result is checked as any other,
    and one that fails the check is recorded for the arbitrator, who slashes the host."""
    start_index = len(progress.pieces)
    remaining = request.max_tokens
    attempt = await sync_to_async(job_services.attempt_create)(
        job_id=job_id, host_address=host.address, host_url=host.url,
        price_per_token_wei=price, start_index=start_index)

    track = _Track(attempt.pk, progress)
    note = track.note
    stream_id = secrets.randbelow(2**62) + 1
    chain_id = chain.deployment.chain_id
    await note(channel_id=lease.channel_pk)
    record = await sync_to_async(verifier.verification_open)(
        attempt_id=attempt.pk, host_address=host.address, request=request,
        chain_id=chain_id, chain_job_id=stream_id)
    await _transition(progress, JobState.POSTED)
    private_key = bytes(chain.sender.account.key)
    paid = 0

    async def pay(wei: int) -> dict:
        nonlocal paid
        try:
            voucher = await sync_to_async(channel_services.channel_pay)(
                lease=lease, attempt_id=attempt.pk, add_wei=wei, private_key=private_key)
        except channel_services.ChannelError as exc:
            # The channel began to exit, or ran out: this host's part ends here.
            raise ClientError(exc.code, exc.message, permanent=False) from None
        paid += wei
        return {"type": "voucher", **voucher.to_json()}

    terms = host.channels
    every = max(1, min(terms.vouchers_every, int(terms.credit_limit_wei) // max(price, 1)))
    payment = stream.Payment(channel_id=lease.channel_id, price_per_token_wei=price,
                             every=every, pay=pay)
    track.start()
    try:
        end = await stream.stream_job(host.url, chain_job_id=stream_id, chain_id=chain_id,
                                      node_id=host.address, request=request,
                                      signer=signer(chain), on_token=track.on_piece,
                                      on_ready=track.on_ready, cancel=cancel, encrypt=True,
                                      on_metadata=progress.meta, payment=payment)
    except ClientError as exc:
        # What arrived was paid for by vouchers (the host sent no more than its credit
        # limit beyond them); the text is taken back all the same, at the platform's cost.
        error = await track.abandon(exc, start_index, cancel)
        if error is exc:
            raise
        raise error from exc
    finally:
        await sync_to_async(channel_services.channel_release)(
            lease=lease, unused_wei=max(lease.reserved_wei - paid, 0))
    delivered = len(progress.pieces) - start_index
    attempt_text = progress.text[len(request.prefix):]
    key = job_result_key(request.seed, chain_id, stream_id)
    verdict = verify_result(text=attempt_text, result_hash=end.result_hash, key=key,
                            tokens=end.tokens, max_tokens=remaining,
                            content_type=spec.content_type)
    if end.tokens != delivered:
        verdict = verify_result(text=attempt_text, result_hash=None, key=key, tokens=0,
                                max_tokens=remaining)
    await note(state=AttemptState.SUBMITTED, tokens=delivered, tokens_billed=end.tokens,
               result_hash=end.result_hash or "", result_cid=end.cid or "",
               quality=verdict.score, tokens_per_s=track.speed(delivered))
    gates = verdict.checks.get("hash") == 1.0 and end.tokens == delivered
    checked = await result_check(record.pk, host.address, end,
                                 progress.pieces[start_index:], request,
                                 gates=gates, on_state=progress.state)
    verified = checked is not None and checked.state == VerificationState.PASSED
    failed = checked is not None and checked.state == VerificationState.FAILED
    if not failed and (verified or verdict.accepted or (cancel.is_set() and gates)):
        await note(state=AttemptState.ACCEPTED, paid_wei=paid)
        return _AttemptResult(True, verdict.score, paid, [],
                              verified=verified or verdict.accepted)
    # Paid already, through the vouchers: a result that failed its check is the
    # arbitrator's to slash (marketplace.arbitration); one that merely scored low is not.
    reason = (f"verification failed: {checked.reason}" if failed
              else f"quality {verdict.score:.2f}: {verdict.checks}")
    await note(state=AttemptState.DISPUTED, error_code="VERIFICATION_FAILED" if failed
               else "QUALITY_TOO_LOW")
    log.warning("channel attempt %s on %s not accepted: %s", attempt.pk, host.address, reason)
    await _transition(progress, JobState.DISPUTED, quality=verdict.score)
    await progress.rewind(start_index)
    return _AttemptResult(False, verdict.score, 0, [])


async def _dispute(chain: Chain, chain_job_id: int, progress: _Progress, start_index: int,
                   note, tx_hashes: list[str], quality: float, reason: str) -> _AttemptResult:
    disputed = await with_retries(lambda: _chain_wait(lambda: chain.dispute(
        chain_job_id, reason[:500])))
    tx_hashes.append(disputed)
    await note(state=AttemptState.DISPUTED, tx={"dispute": disputed})
    await _transition(progress, JobState.DISPUTED, quality=quality)
    await progress.rewind(start_index)
    return _AttemptResult(False, quality, 0, tx_hashes)


async def result_check(record_id: int, host_address: str, end: stream.StreamEnd,
                       pieces: list[str], request: GenerationRequest, *, gates: bool,
                       on_state: Callable[[str, dict], Awaitable[None]] | None = None):
    """The verifier's verdict on what the host reported, if this result is one it checks;
    None when it is not (a result that fails the hash or budget gates needs no re-score)."""
    reported = [(m.id, m.logprob, text) if m is not None else (None, None, text)
                for m, text in zip(end.metadata, pieces, strict=False)]
    complete = not end.cancelled and len(pieces) < request.max_tokens
    await sync_to_async(verifier.verification_report)(
        record_id=record_id, tokens=reported, complete=complete)
    if not gates:
        await sync_to_async(verifier.verification_skip)(record_id=record_id,
                                                        reason=verifier.GATES_FAILED)
        return None
    sampled = await sync_to_async(verifier.verification_sampled)(
        host_address=host_address, model=request.model)
    if not sampled:
        await sync_to_async(verifier.verification_skip)(record_id=record_id,
                                                        reason="not sampled")
        return None
    if on_state is not None:
        await on_state("VERIFYING", {"tokens": len(pieces)})
    return await verifier.verify(record_id)


async def _wait_submitted(chain: Chain, chain_job_id: int):
    deadline = time.monotonic() + RESULT_TIMEOUT_S
    from_block = chain.deployment.block
    while time.monotonic() < deadline:
        try:
            found = await chain.submitted_result(chain_job_id, from_block)
        except _UNREACHABLE as exc:
            # The host submits through its own node; ours being down is no reason to give
            # up on it. The wait resumes, for as long as the outage lasts, once reachable.
            log.warning("chain unreachable while waiting for job %s: %s", chain_job_id, exc)
            await _chain_wait(chain.block_time)
            deadline = max(deadline, time.monotonic() + 5.0)
            continue
        if found is not None:
            return found
        await asyncio.sleep(0.05)
    return None
