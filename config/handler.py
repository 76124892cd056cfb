"""Django's ASGI handler: the middleware chain built from the async adaptations of
Django's own middleware, one long-lived thread for the API's thread-bound work, and a
shorter way through for the gateway's two busiest endpoints.

Middleware: settings.MIDDLEWARE names Django's classes; this handler builds its chain
with config.middleware.ASYNC in their place, so that no hook is handed to a thread that
needs none (the sync handler of Django's test client keeps the originals).

Threads: Django gives each async request a context of its own for thread-bound
(thread-sensitive) sync code, and the first such call starts a thread for that request
alone; every request makes at least two (the request_started and request_finished
signals close stale database connections). Requests to the JSON API (/v1/) do their
database work on the event loop and on the gateway's own threads (gateway),
so theirs is mostly that bookkeeping: they share one long-lived thread for it, as
requests shared threads under WSGI, instead of starting one each. Pages keep a thread
per request.

The lane: `POST /v1/inference` and `POST /v1/chat/completions` (API_LANE) run the same
middleware and the same ninja views, with less around them. The request is read into
memory (at most GATEWAY_MAX_BODY_BYTES + 1 bytes: the gateway middleware answers 413
above that), its route is resolved once per process, and the chain leaves out the
middleware that passes /v1/ by (API_PASSES: sessions, CSRF, authentication, messages,
static files). The request signals are sent on the event loop, where they find no
connection of Django's to close: these views hold none (the billed run is a task of its
own, gateway.inference.inference_start), so nothing goes to a thread. A
client that hangs up cancels the view, as under Django's own handler (which watches for
that with two more tasks a request).
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from io import BytesIO

from asgiref.sync import ThreadSensitiveContext
from django.conf import settings
from django.core import signals
from django.core.exceptions import RequestAborted
from django.core.handlers.asgi import ASGIHandler, get_script_prefix
from django.core.handlers.exception import convert_exception_to_response
from django.urls import resolve, set_script_prefix
from django.utils.log import log_response
from django.utils.module_loading import import_string

from config.middleware import API_PASSES, API_PREFIX, ASYNC
from gateway.api.middleware import BILLED

_api_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="api-sync")

API_LANE = BILLED


async def _read_capped(receive, limit: int) -> bytes:
    """The request's body, cut off after `limit` + 1 bytes: enough for the gateway
    middleware to see it is over (it also refuses a declared length over the limit)."""
    body = bytearray()
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise RequestAborted()
        body += message.get("body", b"")
        if len(body) > limit or not message.get("more_body", False):
            return bytes(body[:limit + 1])


class Handler(ASGIHandler):
    def load_middleware(self, is_async=False):
        configured = settings.MIDDLEWARE
        settings.MIDDLEWARE = [ASYNC.get(path, path) for path in configured]
        try:
            super().load_middleware(is_async)
        finally:
            settings.MIDDLEWARE = configured
        if is_async:
            self._lane_chain = self._build_lane_chain()
            self._lane_routes: dict = {}

    def _build_lane_chain(self):
        """settings.MIDDLEWARE without API_PASSES, around _lane_view, built as Django
        builds its own chain (every middleware here is async-capable)."""
        handler = convert_exception_to_response(self._lane_view)
        for path in reversed(settings.MIDDLEWARE):
            if path in API_PASSES:
                continue
            middleware = import_string(ASYNC.get(path, path))
            handler = convert_exception_to_response(middleware(handler))
        return handler

    async def _lane_view(self, request):
        match = self._lane_routes.get(request.path_info)
        if match is None:
            match = self._lane_routes[request.path_info] = resolve(request.path_info)
        request.resolver_match = match
        return await match.func(request, *match.args, **match.kwargs)

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope.get("path", "").startswith(API_PREFIX):
            if scope["method"] == "POST" and scope["path"] in API_LANE \
                    and settings.GATEWAY_LANE:
                await self._handle_lane(scope, receive, send)
                return
            async with ThreadSensitiveContext(executor=_api_thread):
                await self.handle(scope, receive, send)
            return
        await super().__call__(scope, receive, send)

    async def _handle_lane(self, scope, receive, send):
        try:
            body = await _read_capped(receive, settings.GATEWAY_MAX_BODY_BYTES)
        except RequestAborted:
            return
        set_script_prefix(get_script_prefix(scope))
        signals.request_started.send(sender=self.__class__, scope=scope)
        request, refused = self.create_request(scope, BytesIO(body))
        if request is None:
            await self.send_response(refused, send)
            refused.close()
            return
        # The only message that may come now is the client hanging up: then the view is
        # cancelled (a job it started stops and bills what it made).
        handling = asyncio.current_task()
        hung_up = False

        def on_message(watch: asyncio.Task) -> None:
            nonlocal hung_up
            if not watch.cancelled() and watch.exception() is None \
                    and watch.result().get("type") == "http.disconnect":
                hung_up = True
                handling.cancel()

        watch = asyncio.ensure_future(receive())
        watch.add_done_callback(on_message)
        response = None
        try:
            response = await self._lane_chain(request)
            response._handler_class = self.__class__
            if response.status_code >= 400:
                log_response("%s: %s", response.reason_phrase, request.path,
                             response=response, request=request)
            await self.send_response(response, send)
        except asyncio.CancelledError:
            if not hung_up:
                raise
        finally:
            watch.remove_done_callback(on_message)
            watch.cancel()
            if response is not None:
                response.close()  # request_finished
            else:
                signals.request_finished.send(sender=self.__class__)
