"""Django's own middleware, adapted to an async chain.

Django runs a MiddlewareMixin's hooks in a thread when the request is async: two hops
for each of them on every request, and under ASGI the first hop starts a thread for the
request. Two adaptations, each named where it is used (config.settings.base.MIDDLEWARE):

  * on the loop: Security, Common and XFrameOptions only read the request and set
    headers (no I/O), so their hooks run on the event loop directly;
  * for pages only: the session, CSRF, authentication and messages middleware serve the
    browser's pages; the JSON API (/v1/, API keys, no cookies) passes them by. Pages go
    through them as before, session and message storage in threads as Django runs them.
"""

from __future__ import annotations

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
Csrf = _pages_only(CsrfViewMiddleware)
Authentication = _pages_only(AuthenticationMiddleware)
Messages = _pages_only(MessageMiddleware)
