"""The client's one error type, with the codes callers map to answers."""

from __future__ import annotations

import re

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


# ---- what people are told -----------------------------------------------------------------
# A failure's own message may carry text from a host, from the chain's node or from an
# exception (a provider's RPC URL with its API key, a class name, a stack detail), so
# people are never shown it: they get a fixed message for its code and a reference to
# quote, and the detail goes to the log and the job's row.
PUBLIC_MESSAGES = {
    "RPC_UNAVAILABLE": "the blockchain node is not answering; try again in a few minutes",
    "CHAIN_UNAVAILABLE": "the blockchain node is not answering; try again in a few minutes",
    "NOT_DEPLOYED": "the marketplace is not set up on this chain; please tell the operators",
    "NO_HOSTS_AVAILABLE": "no host serves this model right now; try again later",
    "HOST_UNAVAILABLE": "the host stopped answering and no other host could finish the job; "
                        "try again",
    "NO_RESULT": "the host did not deliver its result in time; try again",
    "QUALITY_TOO_LOW": "the hosts' results failed our quality checks; try again",
    "MALFORMED": "a host broke the protocol; try again",
    "BUSY": "every host is busy; try again in a little while",
    "INVALID_MODEL": "no host can run this model",
    "PRICE_TOO_HIGH": "every host asked more than the price limit; try again later",
    "QUOTE_REFUSED": "the hosts refused the job's terms; try again later",
    "INTERRUPTED": "the job was interrupted; nothing was charged for text that did not arrive",
    "TIMEOUT": "the job took too long; try again",
    "CANCELLED": "the job was cancelled",
    "BLOCKED": "this account may not use the marketplace",
    "UPSTREAM_ERROR": "the model server failed; try again",
    "WORKER_LOST": "the worker running the request stopped; try again",
    "RESULT_LOST": "an earlier attempt was charged but its result was not recorded; "
                   "please tell the operators",
    "API_KEY_DELETED": "the API key of the batch was deleted",
    "INTERNAL": "something went wrong on our side; try again",
}
FAILED_MESSAGE = "the job failed on the marketplace; try again"


# Codes that only our own code gives, about the request itself (validation, the caller's
# balance, limits): their messages are our words and are shown as they are. Hosts cannot
# give them (`host_code`).
REQUEST_CODES = frozenset({
    "INVALID_REQUEST", "UNKNOWN_MODEL", "PROMPT_TOO_LONG", "INVALID_TEMPERATURE",
    "INVALID_MAX_TOKENS", "INVALID_MAX_PRICE", "NO_HOSTS_WITHIN_PRICE",
    "INVALID_PARAMETER", "UNSUPPORTED_PARAMETER", "UNAUTHENTICATED", "FORBIDDEN",
    "NOT_FOUND", "METHOD_NOT_ALLOWED",
    "PAYLOAD_TOO_LARGE", "RATE_LIMITED", "INSUFFICIENT_FUNDS", "RESERVATION_CLOSED",
    "REFERENCE_IN_USE", "NOT_CANCELLABLE", "QUOTA_EXCEEDED", "INVALID_AMOUNT",
    "BILLING_ERROR", "BATCH_EMPTY", "BATCH_TOO_LARGE", "INVALID_WEBHOOK_URL",
    "URL_INVALID", "URL_NOT_ALLOWED", "URL_SCHEME_NOT_ALLOWED", "URL_UNRESOLVABLE",
    "BATCH_FINISHED", "TOO_MANY_KEYS", "API_KEY_REVOKED", "API_KEY_EXPIRED", "API_KEY_DELETED",
})
_CODE = re.compile(r"[A-Z][A-Z0-9_]{0,39}")


def public_message(code: str) -> str:
    """The fixed message people see for a failure with this code (whatever its detail)."""
    return PUBLIC_MESSAGES.get(code, FAILED_MESSAGE)


def shown_message(code: str, message: str) -> str:
    """What an answer says for `code`: our own words about the request for a request
    code, else the failure's fixed message."""
    return message if code in REQUEST_CODES else public_message(code)


def host_code(code: object) -> str:
    """A code a host reported, as we pass it on: a host speaks for itself, never in the
    codes of our own checks, and never in free text."""
    if not isinstance(code, str) or not _CODE.fullmatch(code) or code in REQUEST_CODES:
        return "HOST_ERROR"
    return code


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
    TLS_REQUIRED = "HOST_TLS_REQUIRED"  # not https/wss where the settings require it
    NO_ENCRYPTION = "HOST_NO_ENCRYPTION"  # it offers no encrypted stream (protocol < 3)
    # An encrypted stream's faults keep marketplace.e2e's codes: HOST_KEY_MISMATCH (its
    # key is not its registered address's), E2E_BAD_KEY, E2E_TAMPERED, E2E_REPLAYED,
    # E2E_OUT_OF_ORDER, E2E_MALFORMED, UNSUPPORTED_VERSION.
