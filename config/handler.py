"""Django's ASGI handler, with one thread for the API's thread-bound work.

Django gives each async request a context of its own for thread-bound (thread-sensitive)
sync code, and the first such call starts a thread for that request alone; every request
makes at least two (the request_started and request_finished signals close stale
database connections). Requests to the JSON API (/v1/) do their own database work on
the event loop and the gateway's threads (marketplace.gateway), so theirs is only that
bookkeeping: they share one long-lived thread for it, as requests shared a thread under
WSGI, instead of starting one each. Pages keep a thread per request.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from asgiref.sync import ThreadSensitiveContext
from django.core.handlers.asgi import ASGIHandler

from config.middleware import API_PREFIX

_api_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="api-sync")


class Handler(ASGIHandler):
    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope.get("path", "").startswith(API_PREFIX):
            async with ThreadSensitiveContext(executor=_api_thread):
                await self.handle(scope, receive, send)
            return
        await super().__call__(scope, receive, send)
