"""Streaming a job's tokens from a host over WebSocket, with resume.

The stream is encrypted end to end (protocol 3, marketplace.e2e, docs/encryption.md)
unless MARKETPLACE_STREAM_ENCRYPTION is off: nothing is sent before the host's key is
found to be its registered address's, the request goes sealed, and every frame after is
sealed both ways. A frame that does not open, comes again or out of order is the host's
fault like any other.

A channel stream (`payment`, docs/sessions.md) names no job on chain: it pays as it
receives, a voucher after every `every` tokens received, one when the host pauses for
payment and one after the end. Each voucher is made durable by `payment.pay` (our
ledger) before it is sent.

A dropped or stalled connection is resumed from the last token received (checkpoint),
on a new connection with its own keys, so the reader gets every token once and in order.
When the host cannot be resumed, or sends what the protocol does not allow (bounded.py:
a frame too large, a compressed frame that inflates too far, a malformed message, a token
out of order or too long, more text than the job may have), the stream fails with a
ClientError and the caller fails over to another host.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import aiohttp
from django.conf import settings

from marketplace import e2e
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
    PLAINTEXT_VERSION,
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

__all__ = ["GenerationRequest", "Payment", "StreamEnd", "stream_job"]

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
class Payment:
    """How a channel stream pays its host. `pay(wei)` adds `wei` to the channel's
    cumulative amount, keeps the voucher for it durably and returns the voucher message
    (protocol.VoucherMessage) to send."""

    channel_id: int
    price_per_token_wei: int
    every: int
    pay: Callable[[int], Awaitable[dict]]


@dataclass
class _Received:
    """The tokens of this stream, across its resumes, and the characters of the job's text
    they bring it to (the request's prefix, from earlier hosts, counts)."""

    pieces: list[str]
    chars: int
    metadata: list[TokenMeta | None] = field(default_factory=list)
    paid: int = 0  # tokens a voucher was sent for (channel streams)


def ws_url(http_url: str) -> str:
    base = http_url.rstrip("/")
    if base.startswith("https://"):
        return "wss://" + base[len("https://"):] + "/v1/stream"
    return "ws://" + base.removeprefix("http://") + "/v1/stream"


@dataclass
class _Terms:
    """What every connection of one stream speaks."""

    chain_id: int
    encrypt: bool
    compression: str | None
    payment: Payment | None = None


async def stream_job(
    url: str, *, chain_job_id: int, chain_id: int, node_id: str, request: GenerationRequest,
    signer: Signer, on_token: Callable[[str], Awaitable[None]],
    on_ready: Callable[[], Awaitable[None]] | None = None,
    cancel: asyncio.Event | None = None, stall_timeout_s: float | None = None,
    max_resumes: int = MAX_RESUMES, compression: str | None = None,
    encrypt: bool | None = None, limits: Limits | None = None,
    on_metadata: Callable[[TokenMeta | None], None] | None = None,
    payment: Payment | None = None,
) -> StreamEnd:
    """Every token of the job, in order, through `on_token` (and its metadata, just
    before, through `on_metadata`); ClientError when the host fails. `node_id` is the
    host's address in NodeRegistry (its key must be that address's). `encrypt` defaults
    to MARKETPLACE_STREAM_ENCRYPTION; `compression` (gzip) exists on plaintext streams
    only. `limits` default to the settings' (MARKETPLACE_MAX_*), `stall_timeout_s` to
    MARKETPLACE_STALL_TIMEOUT_S."""
    limits = limits or Limits.from_settings()
    if stall_timeout_s is None:
        stall_timeout_s = settings.MARKETPLACE_STALL_TIMEOUT_S
    if encrypt is None:
        encrypt = settings.MARKETPLACE_STREAM_ENCRYPTION
    if encrypt and compression:
        raise ValueError("an encrypted stream is never compressed (docs/encryption.md)")
    if payment is not None and not encrypt:
        raise ValueError("a channel stream is encrypted (protocol 3)")
    terms = _Terms(chain_id=chain_id, encrypt=encrypt, compression=compression,
                   payment=payment)
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
                cancel=cancel, stall_timeout_s=stall_timeout_s, terms=terms,
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
                          checkpoint, cancel, stall_timeout_s, terms, on_ready, limits,
                          on_metadata=None):
    session = pool.session()
    pieces = received.pieces
    # compress=0: no permessage-deflate, so aiohttp inflates nothing; max_msg_size: a
    # longer frame is refused from its header, before any of it is read.
    async with session.ws_connect(ws_url(url), heartbeat=20, compress=0,
                                  max_msg_size=limits.message_bytes) as ws:
        link = _Link(ws, limits)
        # Sent before the stream's terms, so never compressed nor sealed.
        challenge = await link.receive(stall_timeout_s)
        if isinstance(challenge, Control) and challenge.type == "error":
            raise _refusal(challenge)  # refused before the handshake (BUSY)
        if not isinstance(challenge, Challenge):
            raise fault(HostFault.MALFORMED, "the host did not send a challenge")
        if terms.encrypt:
            init = _sealed_init(link, challenge, terms, chain_job_id=chain_job_id,
                                node_id=node_id, request=request, signer=signer,
                                checkpoint=checkpoint)
        else:
            signature = signer(challenge_message(challenge.nonce, chain_job_id, node_id))
            init = {"type": "init", "version": PLAINTEXT_VERSION, "jobId": chain_job_id,
                    "nodeId": node_id, "signature": signature, "checkpoint": checkpoint,
                    "compression": terms.compression,
                    "request": request.model_dump(by_alias=True) if checkpoint is None
                    else None}
            link.compressed = terms.compression == "gzip"
        await ws.send_json(init)
        cancel_sent = False
        paused = False
        while True:
            if cancel is not None and cancel.is_set() and not cancel_sent:
                await link.send({"type": "cancel"})
                cancel_sent = True
            # While paused by the host's flow control, silence is expected, not a stall.
            message = await link.receive(None if paused else stall_timeout_s)
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
                    await link.send({"type": "ack", "index": message.index})
                payment = terms.payment
                if payment is not None and len(pieces) - received.paid >= payment.every:
                    await _pay(link, payment, received)
            elif isinstance(message, Challenge):
                raise fault(HostFault.MALFORMED, "a second challenge in one stream")
            elif message.type in ("checkpoint", "resume"):
                paused = False
                await on_ready()
            elif message.type == "pause":
                paused = True
                await link.send({"type": "ack", "index": len(pieces) - 1})
                if terms.payment is not None:
                    await _pay(link, terms.payment, received)
            elif message.type == "end":
                data = control_data(message, EndData)
                if terms.payment is not None:
                    await _pay(link, terms.payment, received)
                return StreamEnd(text="".join(pieces), tokens=data.tokens,
                                 result_hash=data.result_hash, cid=data.cid,
                                 cancelled=data.cancelled,
                                 metadata=list(received.metadata))
            else:
                raise _refusal(message)


async def _pay(link: _Link, payment: Payment, received: _Received) -> None:
    """A voucher for the tokens received and not yet paid for, if any."""
    unpaid = len(received.pieces) - received.paid
    if unpaid <= 0:
        return
    voucher = await payment.pay(unpaid * payment.price_per_token_wei)
    # Kept on our side already: if the send fails, the next voucher (cumulative) pays it.
    received.paid += unpaid
    await link.send(voucher)


def _sealed_init(link: _Link, challenge: Challenge, terms: _Terms, *, chain_job_id: int,
                 node_id: str, request: GenerationRequest, signer: Signer,
                 checkpoint: int | None) -> dict:
    """Protocol 3's init, and the link's channel. Nothing leaves before the host's key is
    found to be the key of its registered address."""
    if challenge.version < PROTOCOL_VERSION or challenge.public_key is None:
        raise fault(HostFault.NO_ENCRYPTION, f"the host offers protocol {challenge.version} "
                    "without encryption; this client encrypts every stream")
    try:
        host_key = e2e.host_key_check(challenge.public_key, node_id)
    except e2e.SealError as exc:
        raise fault(exc.code, exc.message) from None
    info = e2e.info(chain_id=terms.chain_id, job_id=chain_job_id, host_address=node_id,
                    nonce=challenge.nonce)
    handshake = e2e.client_handshake(host_key, info)
    link.channel = handshake.channel
    opening = {"type": "open"}
    if checkpoint is None:
        opening["request"] = request.model_dump(by_alias=True)
    sealed = handshake.channel.seal(json.dumps(opening).encode())
    ephemeral, salt = "0x" + handshake.ephemeral.hex(), "0x" + handshake.salt.hex()
    channel_id = terms.payment.channel_id if terms.payment is not None else None
    signature = signer(challenge_message(challenge.nonce, chain_job_id, node_id, ephemeral,
                                         salt, channel_id))
    init = {"type": "init", "version": PROTOCOL_VERSION, "jobId": chain_job_id,
            "nodeId": node_id, "checkpoint": checkpoint, "ephemeralKey": ephemeral,
            "salt": salt, "signature": signature,
            "sealed": base64.b64encode(sealed).decode()}
    if channel_id is not None:
        init["channelId"] = channel_id
    return init


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


class _Link:
    """One connection's messages: sealed binary frames once the channel is up (a plaintext
    refusal of the init is the one text frame then allowed), else JSON text frames, gzip
    binary frames when the stream asked for them."""

    def __init__(self, ws, limits: Limits):
        self.ws = ws
        self.limits = limits
        self.channel: e2e.Channel | None = None
        self.compressed = False

    async def send(self, payload: dict) -> None:
        if self.channel is not None:
            await self.ws.send_bytes(self.channel.seal(json.dumps(payload).encode()))
        else:
            await self.ws.send_json(payload)

    async def receive(self, limit_s: float | None):
        try:
            async with asyncio.timeout(limit_s):
                msg = await self.ws.receive()
        except TimeoutError:
            raise TimeoutError(f"the host sent nothing for {limit_s:.0f} s") from None
        limits = self.limits
        if msg.type == aiohttp.WSMsgType.TEXT:
            if self.channel is None:
                return host_message(msg.data)
            return self._plain_refusal(msg.data)
        if msg.type == aiohttp.WSMsgType.BINARY:
            if self.channel is not None:
                try:
                    return host_message(self.channel.open(msg.data))
                except e2e.SealError as exc:
                    raise fault(exc.code, exc.message) from None
            if not self.compressed:
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

    def _plain_refusal(self, data: str):
        """A text frame on an encrypted stream: only the host's refusal of the init,
        before its first sealed frame (it had no keys yet), is one."""
        message = host_message(data) if self.channel.opener.sequence == 0 else None
        if isinstance(message, Control) and message.type == "error":
            return message
        raise fault(HostFault.MALFORMED, "a plaintext frame on an encrypted stream")
