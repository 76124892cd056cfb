"""Sign-In with Ethereum over JSON: a nonce, then a signed EIP-4361 message that links the
signer's wallet to the logged-in user, or logs in the user who linked it. Errors have the
one shape {"error": {"code", "message"}}: 401 for a message that proves nothing (with the
reason's SIWE_* code), 400 for a body that is not JSON, 409 for a wallet linked elsewhere."""

from __future__ import annotations

import json

from django.conf import settings
from django.contrib.auth import login
from django.http import JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_POST
from limits import RateLimitItemPerMinute

from accounts import funds
from accounts.errors import AddressTaken, InvalidAddress, SiweError
from accounts.ratelimit import window_hit
from observability.errors import error_body

MAX_BODY = 8192
# Each nonce is a row: one address may not fill the table.
NONCES_PER_MINUTE = RateLimitItemPerMinute(30)


def _error(status: int, code: str, message: str) -> JsonResponse:
    return JsonResponse(error_body(code, message), status=status)


def _signed(request) -> tuple[str, str] | JsonResponse:
    if len(request.body) > MAX_BODY:
        return _error(413, "PAYLOAD_TOO_LARGE", f"at most {MAX_BODY} bytes")
    try:
        body = json.loads(request.body)
        message, signature = body["message"], body["signature"]
    except (ValueError, TypeError, KeyError):
        return _error(400, "INVALID_REQUEST", 'send JSON {"message": ..., "signature": ...}')
    if not isinstance(message, str) or not isinstance(signature, str):
        return _error(400, "INVALID_REQUEST", "message and signature must be strings")
    return message, signature


def _expected(request) -> dict:
    return {"domain": request.get_host(), "chain_id": settings.FUNDS_CHAIN_ID}


@never_cache
@require_GET
def siwe_nonce(request):
    """What a wallet needs to write the message: a fresh nonce, our domain, the chain, and
    with ?address= that address in its EIP-55 form (browsers have no keccak-256)."""
    allowed = window_hit(NONCES_PER_MINUTE, "siwe-nonce",
                         request.META.get("REMOTE_ADDR") or "unknown")
    if not allowed.allowed:
        response = _error(429, "RATE_LIMITED", "too many sign-in attempts; wait a minute")
        response["Retry-After"] = str(allowed.reset_s)
        return response
    answer = {"nonce": funds.siwe_nonce_issue(), **_expected(request),
              "uri": request.build_absolute_uri("/")}
    if "address" in request.GET:
        try:
            answer["address"] = funds.checksum(request.GET["address"])
        except InvalidAddress as exc:
            return _error(400, exc.code, exc.message)
    return JsonResponse(answer)


@require_POST
def wallet_link(request):
    if not request.user.is_authenticated:
        return _error(401, "UNAUTHENTICATED", "log in first, then link your wallet")
    signed = _signed(request)
    if isinstance(signed, JsonResponse):
        return signed
    try:
        link = funds.wallet_link(user=request.user, message=signed[0], signature=signed[1],
                                 **_expected(request))
    except SiweError as exc:
        return _error(401, exc.code, exc.message)
    except AddressTaken as exc:
        return _error(409, exc.code, exc.message)
    return JsonResponse({"address": link.address})


@require_POST
def wallet_login(request):
    signed = _signed(request)
    if isinstance(signed, JsonResponse):
        return signed
    try:
        user = funds.wallet_login(message=signed[0], signature=signed[1], **_expected(request))
    except SiweError as exc:
        return _error(401, exc.code, exc.message)
    login(request, user, backend="django.contrib.auth.backends.ModelBackend")
    return JsonResponse({"username": user.username, "redirect": "/"})
