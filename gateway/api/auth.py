"""API keys on /v1: `X-API-Key: sk_…` or `Authorization: Bearer sk_…`."""

from __future__ import annotations

from django.http import HttpRequest
from ninja.security.base import AuthBase

from accounts.models import ApiKey
from gateway.api.errors import ApiError
from gateway.keys import api_key_lookup

_UNSET = object()


def raw_key(request: HttpRequest) -> str | None:
    """The key the request carries, if any (not checked)."""
    key = request.headers.get("X-API-Key")
    if key:
        return key.strip()
    scheme, _, credentials = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "bearer" and credentials.strip():
        return credentials.strip()
    return None


class _KeyAuth(AuthBase):
    """request.auth is the caller's ApiKey (with its user and account). The gateway
    middleware has already looked the key up for the rate limit (request.api_key), so
    this costs no second query; without the middleware it looks the key up itself."""

    async def authenticate(self, request: HttpRequest) -> ApiKey | None:
        found = getattr(request, "api_key", _UNSET)
        if found is _UNSET:
            found = await api_key_lookup(raw_key(request))
        return found

    async def __call__(self, request: HttpRequest) -> ApiKey | None:
        return await self.authenticate(request)


class ApiKeyHeader(_KeyAuth):
    """The key as `X-API-Key: sk_…`."""

    openapi_type = "apiKey"
    openapi_in = "header"
    openapi_name = "X-API-Key"
    openapi_description = "An API key, sk_ and 64 hex digits (account page, Keys)"


class BearerKey(_KeyAuth):
    """The key as `Authorization: Bearer sk_…`, as OpenAI's clients send it."""

    openapi_type = "http"
    openapi_scheme = "bearer"
    openapi_bearerFormat = "sk_ and 64 hex digits"
    openapi_description = "The same API key as a bearer token"


# Either one: ninja tries each in turn, and the published schema lists them as
# alternatives (two security requirements).
KEY_AUTH = [ApiKeyHeader(), BearerKey()]


def require_scope(request: HttpRequest, scope: str) -> ApiKey:
    """The caller's key, or 403 FORBIDDEN when it lacks `scope`."""
    key: ApiKey = request.auth
    scope = str(getattr(scope, "value", scope))
    if not key.has_scope(scope):
        raise ApiError(403, "FORBIDDEN", f"this API key lacks the '{scope}' scope")
    return key
