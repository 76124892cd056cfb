"""The one error type of accounts and billing, with machine codes the gateway maps to HTTP."""

from __future__ import annotations


class BillingError(Exception):
    """`code` is machine-readable; `permanent` means retrying the same call cannot succeed."""

    code = "BILLING_ERROR"
    permanent = True

    def __init__(self, message: str):
        super().__init__(f"{self.code}: {message}")
        self.message = message


class InsufficientFunds(BillingError):
    """The balance cannot cover the reservation (HTTP 402)."""

    code = "INSUFFICIENT_FUNDS"

    def __init__(self, *, required_wei: int, available_wei: int):
        super().__init__(f"{required_wei} wei required, {available_wei} wei available")
        self.required_wei = required_wei
        self.available_wei = available_wei


class ReservationClosed(BillingError):
    """The reservation was already settled or released in a different way (HTTP 409)."""

    code = "RESERVATION_CLOSED"


class InvalidAmount(BillingError):
    """An amount or split that does not add up (a programming error; HTTP 500)."""

    code = "INVALID_AMOUNT"


class ReferenceInUse(BillingError):
    """The job or request reference already has a different reservation (HTTP 409)."""

    code = "REFERENCE_IN_USE"


class TooManyKeys(BillingError):
    """The account already has as many live API keys as it may (HTTP 409)."""

    code = "TOO_MANY_KEYS"
