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
