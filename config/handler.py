"""Django's ASGI handler: the middleware chain built from the async adaptations of
Django's own middleware, and one long-lived thread for the API's thread-bound work.

Middleware: settings.MIDDLEWARE names Django's classes; this handler builds its chain
with config.middleware.ASYNC in their place, so that no hook is handed to a thread that
needs none (the sync handler of Django's test client keeps the originals).

Threads: Django gives each async request a context of its own for thread-bound
(thread-sensitive) sync code, and the first such call starts a thread for that request
alone; every request makes at least two (the request_started and request_finished
signals close stale database connections). Requests to the JSON API (/v1/) do their
database work on the event loop and on the gateway's own threads (marketplace.gateway),
so theirs is mostly that bookkeeping: they share one long-lived thread for it, as
requests shared threads under WSGI, instead of starting one each. Pages keep a thread
per request.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from asgiref.sync import ThreadSensitiveContext
from django.conf import settings
from django.core.handlers.asgi import ASGIHandler

from config.middleware import API_PREFIX, ASYNC

_api_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="api-sync")


class Handler(ASGIHandler):
    def load_middleware(self, is_async=False):
        configured = settings.MIDDLEWARE
        settings.MIDDLEWARE = [ASYNC.get(path, path) for path in configured]
        try:
            super().load_middleware(is_async)
        finally:
            settings.MIDDLEWARE = configured

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope.get("path", "").startswith(API_PREFIX):
            async with ThreadSensitiveContext(executor=_api_thread):
                await self.handle(scope, receive, send)
            return
        await super().__call__(scope, receive, send)
