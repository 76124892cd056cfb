"""What every /v1 request goes through before its endpoint: the body size limit, the
API key lookup and the rate limit; and after it: X-RateLimit-* headers, the
Server-Timing header (gateway.timing: the request's recorder is request.timing), and the
one JSON error shape for answers Django makes itself (an unknown path, a wrong method).

The key is looked up once here (one query), for the limit and for the endpoint's auth
(request.api_key); the limit is counted in Redis by key, or by client address for a
request without a usable key. Under ASGI both are awaited on the event loop
(gateway.keys, accounts.ratelimit.rate_limit_hit_async).
"""

from __future__ import annotations

import json

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.conf import settings

from accounts.ratelimit import rate_limit_hit, rate_limit_hit_async
from accounts.selectors import api_key_authenticate
from gateway.api.auth import raw_key
from gateway.api.errors import _BY_STATUS, error_body, error_response
from gateway.db import db_sync
from gateway.keys import api_key_lookup
from gateway.timing import Timing, timing_answer

PREFIX = "/v1/"
# The billed endpoints: their key may be one read a moment ago (gateway.keys, "Reuse"),
# and they take config.handler's shorter way.
BILLED = frozenset({"/v1/inference", "/v1/chat/completions"})
_BODYLESS = {"GET", "HEAD", "OPTIONS", "DELETE"}


def _tier(api_key) -> str:
    account = getattr(api_key, "gateway_account", None)
    if account is not None:
        return account[1]
    try:
        return api_key.user.account.tier
    except Exception:  # a user without an account yet: it is made on the first charge
        return "free"


def _admit(raw: str | None, client_ip: str):
    """The caller's key (or None) and the rate limit's answer for this request."""
    api_key = api_key_authenticate(raw) if raw else None
    if api_key is not None:
        return api_key, rate_limit_hit(tier=_tier(api_key), account_id=api_key.user_id)
    return None, rate_limit_hit(tier=settings.GATEWAY_ANONYMOUS_TIER, client_ip=client_ip)


async def _admit_async(raw: str | None, client_ip: str, reuse: bool = False):
    api_key = await api_key_lookup(raw, reuse=reuse) if raw else None
    if api_key is not None:
        return api_key, await rate_limit_hit_async(tier=_tier(api_key),
                                                   account_id=api_key.user_id)
    return None, await rate_limit_hit_async(tier=settings.GATEWAY_ANONYMOUS_TIER,
                                            client_ip=client_ip)


def _too_large():
    limit = settings.GATEWAY_MAX_BODY_BYTES
    return error_response(413, "PAYLOAD_TOO_LARGE",
                          f"the request body is over {limit} bytes", max_bytes=limit)


def _read_body(request):
    """Read the body here, up to the limit (Django's own limit would answer a 400).
    Returns an error response, or None with request.body set."""
    if request.method in _BODYLESS:
        return None
    limit = settings.GATEWAY_MAX_BODY_BYTES
    try:
        declared = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        declared = 0
    if declared > limit:
        return _too_large()
    from io import BytesIO

    body = request._stream.read(limit + 1)
    if len(body) > limit:  # no Content-Length, or a wrong one
        return _too_large()
    request._body = body
    request._stream = BytesIO(body)
    return None


def _finish(request, response, limit):
    for name, value in limit.headers().items():
        response[name] = value
    content_type = response.get("Content-Type", "")
    if (response.status_code >= 400 and not response.streaming
            and not content_type.startswith("application/json")):
        # Django's own 404/405 pages: the same shape as every other error.
        code = _BY_STATUS.get(response.status_code, "ERROR")
        message = {404: f"no endpoint {request.path}",
                   405: f"{request.method} is not allowed on {request.path}"}.get(
            response.status_code, response.reason_phrase)
        body = json.dumps(error_body(code, message)).encode()
        response.content = body
        response["Content-Type"] = "application/json"
        response["Content-Length"] = str(len(body))
    timing_answer(request.timing, response)
    return response


def _limited(limit):
    if limit.allowed:
        return None
    return error_response(429, "RATE_LIMITED", f"over {limit.limit} requests a minute; "
                          f"retry in {max(limit.reset_s, 1)} s", limit=limit.limit)


class GatewayMiddleware:
    sync_capable = True
    async_capable = True

    def __init__(self, get_response):
        self.get_response = get_response
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)

    def __call__(self, request):
        if self.is_async:
            return self.__acall__(request)
        if not request.path.startswith(PREFIX):
            return self.get_response(request)
        request.timing = Timing()
        # On the gateway's threads even here: a connection opened in this request's own
        # thread would be a new connection for every request.
        request.api_key, limit = db_sync(_admit, raw_key(request),
                                         request.META.get("REMOTE_ADDR", ""))
        refused = _limited(limit) or _read_body(request)
        return _finish(request, refused or self.get_response(request), limit)

    async def __acall__(self, request):
        if not request.path.startswith(PREFIX):
            return await self.get_response(request)
        request.timing = Timing()
        request.api_key, limit = await _admit_async(
            raw_key(request), request.META.get("REMOTE_ADDR", ""),
            reuse=request.method == "POST" and request.path in BILLED)
        refused = _limited(limit) or _read_body(request)
        return _finish(request, refused or await self.get_response(request), limit)
