"""The wire protocol between clients and hosts: message shapes and error codes.

Shared by the host (marketplace.host) and the client (marketplace.client); it imports
neither, nor Django.

WebSocket /v1/stream, in order (protocol 3, encrypted: marketplace.e2e, docs/encryption.md):
  host   → {"type": "challenge", "nonce": hex, "version": 3, "publicKey": hex}
           publicKey: the host's registered chain key, compressed (33 bytes). The client
           checks that it is the key of the host's address in NodeRegistry first.
           (When the host is at a limit: an error with code BUSY and close 1013.)
  client → StreamInit {"type": "init", "version": 3, "jobId", "nodeId", "checkpoint"?,
            "ephemeralKey", "salt", "signature", "sealed"}
           signature = EIP-191 personal_sign of challenge_message(nonce, jobId, nodeId,
           ephemeralKey, salt) by the job's client. `sealed` (base64) is the client's
           frame 0: Opening {"type": "open", "request"?}; `request` (GenerationRequest)
           is required the first time. The request never crosses the network in clear.
  after the init, every message both ways is one binary frame sealed by marketplace.e2e,
  holding one of the JSON messages below:
  host   → {"type": "token", "index", "content", "timestamp",
            "metadata": {"id": token id, "logprob": log-probability}} ...
           control: {"type": "pause"|"resume"|"checkpoint"|"error"|"end", "data": {...}}
  client → {"type": "ack", "index"}  (flow control)  ·  {"type": "cancel"}
           · {"type": "voucher", "channelId", "amount", "signature"}  (a channel stream)
A refusal of the init itself (a bad signature, an unknown job) is a plaintext error: no
session exists yet, and it carries nothing of the request.
Token indexes start at 0. Reconnecting with checkpoint=N resumes at token N+1, on a new
connection with its own keys.
Every generated token is sent, one message each, even one whose text is empty (a token
holding part of a UTF-8 character): a verifier re-scores the token ids.

A stream paid through a payment channel (docs/sessions.md) carries `channelId` in its
init instead of naming an on-chain job: `jobId` is then the client's own id for the
stream (unique per client), the signature must be the channel's payer's, and nothing of
the job goes on chain. The client pays as it receives: a voucher (the payer's EIP-712
signature of the channel's cumulative amount) at most every `vouchersEvery` tokens and
one at the end. The host stores each voucher before it sends more, and when unpaid work
on the channel reaches its `creditLimitWei` (capabilities) it sends
{"type": "pause", "data": {"index", "reason": "PAYMENT_REQUIRED", "owedWei"}}, then
"resume" once paid, or error PAYMENT_REQUIRED and the end of the stream if no voucher
comes in time. Channel streams are encrypted (protocol 3) only.

Protocol 2 is the same conversation in clear text frames (the request in the init, and
an optional gzip `compression`); a host still speaks it, and a client uses it only when
MARKETPLACE_STREAM_ENCRYPTION is off.

Generation is checkable (marketplace.sampling): the request carries the client's sampling
secret (`seed`, committed with the prompt hash), the host samples with the key it derives
from it, and each token message reports the token's id and its log-probability. The
result hash the host submits on chain (or, on a channel stream, only sends in its end
message) is a commitment keyed from the same secret (marketplace.e2e.result_commitment).
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

PROTOCOL_VERSION = 3
PLAINTEXT_VERSION = 2  # the same messages unencrypted; hosts still speak it
VERSIONS = frozenset({PLAINTEXT_VERSION, PROTOCOL_VERSION})
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
    # An encrypted stream's frames or keys (marketplace.e2e.Code has them all).
    E2E_BAD_KEY = "E2E_BAD_KEY"
    E2E_TAMPERED = "E2E_TAMPERED"
    E2E_REPLAYED = "E2E_REPLAYED"
    E2E_OUT_OF_ORDER = "E2E_OUT_OF_ORDER"
    E2E_MALFORMED = "E2E_MALFORMED"
    # A channel stream's payment (marketplace.host.vouchers has the voucher's own codes).
    PAYMENT_REQUIRED = "PAYMENT_REQUIRED"
    CHANNELS_UNSUPPORTED = "CHANNELS_UNSUPPORTED"


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
    signature: str = Field(min_length=130, max_length=140)
    # A channel stream: paid by vouchers on this channel, no job on chain.
    channel_id: int | None = Field(default=None, alias="channelId", ge=1, lt=2**64)
    # protocol 2 only
    compression: Literal["gzip"] | None = None
    request: GenerationRequest | None = None
    # protocol 3 only
    ephemeral_key: str | None = Field(default=None, alias="ephemeralKey",
                                      pattern=r"^0x[0-9a-f]{66}$")
    salt: str | None = Field(default=None, pattern=r"^0x[0-9a-f]{64}$")
    sealed: str | None = Field(default=None, max_length=MAX_MESSAGE_BYTES,
                               pattern=r"^[A-Za-z0-9+/]+={0,2}$")


class Opening(_Message):
    """The client's first sealed message (frame 0, carried in StreamInit.sealed)."""

    type: Literal["open"]
    request: GenerationRequest | None = None


class Ack(_Message):
    type: Literal["ack"]
    index: int = Field(ge=-1)


class Cancel(_Message):
    type: Literal["cancel"]


class VoucherMessage(_Message):
    """A payment on a channel stream: the payer's signature (65 bytes, hex) of the
    channel's cumulative `amount` in wei (marketplace.chain.channels)."""

    type: Literal["voucher"]
    channel_id: int = Field(alias="channelId", ge=1, lt=2**64)
    amount: str = Field(pattern=r"^[0-9]{1,78}$")
    signature: str = Field(pattern=r"^0x[0-9a-f]{130}$")


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


class ChannelTerms(_Message):
    """How a host takes payment through channels (absent: per-job escrow only)."""

    contract: str = Field(pattern=r"^0x[0-9a-fA-F]{40}$")
    credit_limit_wei: str = Field(alias="creditLimitWei", pattern=r"^[0-9]{1,40}$",
                                  description="unpaid work the host does before it waits")
    vouchers_every: int = Field(alias="vouchersEvery", ge=1, le=4096,
                                description="tokens between the client's vouchers, at most")


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
    channels: ChannelTerms | None = None


# ---- what the host sends on /v1/stream ------------------------------------------------

class Challenge(_Message):
    type: Literal["challenge"]
    nonce: str = Field(min_length=16, max_length=128)
    version: int
    public_key: str | None = Field(default=None, alias="publicKey", max_length=140)


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


def challenge_message(nonce: str, job_id: int, node_id: str, ephemeral_key: str | None = None,
                      salt: str | None = None, channel_id: int | None = None) -> str:
    """The text a client signs to prove it is the job's client (or the channel's payer),
    bound to this host and, on an encrypted stream, to its ephemeral key and salt (nobody
    can swap them)."""
    text = f"inkmarket stream auth\nnonce: {nonce}\njob: {job_id}\nnode: {node_id.lower()}"
    if ephemeral_key is not None or salt is not None:
        text += f"\nkey: {ephemeral_key}\nsalt: {salt}"
    if channel_id is not None:
        text += f"\nchannel: {channel_id}"
    return text


def error(code: str, message: str) -> dict:
    return {"type": "error", "data": {"code": code, "message": message}}
