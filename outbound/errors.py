"""The one error type of outbound requests."""

from __future__ import annotations


class OutboundError(Exception):
    """A request to a URL someone else chose that we refused or that failed.

    `code` is machine-readable; `message` is for the person who gave the URL and names
    nothing of ours beyond that URL (never the address it resolved to); `permanent` says
    that trying the same URL again cannot help.
    """

    def __init__(self, code: str, message: str, *, permanent: bool):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.permanent = permanent


class UnsafeURL(OutboundError):
    """A URL the policy refuses: URL_INVALID, URL_SCHEME_NOT_ALLOWED, URL_NOT_ALLOWED
    (permanent), or URL_UNRESOLVABLE (its name does not resolve now; it may later)."""

    def __init__(self, code: str, message: str):
        super().__init__(code, message, permanent=code != "URL_UNRESOLVABLE")
