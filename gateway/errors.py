"""The gateway's one error type: a machine code, a message for people, and extra fields
(e.g. `required` and `available` for INSUFFICIENT_FUNDS) that go into the error body."""

from __future__ import annotations


class GatewayError(Exception):
    """A request the gateway cannot carry out. gateway.api.errors maps `code` to an
    HTTP status; `extra` values are added to the JSON error as they are."""

    def __init__(self, code: str, message: str, **extra):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.extra = extra
