"""The client's one error type, with the codes callers map to answers."""

from __future__ import annotations

# Retrying these elsewhere cannot help: the request itself, or the payer, is the problem.
NON_RETRYABLE = frozenset(
    {
        "INSUFFICIENT_FUNDS",
        "INVALID_MODEL",
        "QUOTA_EXCEEDED",
        "PROMPT_TOO_LONG",
        "INVALID_REQUEST",
        "NO_HOSTS_AVAILABLE",
        "CANCELLED",
        "BLOCKED",
    }
)


class ClientError(Exception):
    """A job could not be carried out. `permanent` means retrying will not help."""

    def __init__(self, code: str, message: str, *, permanent: bool | None = None):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.permanent = code in NON_RETRYABLE if permanent is None else permanent


class HostFault:
    """Codes for a host whose bytes we refuse (docs/security.md, "Hostile hosts: bounded
    bytes"). The host is at fault, never the request: the job goes on with the next host."""

    MALFORMED = "HOST_MALFORMED"  # not JSON, a missing field, a wrong type, out of order
    TOO_LARGE = "HOST_TOO_LARGE"  # a message, inflated or not, over its bound
    COMPRESSION_RATIO = "HOST_COMPRESSION_RATIO"  # inflated too many times its size
    TOKEN_TOO_LARGE = "HOST_TOKEN_TOO_LARGE"
    TEXT_TOO_LARGE = "HOST_TEXT_TOO_LARGE"  # the job's text over its bound
    TOO_MANY_TOKENS = "HOST_TOO_MANY_TOKENS"  # more tokens than the job asked for
    URL_REFUSED = "HOST_URL_REFUSED"  # its registered URL points into a private network
