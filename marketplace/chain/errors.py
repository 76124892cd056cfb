"""One error type for everything that goes wrong on or on the way to the chain."""

from __future__ import annotations

from observability.errors import urls_redacted


class ChainError(Exception):
    """`code` is machine-readable (a contract's custom error name, or one of ours);
    `permanent` means sending the same thing again cannot succeed."""

    def __init__(self, code: str, message: str, *, permanent: bool, tx_hash: str | None = None):
        message = urls_redacted(message)
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.permanent = permanent
        self.tx_hash = tx_hash
