"""What a host sends us, taken in within bounds and checked before anything uses it.

A host is a stranger, and its bytes land in our web and Celery processes. So every frame
and every HTTP answer from a host is read within the bounds of `Limits` (settings, see
docs/client.md, "Limits"), and parsed strictly against the protocol: JSON that does not
parse, an unknown message type, a missing field, a field of the wrong type ("3" is not a
number here) are refused. Anything refused is a ClientError with a HostFault code, never a
KeyError or TypeError: the host has failed, and the runner goes on with the next one.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import TypeVar

import aiohttp
from django.conf import settings
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from marketplace.client.errors import ClientError, HostFault
from marketplace.protocol import Control, ErrorData, HostMessage

M = TypeVar("M", bound=BaseModel)


@dataclass(frozen=True)
class Limits:
    message_bytes: int  # a frame, the same frame inflated, an HTTP answer's body
    compression_ratio: int  # inflated size over compressed size, for one frame
    token_chars: int  # one token's text
    job_chars: int  # the job's whole text, the earlier hosts' part included

    @classmethod
    def from_settings(cls) -> Limits:
        return cls(message_bytes=settings.MARKETPLACE_MAX_MESSAGE_BYTES,
                   compression_ratio=settings.MARKETPLACE_MAX_COMPRESSION_RATIO,
                   token_chars=settings.MARKETPLACE_MAX_TOKEN_CHARS,
                   job_chars=settings.MARKETPLACE_MAX_JOB_CHARS)


def fault(code: str, message: str) -> ClientError:
    """The host failed: try the next one."""
    return ClientError(code, message, permanent=False)


def _first_error(exc: ValidationError) -> str:
    err = exc.errors(include_url=False)[0]
    where = ".".join(str(p) for p in err.get("loc", ())) or "message"
    return f"{where}: {err.get('msg')}"


def inflate(frame: bytes, limits: Limits) -> bytes:
    """A gzip frame's content. zlib is asked for one byte more than the bound and no
    more, so a frame that would inflate to a gigabyte costs us the bound, not the
    gigabyte."""
    inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)  # gzip only
    try:
        content = inflater.decompress(frame, limits.message_bytes + 1)
    except zlib.error as exc:
        raise fault(HostFault.MALFORMED, f"a compressed frame does not inflate: {exc}") \
            from None
    if len(content) > limits.message_bytes:
        raise fault(HostFault.TOO_LARGE, f"a compressed frame of {len(frame)} bytes inflates "
                    f"past {limits.message_bytes} bytes")
    if not inflater.eof or inflater.unused_data:
        raise fault(HostFault.MALFORMED, "a compressed frame is not one whole gzip stream")
    if len(content) > limits.compression_ratio * len(frame):
        raise fault(HostFault.COMPRESSION_RATIO, f"a compressed frame of {len(frame)} bytes "
                    f"inflates to {len(content)} bytes, more than "
                    f"{limits.compression_ratio} times its size")
    return content


def host_message(data: str | bytes):
    """One message of the stream: Challenge, TokenMessage or Control."""
    try:
        return HostMessage.validate_json(data, strict=True)
    except ValidationError as exc:
        raise fault(HostFault.MALFORMED, f"a message does not follow the protocol: "
                    f"{_first_error(exc)}") from None


def control_data(message: Control, model: type[M]) -> M:
    """The data of an end or error message, checked."""
    try:
        return model.model_validate(message.data, strict=True)
    except ValidationError as exc:
        raise fault(HostFault.MALFORMED, f"its {message.type} message does not follow the "
                    f"protocol: {_first_error(exc)}") from None


async def read_body(response: aiohttp.ClientResponse, limits: Limits) -> bytes:
    """An HTTP answer's body as sent (the pool inflates nothing), at most the bound."""
    declared = response.content_length
    if declared is not None and declared > limits.message_bytes:
        raise fault(HostFault.TOO_LARGE, f"an answer of {declared} bytes is over the "
                    f"{limits.message_bytes}-byte bound")
    body = bytearray()
    async for chunk in response.content.iter_any():
        body += chunk
        if len(body) > limits.message_bytes:
            raise fault(HostFault.TOO_LARGE, f"an answer goes on past the "
                        f"{limits.message_bytes}-byte bound")
    return bytes(body)


def parse_body(body: bytes, model: type[M]) -> M:
    try:
        return model.model_validate_json(body, strict=True)
    except ValidationError as exc:
        raise fault(HostFault.MALFORMED, f"an answer does not follow the protocol: "
                    f"{_first_error(exc)}") from None


# ---- what the client reads of the HTTP answers --------------------------------------------
# Only the fields the client uses are checked; others are ignored, so a host of a later
# version that adds a field is still understood.

class _Seen(BaseModel):
    model_config = ConfigDict(populate_by_name=True, extra="ignore")


class SeenModel(_Seen):
    id: str = Field(max_length=100)


class SeenQueue(_Seen):
    length: int = Field(ge=0)
    capacity: int = Field(ge=0)


class SeenChannelTerms(_Seen):
    """How the host takes channel payments (protocol.ChannelTerms)."""

    contract: str = Field(pattern=r"^0x[0-9a-fA-F]{40}$")
    credit_limit_wei: str = Field(alias="creditLimitWei", pattern=r"^[0-9]{1,40}$")
    vouchers_every: int = Field(alias="vouchersEvery", ge=1, le=4096)


class SeenCapabilities(_Seen):
    """GET /v1/capabilities."""

    models: list[SeenModel] = Field(max_length=1000)
    queue: SeenQueue | None = None
    channels: SeenChannelTerms | None = None


class SeenTerms(_Seen):
    price_per_token: str = Field(alias="pricePerToken", pattern=r"^[0-9]{1,40}$")


class SeenQuote(_Seen):
    """POST /v1/quote, answered 200."""

    accepted: bool
    terms: SeenTerms | None = None
    counter: SeenTerms | None = None
    reason: str | None = Field(default=None, max_length=2000)


class SeenRefusal(_Seen):
    """An error body: {"type": "error", "data": {"code", "message"}}."""

    data: ErrorData

