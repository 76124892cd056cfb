"""Django's ASGI handler, with the API's thread-bound bookkeeping done in place.

Django gives each async request a context of its own for thread-bound (thread-sensitive)
sync code, and the first such call starts a thread for that request alone. Every request
makes at least three such calls: the request_started and request_finished signals (which
close the database connections and caches the request's thread opened) and the CSRF
middleware's view hook; each is a hand-over to the thread and back, about 0.3 ms of CPU
here. Requests to the JSON API (/v1/) do their database and cache work on the event loop
and on the gateway's own threads (marketplace.gateway), never on that thread, so for
them those calls find nothing to close and return at once: they run in place, on the
loop.

Thread-bound ORM work in an API request would therefore run on the loop, where Django
refuses it (SynchronousOnlyOperation, loudly): API code reaches the database through
marketplace.gateway (db(), SqlBooks), never through sync_to_async. Pages keep a thread
per request.
"""

from __future__ import annotations

from concurrent.futures import Executor, Future

from asgiref.sync import ThreadSensitiveContext
from django.core.handlers.asgi import ASGIHandler

from config.middleware import API_PREFIX


class InPlace(Executor):
    """Runs each call at once, in the calling thread."""

    def submit(self, fn, /, *args, **kwargs) -> Future:
        future: Future = Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as exc:  # handed to the awaiting caller, as a thread would
            future.set_exception(exc)
        return future


_in_place = InPlace()


class Handler(ASGIHandler):
    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope.get("path", "").startswith(API_PREFIX):
            async with ThreadSensitiveContext(executor=_in_place):
                await self.handle(scope, receive, send)
            return
        await super().__call__(scope, receive, send)
