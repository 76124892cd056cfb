"""One stream's messages on its WebSocket, as the host sends and reads them: sealed binary
frames on an encrypted stream (protocol 3, marketplace.e2e), JSON text frames (gzip
binary frames if asked) on a plaintext one (protocol 2)."""

from __future__ import annotations

import gzip
import json

from aiohttp import WSCloseCode, WSMsgType

from marketplace.e2e import Channel, SealError
from marketplace.protocol import MAX_MESSAGE_BYTES, Code


class StreamRefused(Exception):
    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


class Link:
    def __init__(self, ws):
        self.ws = ws
        self.channel: Channel | None = None
        self.gzip = False

    @property
    def closed(self) -> bool:
        return self.ws.closed

    async def send(self, payload: dict) -> None:
        data = json.dumps(payload)
        if self.channel is not None:
            await self.ws.send_bytes(self.channel.seal(data.encode()))
        elif self.gzip:
            await self.ws.send_bytes(gzip.compress(data.encode()))
        else:
            await self.ws.send_str(data)

    # A hostile behaviour's own frames (marketplace.host.behaviours) go through these: on
    # an encrypted stream they are sealed like any message, so what they test is what the
    # client does with the plaintext inside.

    async def send_str(self, text: str) -> None:
        if self.channel is not None:
            await self.ws.send_bytes(self.channel.seal(text.encode()))
        else:
            await self.ws.send_str(text)

    async def send_bytes(self, data: bytes) -> None:
        if self.channel is not None:
            await self.ws.send_bytes(self.channel.seal(data))
        else:
            await self.ws.send_bytes(data)

    async def receive(self) -> dict | None:
        """The next message as a JSON object; None when the client has gone."""
        msg = await self.ws.receive()
        if msg.type == WSMsgType.ERROR and getattr(msg.data, "code", None) == \
                WSCloseCode.MESSAGE_TOO_BIG:
            # aiohttp has already closed the socket (1009); this only names the failure.
            raise StreamRefused(Code.TOO_LARGE, str(msg.data))
        if msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED, WSMsgType.ERROR):
            return None
        data = msg.data
        if len(data) > MAX_MESSAGE_BYTES:
            raise StreamRefused(Code.TOO_LARGE, f"messages are limited to {MAX_MESSAGE_BYTES} "
                                                "bytes")
        if self.channel is not None:
            if msg.type != WSMsgType.BINARY:
                raise StreamRefused(Code.MALFORMED, "a text frame on an encrypted stream")
            data = self.open(data)
        return parse_object(data)

    def open(self, frame: bytes) -> bytes:
        try:
            return self.channel.open(frame)
        except SealError as exc:
            raise StreamRefused(exc.code, exc.message) from None


def parse_object(data: str | bytes) -> dict:
    try:
        parsed = json.loads(data)
    except ValueError:
        raise StreamRefused(Code.MALFORMED, "a message is not valid JSON") from None
    if not isinstance(parsed, dict):
        raise StreamRefused(Code.MALFORMED, "a message must be a JSON object")
    return parsed
