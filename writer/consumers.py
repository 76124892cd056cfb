"""The generation page's WebSocket: tokens arrive as escaped HTML fragments that htmx's
ws extension swaps in out of band; a Stop button sends {"action": "stop"}."""

from __future__ import annotations

import json

from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings
from django.template.loader import render_to_string
from django.utils.html import escape

from writer.models import Generation
from writer.runner import group_name, live_text

CLOSE_UNAUTHENTICATED = 4401
CLOSE_NOT_FOUND = 4404


def _percent(done: int, total: int) -> int:
    return min(100, round(100 * done / total)) if total else 0


class GenerationConsumer(AsyncWebsocketConsumer):
    async def connect(self):
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self.close(code=CLOSE_UNAUTHENTICATED)
            return
        pk = self.scope["url_route"]["kwargs"]["pk"]
        # Another user's generation is indistinguishable from one that does not exist.
        generation = await Generation.objects.filter(pk=pk, user=user).afirst()
        if generation is None:
            await self.close(code=CLOSE_NOT_FOUND)
            return
        self.generation_id = generation.id
        self.group = group_name(generation.id)
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.accept()
        await self._send_whole()

    async def disconnect(self, code):
        if hasattr(self, "group"):
            await self.channel_layer.group_discard(self.group, self.channel_name)

    async def receive(self, text_data=None, bytes_data=None):
        try:
            data = json.loads(text_data or "{}")
        except ValueError:
            return
        if isinstance(data, dict) and data.get("action") == "stop":
            await self.channel_layer.group_send(self.group, {"type": "gen.cancel"})
            await self.send(text_data='<span id="status" hx-swap-oob="outerHTML" '
                                      'class="status">Stopping…</span>')

    async def _send_whole(self):
        generation = await Generation.objects.aget(pk=self.generation_id)
        text, seq = await live_text(generation)
        self.next_index = seq
        await self.send(text_data=render_to_string("writer/_stream_state.html", {
            "generation": generation, "text": text, "seq": seq,
            "percent": _percent(seq, generation.max_tokens),
        }))
        if not generation.is_live:
            await self._send_final(generation)

    async def _send_final(self, generation):
        # No request here, so no CSRF token from the middleware: the page's CSRF cookie
        # holds the secret itself, which Django accepts as a token too. (The forms are
        # htmx-boosted and also send the page's token from <body hx-headers>.)
        secret = self.scope.get("cookies", {}).get(settings.CSRF_COOKIE_NAME, "")
        await self.send(text_data=render_to_string("writer/_final.html", {
            "generation": generation, "oob": True, "csrf_token": secret}))

    async def gen_token(self, event):
        index = event["index"]
        if index < self.next_index:
            return  # already shown
        if index > self.next_index:
            await self._send_whole()  # a dropped message: send the whole text once
            return
        self.next_index = index + 1
        percent = _percent(self.next_index, event["max"])
        await self.send(text_data=(
            f'<div hx-swap-oob="beforeend:#output"><span>{escape(event["text"])}</span></div>'
            f'<div id="progress" hx-swap-oob="outerHTML" class="progress" role="progressbar" '
            f'aria-valuemin="0" aria-valuemax="{event["max"]}" aria-valuenow="{self.next_index}">'
            f'<div class="bar" style="width: {percent}%"></div>'
            f'<span>{self.next_index} of {event["max"]} tokens</span></div>'))

    async def gen_reset(self, event):
        await self._send_whole()

    async def gen_state(self, event):
        labels = {"POSTED": "Job posted on chain, escrow held", "CLAIMED": "A host took the job",
                  "STREAMING": "Writing", "FAILOVER": "A host failed; continuing on another",
                  "VERIFYING": "Checking the host's work against the model",
                  "DISPUTED": "A result failed its checks and was disputed; trying another "
                              "host",
                  "COMPLETED": "Done", "FAILED": "Failed"}
        label = labels.get(event["state"])
        if label:
            await self.send(text_data=f'<span id="status" hx-swap-oob="outerHTML" '
                                      f'class="status">{escape(label)}</span>')

    async def gen_end(self, event):
        await self._send_whole()

    async def gen_cancel(self, event):
        pass  # meant for the job's runner, which listens on the same group
