"""One billed request for text: what /v1/inference, /v1/chat/completions and every batch
item run.

    async def inference_run(*, api_key, model: str, prompt: str, max_tokens: int,
                            temperature: float, reference: str, on_token=None,
                            cancel: asyncio.Event | None = None,
                            endpoint: str = "inference", request_id=None,
                            recorded: asyncio.Event | None = None,
                            timing: Timing | None = None) -> InferenceResult

`api_key` is the accounts.ApiKey of the caller (its user and account loaded, as
accounts.selectors.api_key_authenticate returns it). `reference` names the reservation
(unique per request or batch item; running it again for the same reference and amount
reuses the reservation, never charges twice). `on_token(index, text)` is awaited for each
piece as it arrives; a set `cancel` stops the job and bills only what arrived. `endpoint`
goes into the request record (pass "batch" for batch items); `request_id` is the record's
id (made when not given); `recorded` is set once the money is reserved and the record
exists (a refusal raises instead); `timing` gets the time of the money and of the upstream
or the marketplace (the request's Server-Timing, gateway.timing).

In order:
  1. validate: UNKNOWN_MODEL, PROMPT_TOO_LONG, INVALID_MAX_TOKENS, INVALID_TEMPERATURE,
     INVALID_REQUEST (empty prompt);
  2. the cache (one hour, sha256 of the normalized request): a hit returns cached=True,
     charged nothing;
  3. the worst case: max_tokens at the dearest current host's price
     (marketplace.services.price_quote) × the tier (accounts.tiers.price_for),
     reserved under the account's row lock (gateway.books: one SQL
     statement on PostgreSQL, else accounts.services.balance_reserve);
     INSUFFICIENT_FUNDS carries `required` and `available` (strings of wei),
     NO_HOSTS_AVAILABLE when no host serves the model now;
  4. the job, through the marketplace client (run_job, capped at that price) or, when
     settings.GATEWAY_UPSTREAM_URL is set, through that OpenAI-compatible server at
     settings.GATEWAY_UPSTREAM_PRICE_WEI a token with no protocol fee;
  5. settle from the real token count (accounts.tiers.settlement_for, the protocol fee
     read from the chain), or release everything on failure or zero tokens.
Every error is a GatewayError with a code; after step 3 the reservation is always closed,
even when the calling task is cancelled, so the ledger invariant holds.
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from asgiref.sync import ThreadSensitiveContext, sync_to_async
from django.conf import settings
from django.db import connections

from gateway import cache as result_cache
from gateway.books import ms_since
from gateway.chat import (
    PLAIN,
    ChatOptions,
    StopCutter,
    chat_session,
    cut_at_stop,
    logprob_entry,
)
from gateway.errors import GatewayError
from gateway.models.requests import RequestStatus
from gateway.till import ledger_books
from gateway.timing import MONEY, UPSTREAM, Timing, timed
from marketplace.client.errors import ClientError

log = logging.getLogger(__name__)

TokenCallback = Callable[[int, str], Awaitable[None]]


@dataclass
class InferenceResult:
    request_id: uuid.UUID
    job_id: str  # the marketplace job, or the upstream's completion id
    text: str
    tokens: int
    prompt_tokens: int
    model: str
    host: str
    cost_wei: int
    cached: bool
    finish_reason: str  # stop, length or cancelled (an upstream's chat: its own)
    ttft_ms: float | None = None
    # A chat's answer beyond its text: an upstream's whole message (tool calls, ...) and
    # OpenAI's `logprobs` object (from the upstream, or from the hosts' token metadata).
    message: dict | None = None
    logprobs: dict | None = None


# ---- Validation ------------------------------------------------------------------------


def inference_validate(*, model: str, prompt: str, max_tokens: int,
                       temperature: float, max_price_per_token: object = None) -> int | None:
    """Raise GatewayError with the code of the first thing wrong with the request."""
    if model not in settings.GATEWAY_MODELS:
        raise GatewayError("UNKNOWN_MODEL", f"no model {model!r} on this network; one of: "
                           f"{', '.join(settings.GATEWAY_MODELS)}", model=model)
    if not prompt.strip():
        raise GatewayError("INVALID_REQUEST", "the prompt is empty")
    limit = settings.GATEWAY_MAX_PROMPT_CHARS
    if len(prompt) > limit:
        raise GatewayError("PROMPT_TOO_LONG",
                           f"the prompt has {len(prompt)} characters; at most {limit}",
                           max_prompt_chars=limit)
    if isinstance(max_tokens, bool) or not 1 <= max_tokens <= settings.GATEWAY_MAX_TOKENS:
        raise GatewayError("INVALID_MAX_TOKENS", f"max_tokens must be 1 to "
                           f"{settings.GATEWAY_MAX_TOKENS}, got {max_tokens}")
    if not 0.0 <= temperature <= 2.0:
        raise GatewayError("INVALID_TEMPERATURE",
                           f"temperature must be between 0 and 2, got {temperature}")
    return max_price_ceiling(max_price_per_token)


def max_price_ceiling(value: object) -> int | None:
    """The user's price ceiling in wei (None: none given); a 400 INVALID_MAX_PRICE when
    malformed."""
    from marketplace.services import price_ceiling_parse

    try:
        return price_ceiling_parse(value)
    except ValueError as exc:
        raise GatewayError("INVALID_MAX_PRICE", str(exc)) from None


# ---- Prices --------------------------------------------------------------------------
# The hosts' prices, shared by the requests of the next few seconds: a burst of requests
# asks the chain and the hosts once, not once each. A price that rose since cannot cost
# more than was reserved: the job is posted with the quoted price as its cap.
QUOTE_TTL_S = 5.0
_quotes: dict[tuple, tuple[float, object]] = {}
_quote_locks: dict[tuple, asyncio.Lock] = {}


async def _quote(model: str):
    from marketplace.services import price_quote

    where = (settings.CHAIN_RPC, str(settings.CHAIN_DEPLOYMENTS_DIR), model)
    found = _quotes.get(where)
    if found is not None and time.monotonic() - found[0] < QUOTE_TTL_S:
        return found[1]
    lock = _quote_locks.setdefault((id(asyncio.get_running_loop()), *where), asyncio.Lock())
    async with lock:
        found = _quotes.get(where)
        if found is not None and time.monotonic() - found[0] < QUOTE_TTL_S:
            return found[1]
        quote = await price_quote(model)
        if quote is not None:  # no host now: ask again next time
            _quotes[where] = (time.monotonic(), quote)
        return quote


def quotes_forget() -> None:
    """Forget the shared prices (tests that change the hosts)."""
    _quotes.clear()
    _quote_locks.clear()


# ---- The run ---------------------------------------------------------------------------


@dataclass
class _Ran:
    job_id: str
    text: str
    tokens: int
    prompt_tokens: int
    host: str
    price_wei: int  # per token, what the tokens are billed at
    fee_bps: int
    finish_reason: str
    ttft_ms: float | None
    # Cached only when true: the marketplace's verification passed (the operator's own
    # upstream server is trusted as it is).
    verified: bool = True
    message: dict | None = None
    logprobs: dict | None = None


async def inference_run(*, api_key, model: str, prompt: str, max_tokens: int,
                        temperature: float, reference: str,
                        on_token: TokenCallback | None = None,
                        cancel: asyncio.Event | None = None, endpoint: str = "inference",
                        request_id: uuid.UUID | None = None,
                        recorded: asyncio.Event | None = None,
                        max_price_per_token: int | str | None = None,
                        messages: list[dict] | None = None,
                        options: ChatOptions = PLAIN,
                        timing: Timing | None = None) -> InferenceResult:
    """Run and bill one request (see the module's docstring); raises GatewayError.
    A chat passes its `messages` (an upstream gets them as they are; on the marketplace a
    multi-turn chat's are its session, gateway.chat.chat_session) and its `options`
    (gateway.chat.chat_options); the cache serves and keeps only requests without options."""
    started = time.perf_counter()
    request_id = request_id or uuid.uuid4()
    stream = on_token is not None
    base = {"api_key": api_key, "request_id": request_id, "endpoint": endpoint,
            "model": model, "max_tokens": max_tokens, "started": started, "stream": stream}
    ceiling = inference_validate(model=model, prompt=prompt, max_tokens=max_tokens,
                                 temperature=temperature, max_price_per_token=max_price_per_token)
    # Per account (marketplace.results): another account's answer is never served.
    upstream = bool(settings.GATEWAY_UPSTREAM_URL)
    key = None
    if options.plain:
        # An upstream's chat template makes a chat's answer differ from a completion's.
        keyed = json.dumps(messages) if upstream and messages is not None else prompt
        key = result_cache.cache_key(owner_id=api_key.user_id, model=model, prompt=keyed,
                                     max_tokens=max_tokens, temperature=temperature)
    books = ledger_books()
    hit = await result_cache.cached_result(key) if key is not None else None
    if hit is not None:
        await books.record_hit(hit=hit, **base)
        if on_token is not None:
            await on_token(0, hit["text"])
        return InferenceResult(request_id=request_id, job_id="", text=hit["text"],
                               tokens=hit["tokens"], prompt_tokens=0, model=model,
                               host=hit["host"], cost_wei=0, cached=True,
                               finish_reason=hit["finish_reason"])
    if upstream:
        price_wei = settings.GATEWAY_UPSTREAM_PRICE_WEI
        cheapest = price_wei
        if ceiling is not None and price_wei > ceiling:
            price_wei = None
    else:
        quote = await _quote(model)
        if quote is None:
            error = GatewayError("NO_HOSTS_AVAILABLE",
                                 f"no host serves {model} right now; try again later")
            await books.record_failure(error=error, **base)
            raise error
        # The dearest host we would use, never an outlier's price (docs/trust.md, "Prices").
        price_wei = quote.reserve_price_wei(ceiling)
        cheapest = quote.min_price_wei
    if price_wei is None:
        error = GatewayError(
            "NO_HOSTS_WITHIN_PRICE", f"no host serves {model} at or below your "
            f"max_price_per_token of {ceiling} wei; the cheapest asks {cheapest} wei",
            cheapest_price_per_token=str(cheapest))
        await books.record_failure(error=error, **base)
        raise error
    held = await timed(timing, MONEY,
                       books.open(price_wei=price_wei, reference=reference, **base))
    if recorded is not None:
        recorded.set()  # on a refusal, the task's end is the signal

    cancel = cancel or asyncio.Event()
    outcome: _Ran | None = None
    failure: GatewayError | None = None
    try:
        if upstream:
            outcome = await timed(timing, UPSTREAM, _run_upstream(
                model, prompt, max_tokens, temperature, price_wei, on_token, cancel,
                messages, options))
        else:
            session = chat_session(owner_id=api_key.user_id, messages=messages) \
                if messages is not None else None
            outcome = await timed(timing, UPSTREAM, _run_marketplace(
                api_key, model, prompt, max_tokens, temperature, price_wei, on_token, cancel,
                options, session))
    except GatewayError as exc:
        failure = exc
    except ClientError as exc:
        failure = GatewayError(exc.code, exc.message)
    except asyncio.CancelledError:
        failure = GatewayError("CANCELLED", "the request was cancelled")
        raise
    except Exception as exc:
        log.exception("inference %s crashed", request_id)
        failure = GatewayError("INTERNAL", f"the job failed: {exc}"[:300])
    finally:
        # Shielded: the reservation is closed even when the caller's task is cancelled.
        if outcome is None:
            status = RequestStatus.CANCELLED if failure and failure.code == "CANCELLED" \
                else RequestStatus.FAILED
            fields = {"status": status, "error_code": failure.code if failure else "",
                      "error_message": failure.message[:500] if failure else "",
                      "duration_ms": ms_since(started)}
            if options.user:
                fields["end_user"] = options.user
            closing = books.close(held, request_id=request_id, price_wei=price_wei,
                                  tokens=0, fee_bps=0, fields=fields)
            await asyncio.shield(asyncio.ensure_future(timed(timing, MONEY, closing)))
    if failure is not None:
        raise failure
    tokens = min(outcome.tokens, max_tokens)
    cancelled = outcome.finish_reason == "cancelled"
    status = RequestStatus.CANCELLED if cancelled else RequestStatus.DONE
    fields = {"status": status, "text": outcome.text, "host": outcome.host,
              "job_id": outcome.job_id, "prompt_tokens": outcome.prompt_tokens,
              "finish_reason": outcome.finish_reason[:20], "ttft_ms": outcome.ttft_ms,
              "duration_ms": ms_since(started)}
    if options.user:
        fields["end_user"] = options.user
    charged = await asyncio.shield(asyncio.ensure_future(timed(timing, MONEY, books.close(
        held, request_id=request_id, price_wei=outcome.price_wei, tokens=tokens,
        fee_bps=outcome.fee_bps, fields=fields))))
    if key is not None and tokens and not cancelled and outcome.verified:
        await result_cache.cache_result(key, text=outcome.text, tokens=tokens,
                                        host=outcome.host,
                                        finish_reason=outcome.finish_reason)
    return InferenceResult(request_id=request_id, job_id=outcome.job_id, text=outcome.text,
                           tokens=tokens, prompt_tokens=outcome.prompt_tokens, model=model,
                           host=outcome.host, cost_wei=charged, cached=False,
                           finish_reason=outcome.finish_reason, ttft_ms=outcome.ttft_ms,
                           message=outcome.message, logprobs=outcome.logprobs)


async def _run_upstream(model, prompt, max_tokens, temperature, price_wei, on_token,
                        cancel, messages, options: ChatOptions) -> _Ran:
    from gateway.upstream import upstream_chat, upstream_complete, upstream_shown

    on_piece = None
    if on_token is not None:
        index = 0

        async def on_piece(piece: str, extra: dict | None) -> None:
            nonlocal index
            if extra is None:
                await on_token(index, piece)
            else:
                await on_token(index, piece, extra)
            index += 1

    # A request nobody can cancel is sent whole: one answer, no stream to parse.
    if messages is None:
        result = await upstream_complete(model=model, prompt=prompt, max_tokens=max_tokens,
                                         temperature=temperature, on_piece=on_piece,
                                         cancel=cancel if on_token is not None else None)
    else:
        result = await upstream_chat(model=model, messages=messages, max_tokens=max_tokens,
                                     temperature=temperature, passed=options.passed,
                                     on_piece=on_piece,
                                     cancel=cancel if on_token is not None else None)
    return _Ran(job_id=result.id, text=result.text, tokens=result.tokens,
                prompt_tokens=result.prompt_tokens, host=upstream_shown(),
                price_wei=price_wei, fee_bps=0, finish_reason=result.finish_reason,
                ttft_ms=round(result.ttft_s * 1000, 1) if result.ttft_s is not None else None,
                message=result.message, logprobs=result.logprobs)


async def _run_marketplace(api_key, model, prompt, max_tokens, temperature, price_cap_wei,
                           on_token, cancel, options: ChatOptions,
                           session: str | None = None) -> _Ran:
    from marketplace.services import JobSpec, run_job
    from marketplace.wallet import platform_chain

    # The prompt holds the whole conversation (gateway.chat.messages_to_prompt): the
    # session only prefers the host that answered its last turn, any other can take over.
    spec = JobSpec(model=model, prompt=prompt, max_tokens=max_tokens, temperature=temperature,
                   max_price_per_token_wei=price_cap_wei, owner_id=api_key.user_id,
                   session=session)
    # Stop sequences: the text is cut before the first one and the job cancelled there;
    # the tokens the host sent until it stopped are billed, as for any cancelled job.
    cutter = StopCutter(options.stop) if options.stop else None
    relay = on_token
    if cutter is not None or options.logprobs:

        async def relay(index: int, piece: str, meta=None) -> None:
            shown = piece
            if cutter is not None:
                was_stopped = cutter.stopped
                shown = cutter.feed(piece)
                if cutter.stopped:
                    cancel.set()
                    if was_stopped:
                        return  # after the stop: billed, never shown
            if on_token is None:
                return
            if options.logprobs:
                logprob = meta.logprob if meta is not None else None
                await on_token(index, shown, {"logprobs": {
                    "content": [logprob_entry(piece, logprob)]}})
            elif shown:
                await on_token(index, shown)

    outcome = await run_job(spec, on_token=relay, cancel=cancel,
                            with_metadata=options.logprobs)
    text, stopped = outcome.text, False
    if cutter is not None:
        text, stopped = cut_at_stop(text, options.stop)
        rest = cutter.flush()
        if rest and on_token is not None:
            await on_token(outcome.tokens, rest)
    logprobs = None
    if options.logprobs:
        logprobs = {"content": _token_logprobs(outcome.pieces, outcome.metadata,
                                                len(text) if stopped else None)}
    # What the chain paid per token (never above the cap the job was posted with).
    price = min(outcome.cost_wei // outcome.tokens, price_cap_wei) if outcome.tokens else 0
    fee_bps = await (await platform_chain()).fee_bps() if outcome.tokens else 0
    finish = "stop" if stopped else "cancelled" if outcome.cancelled else (
        "length" if outcome.tokens >= max_tokens else "stop")
    return _Ran(job_id=str(outcome.job_id), text=text, tokens=outcome.tokens,
                prompt_tokens=0, host=outcome.host, price_wei=price, fee_bps=fee_bps,
                finish_reason=finish, ttft_ms=outcome.ttft_ms, verified=outcome.verified,
                logprobs=logprobs)


def _token_logprobs(pieces: list[str], metadata: list, cut: int | None) -> list[dict]:
    """OpenAI's `logprobs.content`: every token, or with a stop sequence at `cut`
    characters, the tokens that begin before it."""
    entries, at = [], 0
    for piece, meta in zip(pieces, metadata, strict=False):
        if cut is not None and at >= cut:
            break
        entries.append(logprob_entry(piece, meta.logprob if meta is not None else None))
        at += len(piece)
    return entries


# ---- Running detached from the request -------------------------------------------------

_running: set[asyncio.Task] = set()


def inference_start(**kwargs) -> asyncio.Task:
    """inference_run as a task of this process that outlives the HTTP request that
    started it (a 202, a client that hung up). Its own context, so it does not inherit the
    request's thread executor, which ends with the response; the marketplace client's
    own database calls get a thread of the task's own, closed at the end."""
    task = asyncio.get_running_loop().create_task(_detached(kwargs),
                                                  context=contextvars.Context())
    _running.add(task)  # the loop holds tasks only weakly
    task.add_done_callback(_running.discard)
    return task


async def _detached(kwargs: dict) -> InferenceResult:
    if settings.GATEWAY_UPSTREAM_URL:
        return await inference_run(**kwargs)
    async with ThreadSensitiveContext():
        try:
            return await inference_run(**kwargs)
        finally:
            await sync_to_async(connections.close_all)()


__all__ = ["GatewayError", "InferenceResult", "inference_run", "inference_start",
           "inference_validate"]
