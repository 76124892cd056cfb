"""Streaming a job's tokens from a host over WebSocket, with resume.

A dropped or stalled connection is resumed from the last token received (checkpoint),
so the reader gets every token once and in order. When the host cannot be resumed, the
caller fails over to another host.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import aiohttp

from marketplace.client import pool
from marketplace.client.errors import ClientError, host_code
from marketplace.protocol import (
    MAX_MESSAGE_BYTES,
    PROTOCOL_VERSION,
    Code,
    GenerationRequest,
    challenge_message,
)

log = logging.getLogger(__name__)

__all__ = ["GenerationRequest", "StreamEnd", "stream_job"]

STALL_TIMEOUT_S = 15.0
MAX_RESUMES = 2
ACK_EVERY = 16
# Host refusals that another try at the same host cannot fix, but another host might.
_HOST_SPECIFIC = {Code.BUSY, Code.NOT_YOUR_JOB, Code.CHAIN_UNAVAILABLE, Code.INTERNAL}


@dataclass
class StreamEnd:
    text: str
    tokens: int
    result_hash: str | None
    cid: str | None
    cancelled: bool


Signer = Callable[[str], str]


def ws_url(http_url: str) -> str:
    base = http_url.rstrip("/")
    if base.startswith("https://"):
        return "wss://" + base[len("https://"):] + "/v1/stream"
    return "ws://" + base.removeprefix("http://") + "/v1/stream"


async def stream_job(
    url: str, *, chain_job_id: int, node_id: str, request: GenerationRequest, signer: Signer,
    on_token: Callable[[str], Awaitable[None]],
    on_ready: Callable[[], Awaitable[None]] | None = None,
    cancel: asyncio.Event | None = None, stall_timeout_s: float = STALL_TIMEOUT_S,
    max_resumes: int = MAX_RESUMES, compression: str | None = None,
) -> StreamEnd:
    pieces: list[str] = []
    resumes = 0
    ready = {"sent": False}

    async def ready_once() -> None:
        if not ready["sent"] and on_ready is not None:
            ready["sent"] = True
            await on_ready()

    while True:
        checkpoint = len(pieces) - 1 if pieces else None
        try:
            end = await _one_connection(
                url, chain_job_id=chain_job_id, node_id=node_id, request=request,
                signer=signer, pieces=pieces, on_token=on_token, checkpoint=checkpoint,
                cancel=cancel, stall_timeout_s=stall_timeout_s, compression=compression,
                on_ready=ready_once)
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




async def _one_connection(url, *, chain_job_id, node_id, request, signer, pieces, on_token,
                          checkpoint, cancel, stall_timeout_s, compression, on_ready):
    session = pool.session()
    async with session.ws_connect(ws_url(url), heartbeat=20,
                                  max_msg_size=16 * MAX_MESSAGE_BYTES) as ws:
        challenge = await _receive(ws, stall_timeout_s)
        if challenge.get("type") == "error":  # refused before the handshake (BUSY)
            raise _refusal(challenge)
        if challenge.get("type") != "challenge":
            raise ClientError(Code.MALFORMED, "the host did not send a challenge",
                              permanent=False)
        signature = signer(challenge_message(challenge["nonce"], chain_job_id, node_id))
        init = {"type": "init", "version": PROTOCOL_VERSION, "jobId": chain_job_id,
                "nodeId": node_id, "signature": signature, "checkpoint": checkpoint,
                "compression": compression,
                "request": request.model_dump(by_alias=True) if checkpoint is None else None}
        await ws.send_json(init)
        cancel_sent = False
        paused = False
        while True:
            if cancel is not None and cancel.is_set() and not cancel_sent:
                await ws.send_json({"type": "cancel"})
                cancel_sent = True
            # While paused by the host's flow control, silence is expected, not a stall.
            message = await _receive(ws, None if paused else stall_timeout_s)
            kind = message.get("type")
            if kind == "token":
                index = message["index"]
                if index < len(pieces):
                    continue  # already have it (a resume overlapped)
                if index != len(pieces):
                    raise ClientError(Code.MALFORMED, f"token {index} arrived after "
                                      f"{len(pieces)} tokens: a gap", permanent=False)
                pieces.append(message["content"])
                await on_token(message["content"])
                if index % ACK_EVERY == 0:
                    await ws.send_json({"type": "ack", "index": index})
            elif kind in ("checkpoint", "resume"):
                paused = False
                await on_ready()
            elif kind == "pause":
                paused = True
                await ws.send_json({"type": "ack", "index": len(pieces) - 1})
            elif kind == "end":
                data = message["data"]
                return StreamEnd(text="".join(pieces), tokens=data["tokens"],
                                 result_hash=data.get("resultHash"), cid=data.get("cid"),
                                 cancelled=bool(data.get("cancelled")))
            elif kind == "error":
                raise _refusal(message)


def _refusal(message: dict) -> ClientError:
    data = message.get("data", {})
    code = host_code(data.get("code", Code.INTERNAL))
    return ClientError(code, str(data.get("message", ""))[:500],
                       permanent=False if code in _HOST_SPECIFIC else None)


async def _receive(ws, limit_s: float | None) -> dict:
    try:
        async with asyncio.timeout(limit_s):
            msg = await ws.receive()
    except TimeoutError:
        raise TimeoutError(f"the host sent nothing for {limit_s:.0f} s") from None
    if msg.type == aiohttp.WSMsgType.TEXT:
        return json.loads(msg.data)
    if msg.type == aiohttp.WSMsgType.BINARY:
        return json.loads(gzip.decompress(msg.data))
    raise ConnectionError(f"the host closed the stream ({msg.type.name})")
