"""A recording proxy between clients and a host: what anyone on the path sees.

It forwards HTTP requests and the /v1/stream WebSocket to the host, records every body
and every frame both ways, and may rewrite frames on the way (`rewrite`): drop, repeat,
alter, reorder or inject them, as an attacker on the path could.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field

import aiohttp
from aiohttp import WSMsgType, web

from tests.conftest import free_port

HOST, CLIENT = "host", "client"
# rewrite(sender, connection number, frame number on that connection and side, data) →
# the frames to pass on instead (the same data, none, several, or others), or None to
# cut the connection there.
Rewrite = Callable[[str, int, int, str | bytes], list[str | bytes] | None]


@dataclass
class Frame:
    sender: str
    connection: int
    data: str | bytes


@dataclass
class RecordingProxy:
    target: str
    rewrite: Rewrite | None = None
    frames: list[Frame] = field(default_factory=list)
    bodies: list[bytes] = field(default_factory=list)
    connections: int = 0
    port: int = field(default_factory=free_port)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def sent_by(self, sender: str, connection: int | None = None) -> list[str | bytes]:
        return [f.data for f in self.frames
                if f.sender == sender and connection in (None, f.connection)]

    async def start(self) -> RecordingProxy:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()
        self._session = aiohttp.ClientSession(auto_decompress=False)
        return self

    async def stop(self) -> None:
        await self._session.close()
        await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        if request.headers.get("Upgrade", "").lower() == "websocket":
            return await self._websocket(request)
        body = await request.read()
        self.bodies.append(body)
        async with self._session.request(request.method, self.target + request.path_qs,
                                         data=body or None,
                                         headers={"Content-Type": request.content_type}
                                         ) as answer:
            data = await answer.read()
            self.bodies.append(data)
            return web.Response(body=data, status=answer.status,
                                content_type=answer.content_type)

    async def _websocket(self, request: web.Request) -> web.WebSocketResponse:
        self.connections += 1
        number = self.connections
        client = web.WebSocketResponse(max_msg_size=0)
        await client.prepare(request)
        target = "ws" + self.target.removeprefix("http") + request.path_qs
        async with self._session.ws_connect(target, max_msg_size=0) as host:
            pumps = [asyncio.create_task(self._pump(client, host, CLIENT, number)),
                     asyncio.create_task(self._pump(host, client, HOST, number))]
            await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
            for pump in pumps:
                pump.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await pump
        await client.close()
        return client

    async def _pump(self, source, sink, sender: str, connection: int) -> None:
        count = 0
        async for message in source:
            if message.type not in (WSMsgType.TEXT, WSMsgType.BINARY):
                break
            self.frames.append(Frame(sender, connection, message.data))
            out = [message.data] if self.rewrite is None else \
                self.rewrite(sender, connection, count, message.data)
            count += 1
            if out is None:
                break
            for data in out:
                if isinstance(data, bytes):
                    await sink.send_bytes(data)
                else:
                    await sink.send_str(data)
        await sink.close()
