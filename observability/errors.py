"""The one JSON error shape every edge answers with, and the reference people quote.

    {"error": {"code": "RPC_UNAVAILABLE", "message": "…", "request_id": "…", ...}}

`code` is for programs, `message` for people, `request_id` for both: it is the id every
log line of the request carries (observability.logging), so a person who quotes it lets
an operator find the detail that the answer leaves out (exception text, upstream
messages, URLs of providers, which may hold their API keys).
"""

from __future__ import annotations

import re

from observability.logging import job_id_var, request_id_var

# scheme://[user[:password]@]host[:port] and whatever path, query and fragment follow.
_URL = re.compile(r"(?P<scheme>\b[a-z][a-z0-9+.-]*://)(?:[^@/\s?#'\"]*@)?"
                  r"(?P<host>[^/\s?#'\"]+)(?P<rest>[^\s'\",)]*)", re.IGNORECASE)


def urls_redacted(text: str) -> str:
    """`text` with every URL cut to scheme, host and port. An RPC provider's URL often
    carries its API key in the path, the query or the user part, and web3 and aiohttp
    put the URL they failed on into their exceptions' text."""
    def cut(match: re.Match) -> str:
        hidden = match.group("rest") or "@" in match.group(0)
        return f"{match.group('scheme')}{match.group('host')}{'/…' if hidden else ''}"

    return _URL.sub(cut, text)


def error_reference() -> str | None:
    """What a person quotes about a failure: the request's id, else the job's."""
    return request_id_var.get() or job_id_var.get()


def error_body(code: str, message: str, **extra) -> dict:
    body = {"code": code, "message": message, **extra}
    reference = request_id_var.get()
    if reference is not None:
        body.setdefault("request_id", reference)
    return {"error": body}


def server_error(request, *args, **kwargs):
    """The page of an unexpected failure (handler500): no exception, no traceback, only
    the request's id to quote. Plain HTML with no template, so that it renders even when
    what failed is the database or a template."""
    from django.http import HttpResponseServerError
    from django.utils.html import escape

    reference = getattr(request, "request_id", None) or request_id_var.get() or "unknown"
    return HttpResponseServerError(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Something "
        "went wrong</title></head><body><h1>Something went wrong on our side</h1><p>Try "
        "again in a moment. If it keeps failing, quote this reference: "
        f"<code>{escape(reference)}</code></p></body></html>")
