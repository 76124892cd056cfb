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


class InvalidAddress(BillingError):
    """Not an Ethereum address (HTTP 400)."""

    code = "INVALID_ADDRESS"


class UnlinkedAddress(BillingError):
    """A withdrawal to an address the account has not linked by Sign-In with Ethereum
    (HTTP 400)."""

    code = "UNLINKED_ADDRESS"


class WithdrawalTooSmall(BillingError):
    """A withdrawal below ACCOUNTS_WITHDRAWAL_MIN_WEI (HTTP 400)."""

    code = "WITHDRAWAL_TOO_SMALL"


class DailyLimitExceeded(BillingError):
    """The withdrawal would take the last 24 hours' withdrawals over
    ACCOUNTS_WITHDRAWAL_DAILY_LIMIT_WEI (HTTP 429)."""

    code = "DAILY_LIMIT_EXCEEDED"


class AddressTaken(BillingError):
    """The wallet is linked to another user (HTTP 409)."""

    code = "ADDRESS_TAKEN"


class NotResolvable(BillingError):
    """An unattributed deposit that is already assigned or refunded, or a payout not
    awaiting approval (HTTP 409)."""

    code = "NOT_RESOLVABLE"


class SiweError(BillingError):
    """A Sign-In with Ethereum message that does not prove anything (HTTP 401). `code` is
    one of SIWE_MALFORMED, SIWE_BAD_SIGNATURE, SIWE_WRONG_DOMAIN, SIWE_WRONG_CHAIN,
    SIWE_EXPIRED, SIWE_NOT_YET_VALID, SIWE_REPLAYED, SIWE_UNKNOWN_NONCE, SIWE_NO_ACCOUNT."""

    def __init__(self, code: str, message: str):
        self.code = code
        super().__init__(message)
