"""The wire protocol between clients and hosts: message shapes and error codes.

Shared by the host (marketplace.host) and the client (marketplace.client); it imports
neither, nor Django.

WebSocket /v1/stream, in order (protocol 2):
  host   → {"type": "challenge", "nonce": hex, "version": 2}
           (or, when it is at a limit, an error with code BUSY and close 1013)
  client → StreamInit {"type": "init", "version", "jobId", "nodeId", "checkpoint"?,
            "compression"?, "signature", "request"?}
           signature = EIP-191 personal_sign of challenge_message(nonce, jobId, nodeId) by
           the job's client; `request` (GenerationRequest) is required the first time.
  host   → {"type": "token", "index", "content", "timestamp",
            "metadata": {"id": token id, "logprob": log-probability}} ...
           control: {"type": "pause"|"resume"|"checkpoint"|"error"|"end", "data": {...}}
  client → {"type": "ack", "index"}  (flow control)  ·  {"type": "cancel"}
Token indexes start at 0. Reconnecting with checkpoint=N resumes at token N+1.
Every generated token is sent, one message each, even one whose text is empty (a token
holding part of a UTF-8 character): a verifier re-scores the token ids.

Protocol 2 makes generation checkable (marketplace.sampling): the request carries the
client's sampling secret (`seed`, committed with the prompt hash), the host samples with
the key it derives from it, and each token message reports the token's id and its
log-probability. Later additions ride on the same messages: a payment voucher is one
more client message, an encrypted stream wraps each of these messages whole.
Everything the host sends parses with `HostMessage` (Challenge | TokenMessage | Control).

HTTP: GET /v1/capabilities → Capabilities; POST /v1/quote QuoteRequest → QuoteResponse;
refusals are `error(code, message)` bodies with a 4xx/5xx status.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

PROTOCOL_VERSION = 2
MAX_MESSAGE_BYTES = 64 * 1024
MAX_PROMPT_CHARS = 16_000


class Code:
    MALFORMED = "MALFORMED"
    TOO_LARGE = "TOO_LARGE"
    UNSUPPORTED_VERSION = "UNSUPPORTED_VERSION"
    UNKNOWN_MODEL = "INVALID_MODEL"
    JOB_NOT_FOUND = "JOB_NOT_FOUND"
    NOT_YOUR_JOB = "NOT_YOUR_JOB"
    BAD_SIGNATURE = "BAD_SIGNATURE"
    REPLAYED_NONCE = "REPLAYED_NONCE"
    PROMPT_MISMATCH = "PROMPT_MISMATCH"
    REQUEST_REQUIRED = "REQUEST_REQUIRED"
    BAD_CHECKPOINT = "BAD_CHECKPOINT"
    BUSY = "BUSY"  # the host is at a limit: try another host
    HANDSHAKE_TIMEOUT = "HANDSHAKE_TIMEOUT"
    CHAIN_UNAVAILABLE = "CHAIN_UNAVAILABLE"
    INTERNAL = "INTERNAL"


class _Message(BaseModel):
    model_config = ConfigDict(populate_by_name=True, extra="forbid")


class GenerationRequest(_Message):
    """What to generate. Its digest is the prompt hash committed on chain with the job."""

    model: str = Field(min_length=1, max_length=100)
    prompt: str = Field(min_length=1, max_length=MAX_PROMPT_CHARS)
    prefix: str = Field(default="", max_length=MAX_PROMPT_CHARS,
                        description="text already delivered by an earlier host, to continue")
    max_tokens: int = Field(alias="maxTokens", ge=1, le=4096)
    temperature: float = Field(default=0.7, ge=0.0, le=2.0)
    seed: str = Field(default_factory=lambda: secrets.token_hex(32),
                      pattern=r"^[0-9a-f]{64}$",
                      description="the client's sampling secret (marketplace.sampling)")

    def canonical(self) -> bytes:
        return json.dumps(self.model_dump(by_alias=True), sort_keys=True,
                          separators=(",", ":"), ensure_ascii=False).encode()

    def digest(self) -> bytes:
        return hashlib.sha256(self.canonical()).digest()


class StreamInit(_Message):
    type: Literal["init"] = "init"
    version: int
    job_id: int = Field(alias="jobId", ge=1)
    node_id: str = Field(alias="nodeId", min_length=42, max_length=42)
    checkpoint: int | None = Field(default=None, ge=-1)
    compression: Literal["gzip"] | None = None
    signature: str = Field(min_length=130, max_length=140)
    request: GenerationRequest | None = None


class Ack(_Message):
    type: Literal["ack"]
    index: int = Field(ge=-1)


class Cancel(_Message):
    type: Literal["cancel"]


class QuoteRequest(_Message):
    model: str
    max_tokens: int = Field(alias="maxTokens", ge=1, le=4096)
    max_price_per_token: str = Field(alias="maxPricePerToken", pattern=r"^[0-9]{1,40}$")


class QuoteTerms(_Message):
    model: str
    max_tokens: int = Field(alias="maxTokens")
    price_per_token: str = Field(alias="pricePerToken", description="wei, as a string")


class QuoteResponse(_Message):
    """`accepted` with the host's `terms`, or a `counter` offer at its price."""

    accepted: bool
    terms: QuoteTerms | None = None
    counter: QuoteTerms | None = None
    reason: str | None = None


class ModelPrice(_Message):
    id: str
    price_per_token: str = Field(alias="pricePerToken", description="wei, as a string")


class Load(_Message):
    active: int = Field(description="generations running now")
    slots: int = Field(description="generations the host runs at once")
    served: int


class Queue(_Message):
    length: int
    capacity: int


class Capabilities(_Message):
    """GET /v1/capabilities."""

    version: str
    protocol: int
    address: str
    public_key: str = Field(alias="publicKey")
    backend: str
    models: list[ModelPrice]
    load: Load
    queue: Queue


# ---- what the host sends on /v1/stream ------------------------------------------------

class Challenge(_Message):
    type: Literal["challenge"]
    nonce: str = Field(min_length=16, max_length=128)
    version: int


class TokenMeta(_Message):
    """What a verifier needs of each token: its id and its log-probability at
    temperature 1 under the model (marketplace.sampling)."""

    id: int = Field(ge=0, lt=2**31)
    logprob: float = Field(le=0.0, ge=-1e4)


class TokenMessage(_Message):
    type: Literal["token"]
    index: int = Field(ge=0)
    content: str
    timestamp: float
    metadata: TokenMeta | None = None


class Control(_Message):
    """pause / resume / checkpoint carry {"index": last token sent}; error carries
    {"code", "message"}; end carries {"tokens", "resultHash", "cid", "cancelled", "error"}."""

    type: Literal["pause", "resume", "checkpoint", "error", "end"]
    data: dict[str, Any]


class _Data(BaseModel):
    # A control message's data: the fields named here are checked, others are ignored.
    model_config = ConfigDict(populate_by_name=True, extra="ignore")


class EndData(_Data):
    tokens: int = Field(ge=0)
    result_hash: str | None = Field(default=None, alias="resultHash", max_length=66)
    cid: str | None = Field(default=None, max_length=200)
    cancelled: bool = False
    error: str | None = None


class ErrorData(_Data):
    code: str = Field(pattern=r"^[A-Z][A-Z0-9_]{0,39}$")
    message: str = Field(default="", max_length=2000)


HostMessage = TypeAdapter(Annotated[Challenge | TokenMessage | Control,
                                    Field(discriminator="type")])


def challenge_message(nonce: str, job_id: int, node_id: str) -> str:
    """The text a client signs to prove it is the job's client, bound to this host."""
    return f"inkmarket stream auth\nnonce: {nonce}\njob: {job_id}\nnode: {node_id.lower()}"


def error(code: str, message: str) -> dict:
    return {"type": "error", "data": {"code": code, "message": message}}
