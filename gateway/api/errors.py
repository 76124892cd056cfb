"""The gateway's one error shape, {"error": {"code", "message", "request_id", ...}}, and
the one place that maps every error to it and to an HTTP status.

A failure of the marketplace, the chain or an upstream says a fixed message for its code
(marketplace.client.errors.shown_message): its own text may carry a host's words, an
exception's class and text, or a provider's URL with its API key. That detail is logged
with the request id, which the answer carries for the caller to quote."""

from __future__ import annotations

import logging

from django.http import JsonResponse
from ninja import NinjaAPI
from ninja.errors import AuthenticationError, HttpError, ValidationError

from accounts.errors import BillingError
from gateway.api.schemas import ErrorOut
from gateway.errors import GatewayError
from marketplace.client.errors import ClientError, shown_message
from observability import errors as shape

log = logging.getLogger(__name__)

# Every code the gateway answers with, and its status (docs/gateway.md lists them too).
STATUS = {
    "INVALID_REQUEST": 400,
    "UNKNOWN_MODEL": 400,
    "PROMPT_TOO_LONG": 400,
    "INVALID_TEMPERATURE": 400,
    "INVALID_MAX_TOKENS": 400,
    "INVALID_MAX_PRICE": 400,
    "INVALID_PARAMETER": 400,
    "UNSUPPORTED_PARAMETER": 400,
    "UNAUTHENTICATED": 401,
    "INSUFFICIENT_FUNDS": 402,
    "FORBIDDEN": 403,
    "NOT_FOUND": 404,
    "METHOD_NOT_ALLOWED": 405,
    "RESERVATION_CLOSED": 409,
    "REFERENCE_IN_USE": 409,
    "CANCELLED": 409,
    "NOT_CANCELLABLE": 409,
    "PAYLOAD_TOO_LARGE": 413,
    "RATE_LIMITED": 429,
    "INTERNAL": 500,
    "INVALID_AMOUNT": 500,
    "UPSTREAM_ERROR": 502,
    "NO_HOSTS_AVAILABLE": 503,
    "NO_HOSTS_WITHIN_PRICE": 503,
}
_BY_STATUS = {400: "INVALID_REQUEST", 401: "UNAUTHENTICATED", 403: "FORBIDDEN",
              404: "NOT_FOUND", 405: "METHOD_NOT_ALLOWED", 413: "PAYLOAD_TOO_LARGE",
              429: "RATE_LIMITED"}


# What any operation may answer before or beside its own errors: 401 (ninja's auth, on the
# key the middleware looked up), 429 (the middleware's rate limit) and 500 (a bug, in the
# one shape all the same); an operation with a body also 413 (the middleware's size limit).
ALWAYS = (401, 429, 500)
WITH_A_BODY = (413,)


def error_responses(*statuses: int, body: bool = False) -> dict[int, type[ErrorOut]]:
    """The `response` entries of an operation's errors: its own `statuses` and the ones
    every operation has, each with the one error shape."""
    return {status: ErrorOut
            for status in sorted({*statuses, *ALWAYS, *(WITH_A_BODY if body else ())})}


class ApiError(Exception):
    """An answer other than success: status, machine code, message, extra body fields."""

    def __init__(self, status: int, code: str, message: str, **extra):
        super().__init__(f"{code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.extra = extra

    @classmethod
    def from_gateway(cls, exc: GatewayError) -> ApiError:
        # A marketplace failure we have no code for (a host's own) is a failed job.
        return cls(STATUS.get(exc.code, 502), exc.code, exc.message, **exc.extra)


def error_body(code: str, message: str, **extra) -> dict:
    """The body of an error answer; a failure's message is replaced by its code's fixed
    one (and the replaced text logged, under the request's id)."""
    shown = shown_message(code, message)
    if shown != message:
        log.warning("answered %s; the detail: %s", code, message)
    return shape.error_body(code, shown, **extra)


def error_response(status: int, code: str, message: str, *, headers: dict | None = None,
                   **extra) -> JsonResponse:
    """The error as a plain Django response, for code outside ninja (the middleware)."""
    response = JsonResponse(error_body(code, message, **extra), status=status)
    for name, value in (headers or {}).items():
        response[name] = value
    return response


def install(api: NinjaAPI) -> None:
    """Register the handlers that give every error of `api` the one shape."""

    def answer(request, status: int, code: str, message: str, **extra):
        return api.create_response(request, error_body(code, message, **extra), status=status)

    @api.exception_handler(ApiError)
    def on_api_error(request, exc: ApiError):
        return answer(request, exc.status, exc.code, exc.message, **exc.extra)

    @api.exception_handler(GatewayError)
    def on_gateway(request, exc: GatewayError):
        return on_api_error(request, ApiError.from_gateway(exc))

    @api.exception_handler(ValidationError)
    def on_validation(request, exc: ValidationError):
        first = exc.errors[0] if exc.errors else {}
        where = ".".join(str(p) for p in first.get("loc", ()) if p not in ("body", "query"))
        message = first.get("msg", "invalid")
        return answer(request, 400, "INVALID_REQUEST", f"{where}: {message}" if where
                      else message, errors=[
                          {"loc": [str(p) for p in e.get("loc", ())], "msg": e.get("msg", "")}
                          for e in exc.errors[:20]])

    @api.exception_handler(AuthenticationError)
    def on_auth(request, exc):
        return answer(request, 401, "UNAUTHENTICATED",
                      "a valid API key is required: X-API-Key: sk_… or "
                      "Authorization: Bearer sk_…")

    @api.exception_handler(HttpError)
    def on_http(request, exc: HttpError):
        return answer(request, exc.status_code, _BY_STATUS.get(exc.status_code, "ERROR"),
                      str(exc))

    @api.exception_handler(BillingError)
    def on_billing(request, exc: BillingError):
        return answer(request, STATUS.get(exc.code, 500), exc.code, exc.message)

    @api.exception_handler(ClientError)
    def on_client(request, exc: ClientError):
        return answer(request, STATUS.get(exc.code, 502), exc.code, exc.message)

    @api.exception_handler(Exception)
    def on_unexpected(request, exc: Exception):
        # A program gets the one shape even for a bug; the traceback goes to the log.
        log.exception("gateway: %s %s failed", request.method, request.path)
        return answer(request, 500, "INTERNAL", "something went wrong on our side; try again")
