"""Django's own middleware, adapted to an async chain.

Django runs a MiddlewareMixin's hooks in a thread when the request is async: two hops
for each of them on every request, and under ASGI the first hop starts a thread for the
request. settings.MIDDLEWARE names Django's classes (so Django's own checks see them);
the ASGI handler (config.handler) builds its chain from these adaptations (ASYNC):

  * on the loop: Security, Common and XFrameOptions only read the request and set
    headers (no I/O), so their hooks run on the event loop directly;
  * for pages only: the session, CSRF, authentication and messages middleware serve the
    browser's pages; the JSON API (/v1/, API keys, no cookies) passes them by. Pages go
    through them as before, session and message storage in threads as Django runs them.
    The CSRF view hook is a coroutine, so the API's requests skip it without a hop.
"""

from __future__ import annotations

from asgiref.sync import sync_to_async
from django.contrib.auth.middleware import AuthenticationMiddleware
from django.contrib.messages.middleware import MessageMiddleware
from django.contrib.sessions.middleware import SessionMiddleware
from django.middleware.clickjacking import XFrameOptionsMiddleware
from django.middleware.common import CommonMiddleware
from django.middleware.csrf import CsrfViewMiddleware
from django.middleware.security import SecurityMiddleware

API_PREFIX = "/v1/"


def _on_loop(base: type) -> type:
    async def __acall__(self, request):
        response = None
        if hasattr(self, "process_request"):
            response = self.process_request(request)
        response = response or await self.get_response(request)
        if hasattr(self, "process_response"):
            response = self.process_response(request, response)
        return response

    return type(base.__name__, (base,), {"__acall__": __acall__,
                                         "__module__": __name__,
                                         "__doc__": f"{base.__name__}, on the event loop."})


def _pages_only(base: type) -> type:
    async def __acall__(self, request):
        if request.path_info.startswith(API_PREFIX):
            return await self.get_response(request)
        return await base.__acall__(self, request)

    return type(base.__name__, (base,), {"__acall__": __acall__,
                                         "__module__": __name__,
                                         "__doc__": f"{base.__name__}, but not for {API_PREFIX}."})


Security = _on_loop(SecurityMiddleware)
Common = _on_loop(CommonMiddleware)
XFrameOptions = _on_loop(XFrameOptionsMiddleware)
Session = _pages_only(SessionMiddleware)


class Csrf(_pages_only(CsrfViewMiddleware)):
    async def process_view(self, request, callback, callback_args, callback_kwargs):
        if request.path_info.startswith(API_PREFIX):
            return None
        return await sync_to_async(super().process_view)(request, callback, callback_args,
                                                         callback_kwargs)


Authentication = _pages_only(AuthenticationMiddleware)
Messages = _pages_only(MessageMiddleware)


# What passes the API's requests by untouched: left out of the handler's shorter chain
# for its busiest endpoints (config.handler). Whitenoise serves only STATIC_URL.
API_PASSES = frozenset({
    f"{base.__module__}.{base.__name__}" for base in (
        SessionMiddleware, CsrfViewMiddleware, AuthenticationMiddleware, MessageMiddleware)
} | {"config.static.AsyncWhiteNoiseMiddleware"})

# Django's class (as settings.MIDDLEWARE names it) -> its adaptation here.
ASYNC = {f"{base.__module__}.{base.__name__}": f"{__name__}.{name}" for base, name in (
    (SecurityMiddleware, "Security"), (CommonMiddleware, "Common"),
    (XFrameOptionsMiddleware, "XFrameOptions"), (SessionMiddleware, "Session"),
    (CsrfViewMiddleware, "Csrf"), (AuthenticationMiddleware, "Authentication"),
    (MessageMiddleware, "Messages"))}
