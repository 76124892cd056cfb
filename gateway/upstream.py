"""Direct upstream mode: an OpenAI-compatible server (settings.GATEWAY_UPSTREAM_URL)
answers instead of the marketplace — an operator's private host, or the benchmark's.
/v1/inference goes to its /v1/completions, chat to its /v1/chat/completions.

One aiohttp session per event loop, kept open, so requests reuse their connections
(aiohttp's client parses HTTP in C: at the gateway's rates the client's own cost shows).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import aiohttp
from django.conf import settings

from gateway.errors import GatewayError
from observability.errors import urls_redacted

_sessions: dict[int, aiohttp.ClientSession] = {}
_FAILURES = (aiohttp.ClientError, asyncio.TimeoutError, OSError)


@dataclass
class UpstreamResult:
    id: str
    text: str
    tokens: int
    prompt_tokens: int
    finish_reason: str
    cancelled: bool = False
    ttft_s: float | None = None
    message: dict | None = None  # a chat answer's whole message (tool calls, ...)
    logprobs: dict | None = None


def _session() -> aiohttp.ClientSession:
    loop = asyncio.get_running_loop()
    session = _sessions.get(id(loop))
    if session is None or session.closed:
        session = _sessions[id(loop)] = aiohttp.ClientSession(
            base_url=settings.GATEWAY_UPSTREAM_URL.rstrip("/") + "/",
            timeout=aiohttp.ClientTimeout(total=settings.GATEWAY_UPSTREAM_TIMEOUT_S,
                                          connect=5.0),
            connector=aiohttp.TCPConnector(limit=200, limit_per_host=200),
            cookie_jar=aiohttp.DummyCookieJar())
    return session


async def upstream_close() -> None:
    """Close this loop's session (tests, shutdown)."""
    session = _sessions.pop(id(asyncio.get_running_loop()), None)
    if session is not None:
        await session.close()


def _failed(exc_or_status) -> GatewayError:
    # Kept for the request's record and the log; answers say UPSTREAM_ERROR's fixed message.
    return GatewayError("UPSTREAM_ERROR",
                        urls_redacted(f"the upstream server failed: {exc_or_status}"))


def upstream_shown() -> str:
    """The upstream as answers and records name it (the `host`): scheme, host and port, for
    its URL may carry an API key."""
    return urls_redacted(settings.GATEWAY_UPSTREAM_URL or "")


PieceCallback = Callable[[str, dict | None], Awaitable[None]]


async def upstream_complete(*, model: str, prompt: str, max_tokens: int, temperature: float,
                            on_piece: PieceCallback | None = None,
                            cancel: asyncio.Event | None = None) -> UpstreamResult:
    """POST {GATEWAY_UPSTREAM_URL}/v1/completions; streamed when `on_piece` wants each
    piece. A set `cancel` stops the stream and returns what arrived, marked cancelled."""
    body = {"model": model, "prompt": prompt, "max_tokens": max_tokens,
            "temperature": temperature}
    return await _call("v1/completions", body, on_piece, cancel)


async def upstream_chat(*, model: str, messages: list[dict], max_tokens: int,
                        temperature: float, passed: dict,
                        on_piece: PieceCallback | None = None,
                        cancel: asyncio.Event | None = None) -> UpstreamResult:
    """POST {GATEWAY_UPSTREAM_URL}/v1/chat/completions with the messages as they came (the
    upstream applies its own chat template) and the OpenAI fields in `passed`. The answer's
    message (tool calls and all) and logprobs are kept; `on_piece(text, extra)` gets each
    streamed delta's text and what else it carries (tool_calls, logprobs), or None."""
    body = {"model": model, "messages": messages, "max_tokens": max_tokens,
            "temperature": temperature, **passed}
    return await _call("v1/chat/completions", body, on_piece, cancel)


async def _call(path: str, body: dict, on_piece: PieceCallback | None,
                cancel: asyncio.Event | None) -> UpstreamResult:
    if on_piece is None and cancel is None:
        return await _whole(path, body)
    result = UpstreamResult(id="", text="", tokens=0, prompt_tokens=0, finish_reason="")
    pieces: list[str] = []
    reading = asyncio.ensure_future(_stream(path, body, result, pieces, on_piece))
    if cancel is None:
        await reading
    else:
        waiting = asyncio.ensure_future(cancel.wait())
        try:
            await asyncio.wait({reading, waiting}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiting.cancel()
        if not reading.done():
            reading.cancel()
            try:
                await reading
            except asyncio.CancelledError:
                pass
            result.cancelled = True
        else:
            reading.result()  # raises the reader's error
    result.text = "".join(pieces)
    if result.cancelled or not result.tokens:
        # Cut short (or no usage reported): each streamed piece is one token.
        result.tokens = len(pieces)
    if result.cancelled:
        result.finish_reason = "cancelled"
    return result


async def _whole(path: str, body: dict) -> UpstreamResult:
    try:
        async with _session().post(path, json=body) as response:
            if response.status != 200:
                raise _failed(f"HTTP {response.status}")
            raw = await response.read()
    except _FAILURES as exc:
        raise _failed(str(exc) or type(exc).__name__) from exc
    try:
        data = json.loads(raw)
        choice = data["choices"][0]
        usage = data.get("usage") or {}
        message = choice.get("message")
        if message is not None:
            if not isinstance(message, dict):
                raise TypeError("message is not an object")
            text = message.get("content") or ""
        else:
            text = choice.get("text") or ""
        return UpstreamResult(id=str(data.get("id", "")), text=text,
                              tokens=int(usage.get("completion_tokens") or 0),
                              prompt_tokens=int(usage.get("prompt_tokens") or 0),
                              finish_reason=choice.get("finish_reason") or "stop",
                              message=message, logprobs=choice.get("logprobs"))
    except (ValueError, KeyError, IndexError, TypeError, AttributeError) as exc:
        raise _failed(f"malformed answer ({exc})") from exc


async def _stream(path: str, body: dict, result: UpstreamResult, pieces: list[str],
                  on_piece: PieceCallback | None) -> None:
    body = {**body, "stream": True, "stream_options": {"include_usage": True}}
    loop = asyncio.get_running_loop()
    started = loop.time()
    try:
        async with _session().post(path, json=body) as response:
            if response.status != 200:
                raise _failed(f"HTTP {response.status}")
            async for raw in response.content:
                line = raw.decode().strip()
                if not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                if data == "[DONE]":
                    break
                chunk = json.loads(data)
                result.id = result.id or str(chunk.get("id", ""))
                usage = chunk.get("usage")
                if usage:
                    result.tokens = int(usage.get("completion_tokens") or 0)
                    result.prompt_tokens = int(usage.get("prompt_tokens") or 0)
                for choice in chunk.get("choices") or []:
                    delta = choice.get("delta")
                    extra = None
                    if delta is not None:  # chat: the delta's text and what else it has
                        piece = delta.get("content") or ""
                        extra = {name: value for name, value in delta.items()
                                 if name not in ("role", "content") and value is not None}
                        if choice.get("logprobs"):
                            extra["logprobs"] = choice["logprobs"]
                        extra = extra or None
                    else:
                        piece = choice.get("text") or ""
                    if piece or extra:
                        if result.ttft_s is None:
                            result.ttft_s = loop.time() - started
                        if piece:
                            pieces.append(piece)
                        if on_piece is not None:
                            await on_piece(piece, extra)
                    if choice.get("finish_reason"):
                        result.finish_reason = choice["finish_reason"]
    except _FAILURES as exc:
        raise _failed(str(exc) or type(exc).__name__) from exc
    except (ValueError, TypeError, AttributeError) as exc:
        raise _failed(f"malformed stream ({exc})") from exc
    result.finish_reason = result.finish_reason or "stop"
