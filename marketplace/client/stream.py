"""Streaming a job's tokens from a host over WebSocket, with resume.

A dropped or stalled connection is resumed from the last token received (checkpoint),
so the reader gets every token once and in order. When the host cannot be resumed, or
sends what the protocol does not allow (bounded.py: a frame too large, a compressed
frame that inflates too far, a malformed message, a token out of order or too long, more
text than the job may have), the stream fails with a ClientError and the caller fails
over to another host.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import aiohttp
from django.conf import settings

from marketplace.client import pool
from marketplace.client.bounded import (
    Limits,
    control_data,
    fault,
    host_message,
    inflate,
)
from marketplace.client.errors import ClientError, HostFault, host_code
from marketplace.client.hosturl import host_url_check
from marketplace.protocol import (
    PROTOCOL_VERSION,
    Challenge,
    Control,
    EndData,
    ErrorData,
    GenerationRequest,
    TokenMessage,
    TokenMeta,
    challenge_message,
)

log = logging.getLogger(__name__)

__all__ = ["GenerationRequest", "StreamEnd", "stream_job"]

MAX_RESUMES = 2
ACK_EVERY = 16
# WebSocket close codes aiohttp reports for frames that break the WebSocket protocol.
_BAD_FRAMES = {aiohttp.WSCloseCode.PROTOCOL_ERROR, aiohttp.WSCloseCode.INVALID_TEXT,
               aiohttp.WSCloseCode.UNSUPPORTED_DATA}


@dataclass
class StreamEnd:
    text: str
    tokens: int
    result_hash: str | None
    cid: str | None
    cancelled: bool
    # Each token's id and log-probability as the host reported them (None where it did
    # not), in the order of the tokens: what a verifier re-scores.
    metadata: list[TokenMeta | None] = field(default_factory=list)


Signer = Callable[[str], str]


@dataclass
class _Received:
    """The tokens of this stream, across its resumes, and the characters of the job's text
    they bring it to (the request's prefix, from earlier hosts, counts)."""

    pieces: list[str]
    chars: int
    metadata: list[TokenMeta | None] = field(default_factory=list)


def ws_url(http_url: str) -> str:
    base = http_url.rstrip("/")
    if base.startswith("https://"):
        return "wss://" + base[len("https://"):] + "/v1/stream"
    return "ws://" + base.removeprefix("http://") + "/v1/stream"


async def stream_job(
    url: str, *, chain_job_id: int, node_id: str, request: GenerationRequest, signer: Signer,
    on_token: Callable[[str], Awaitable[None]],
    on_ready: Callable[[], Awaitable[None]] | None = None,
    cancel: asyncio.Event | None = None, stall_timeout_s: float | None = None,
    max_resumes: int = MAX_RESUMES, compression: str | None = None,
    limits: Limits | None = None,
    on_metadata: Callable[[TokenMeta | None], None] | None = None,
) -> StreamEnd:
    """Every token of the job, in order, through `on_token` (and its metadata, just
    before, through `on_metadata`); ClientError when the host fails. `limits` default to
    the settings' (MARKETPLACE_MAX_*), `stall_timeout_s` to MARKETPLACE_STALL_TIMEOUT_S."""
    limits = limits or Limits.from_settings()
    if stall_timeout_s is None:
        stall_timeout_s = settings.MARKETPLACE_STALL_TIMEOUT_S
    base = await host_url_check(url)  # nothing is sent to a refused URL
    received = _Received(pieces=[], chars=len(request.prefix))
    resumes = 0
    ready = {"sent": False}

    async def ready_once() -> None:
        if not ready["sent"] and on_ready is not None:
            ready["sent"] = True
            await on_ready()

    while True:
        pieces = received.pieces
        checkpoint = len(pieces) - 1 if pieces else None
        try:
            end = await _one_connection(
                base, chain_job_id=chain_job_id, node_id=node_id, request=request,
                signer=signer, received=received, on_token=on_token, checkpoint=checkpoint,
                cancel=cancel, stall_timeout_s=stall_timeout_s, compression=compression,
                on_ready=ready_once, limits=limits, on_metadata=on_metadata)
            return end
        except (aiohttp.ClientError, TimeoutError, ConnectionError) as exc:
            if resumes >= max_resumes:
                raise ClientError("HOST_UNAVAILABLE",
                                  f"lost the stream at token {len(pieces)}: {exc}",
                                  permanent=False) from None
            resumes += 1
            log.info("stream of job %s dropped at %s tokens; resuming (%s)", chain_job_id,
                     len(pieces), exc)
            await asyncio.sleep(0.2 * resumes)


async def _one_connection(url, *, chain_job_id, node_id, request, signer, received, on_token,
                          checkpoint, cancel, stall_timeout_s, compression, on_ready, limits,
                          on_metadata=None):
    session = pool.session()
    pieces = received.pieces
    # compress=0: no permessage-deflate, so aiohttp inflates nothing; max_msg_size: a
    # longer frame is refused from its header, before any of it is read.
    async with session.ws_connect(ws_url(url), heartbeat=20, compress=0,
                                  max_msg_size=limits.message_bytes) as ws:
        # Sent before the stream's terms, so never compressed.
        challenge = await _receive(ws, stall_timeout_s, compressed=False, limits=limits)
        if isinstance(challenge, Control) and challenge.type == "error":
            raise _refusal(challenge)  # refused before the handshake (BUSY)
        if not isinstance(challenge, Challenge):
            raise fault(HostFault.MALFORMED, "the host did not send a challenge")
        signature = signer(challenge_message(challenge.nonce, chain_job_id, node_id))
        init = {"type": "init", "version": PROTOCOL_VERSION, "jobId": chain_job_id,
                "nodeId": node_id, "signature": signature, "checkpoint": checkpoint,
                "compression": compression,
                "request": request.model_dump(by_alias=True) if checkpoint is None else None}
        await ws.send_json(init)
        compressed = compression == "gzip"
        cancel_sent = False
        paused = False
        while True:
            if cancel is not None and cancel.is_set() and not cancel_sent:
                await ws.send_json({"type": "cancel"})
                cancel_sent = True
            # While paused by the host's flow control, silence is expected, not a stall.
            message = await _receive(ws, None if paused else stall_timeout_s,
                                     compressed=compressed, limits=limits)
            if isinstance(message, TokenMessage):
                if message.index < len(pieces):
                    continue  # already have it (a resume overlapped)
                _check_token(message, received, request, limits)
                pieces.append(message.content)
                received.metadata.append(message.metadata)
                received.chars += len(message.content)
                if on_metadata is not None:
                    on_metadata(message.metadata)
                await on_token(message.content)
                if message.index % ACK_EVERY == 0:
                    await ws.send_json({"type": "ack", "index": message.index})
            elif isinstance(message, Challenge):
                raise fault(HostFault.MALFORMED, "a second challenge in one stream")
            elif message.type in ("checkpoint", "resume"):
                paused = False
                await on_ready()
            elif message.type == "pause":
                paused = True
                await ws.send_json({"type": "ack", "index": len(pieces) - 1})
            elif message.type == "end":
                data = control_data(message, EndData)
                return StreamEnd(text="".join(pieces), tokens=data.tokens,
                                 result_hash=data.result_hash, cid=data.cid,
                                 cancelled=data.cancelled,
                                 metadata=list(received.metadata))
            else:
                raise _refusal(message)


def _check_token(message: TokenMessage, received: _Received, request: GenerationRequest,
                 limits: Limits) -> None:
    index, content = message.index, message.content
    if index != len(received.pieces):
        raise fault(HostFault.MALFORMED, f"token {index} arrived after "
                    f"{len(received.pieces)} tokens: a gap")
    if index >= request.max_tokens:
        raise fault(HostFault.TOO_MANY_TOKENS, f"token {index} is past the "
                    f"{request.max_tokens} tokens the job asked for")
    if len(content) > limits.token_chars:
        raise fault(HostFault.TOKEN_TOO_LARGE, f"token {index} has {len(content)} "
                    f"characters; a token may have {limits.token_chars}")
    if received.chars + len(content) > limits.job_chars:
        raise fault(HostFault.TEXT_TOO_LARGE, f"token {index} takes the job's text past "
                    f"{limits.job_chars} characters")
    if "\x00" in content:  # no text column stores one, and no model writes one
        raise fault(HostFault.MALFORMED, f"token {index} holds a NUL character")


def _refusal(message: Control) -> ClientError:
    data = control_data(message, ErrorData)
    # Whatever a host says, another host may serve the job: a host's word never ends it
    # (a hostile one would answer INSUFFICIENT_FUNDS to every job it is offered).
    return ClientError(host_code(data.code), data.message[:500], permanent=False)


async def _receive(ws, limit_s: float | None, *, compressed: bool, limits: Limits):
    try:
        async with asyncio.timeout(limit_s):
            msg = await ws.receive()
    except TimeoutError:
        raise TimeoutError(f"the host sent nothing for {limit_s:.0f} s") from None
    if msg.type == aiohttp.WSMsgType.TEXT:
        return host_message(msg.data)
    if msg.type == aiohttp.WSMsgType.BINARY:
        if not compressed:
            raise fault(HostFault.MALFORMED, "a binary frame on a stream that asked for no "
                        "compression")
        return host_message(inflate(msg.data, limits))
    if msg.type == aiohttp.WSMsgType.ERROR and isinstance(msg.data, aiohttp.WebSocketError):
        if msg.data.code == aiohttp.WSCloseCode.MESSAGE_TOO_BIG:
            raise fault(HostFault.TOO_LARGE, f"a frame over the {limits.message_bytes}-byte "
                        "bound")
        if msg.data.code in _BAD_FRAMES:
            raise fault(HostFault.MALFORMED, f"a frame breaks the WebSocket protocol: "
                        f"{msg.data}")
    raise ConnectionError(f"the host closed the stream ({msg.type.name})")
