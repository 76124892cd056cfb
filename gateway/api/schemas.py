"""Shapes of the gateway's JSON, and what the published OpenAPI schema says of each field.

The range checks of a request are not made here but in gateway.inference.inference_validate
(and gateway.batch), which answer with codes of their own (UNKNOWN_MODEL, PROMPT_TOO_LONG,
INVALID_MAX_TOKENS, ...) and also check the batch items that workers run. The fields here
publish the same limits, read from the same settings each time the schema is made, so the
schema says what the server does (tests/gateway/test_schema.py holds the two together).
Checked here: the types, strictly as JSON Schema means them ("8" is not an integer, nor
true a number), and text that cannot be stored (NUL, an unpaired surrogate).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, Literal

from django.conf import settings
from ninja import Schema
from pydantic import AfterValidator, BeforeValidator, ConfigDict, Field, Strict
from pydantic_core import PydanticCustomError

from marketplace.services import MAX_PRICE_CEILING_WEI

# What str.strip() removes (every whitespace character of Unicode is below U+3001): a
# prompt with another character, and no NUL, is not empty.
WHITESPACE = "".join(c for c in map(chr, range(0x3001)) if c.isspace())
NO_NUL = r"^[^\x00]*$"
PROMPT = rf"^[^\x00]*[^\x00{WHITESPACE}][^\x00]*$"


def published(**keywords: Any) -> Callable[[dict], None]:
    """JSON Schema keywords for a field that the server enforces itself; a callable value
    is read when the schema is made (a setting)."""
    def extra(schema: dict) -> None:
        schema.update({name: value() if callable(value) else value
                       for name, value in keywords.items()})
    return extra


def _json_integer(value: Any) -> Any:
    # JSON Schema counts 8.0 as an integer; "8" and true are not.
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _storable(value: str) -> str:
    # PostgreSQL's text holds no NUL, and UTF-8 no unpaired surrogate (which a JSON
    # "\ud800" escape still makes): refused here, not failed on when stored or sent.
    if "\x00" in value:
        raise PydanticCustomError("nul_character", "must not contain NUL (U+0000)")
    try:
        value.encode()
    except UnicodeEncodeError:
        raise PydanticCustomError("unpaired_surrogate",
                                  "must not contain an unpaired surrogate") from None
    return value


Text = Annotated[str, AfterValidator(_storable), Field(json_schema_extra=published(pattern=NO_NUL))]
Integer = Annotated[int, BeforeValidator(_json_integer), Strict()]
Number = Annotated[float, Strict()]
Boolean = Annotated[bool, Strict()]
Wei = Annotated[str, Field(pattern=r"^[0-9]+$", description="wei, as a decimal string")]

# A price ceiling in wei: a decimal string (a JSON number loses precision past 2^53) or
# an integer. Its range is checked by the server (400 INVALID_MAX_PRICE); the schema
# publishes the same bounds (marketplace.services.MAX_PRICE_CEILING_WEI).
PriceString = Annotated[str, Field(json_schema_extra=published(
    pattern=rf"^[1-9][0-9]{{0,{len(str(MAX_PRICE_CEILING_WEI)) - 1}}}$"))]
PriceInteger = Annotated[int, BeforeValidator(_json_integer), Strict(), Field(
    json_schema_extra=published(minimum=1, maximum=MAX_PRICE_CEILING_WEI))]
MAX_PRICE_DESCRIPTION = (
    "Wei per token at most: hosts asking more are not used, and the request reserves at "
    "the dearest host it would use. A decimal string or an integer, 1 to 10^28 - 1 "
    "(else 400 INVALID_MAX_PRICE); no host within it is a 503 NO_HOSTS_WITHIN_PRICE")

MODEL = published(enum=lambda: list(settings.GATEWAY_MODELS))
MAX_TOKENS = published(minimum=1, maximum=lambda: settings.GATEWAY_MAX_TOKENS)
TEMPERATURE = published(minimum=0, maximum=2)


class ErrorDetail(Schema):
    model_config = ConfigDict(extra="allow")
    code: str = Field(description="Machine-readable: INVALID_REQUEST, UNKNOWN_MODEL, "
                      "INSUFFICIENT_FUNDS, RATE_LIMITED, NO_HOSTS_AVAILABLE, ... "
                      "(docs/gateway.md lists them)")
    message: str = Field(description="For people")


class ErrorOut(Schema):
    """Every error of the gateway: a code, a message, and fields of the code's own
    (`required` and `available` with INSUFFICIENT_FUNDS, `index` in a batch, ...)."""

    model_config = ConfigDict(extra="allow")
    error: ErrorDetail


class InferenceIn(Schema):
    model: str = Field(json_schema_extra=MODEL, description="One of the network's models; "
                       "another is a 400 UNKNOWN_MODEL")
    prompt: Text = Field(json_schema_extra=published(
        minLength=1, maxLength=lambda: settings.GATEWAY_MAX_PROMPT_CHARS, pattern=PROMPT),
        description="Not blank, no NUL (400 INVALID_REQUEST); at most "
        "GATEWAY_MAX_PROMPT_CHARS characters (400 PROMPT_TOO_LONG)")
    max_tokens: Integer = Field(256, json_schema_extra=MAX_TOKENS,
                                description="Out of range is a 400 INVALID_MAX_TOKENS")
    temperature: Number = Field(0.7, json_schema_extra=TEMPERATURE,
                                description="Out of range is a 400 INVALID_TEMPERATURE")
    max_price_per_token: PriceString | PriceInteger | None = Field(
        None, description=MAX_PRICE_DESCRIPTION)


RequestState = Literal["running", "done", "failed", "cancelled"]
FinishReason = Literal["stop", "length", "cancelled"]


class InferenceOut(Schema):
    id: str
    object: Literal["inference"] = "inference"
    status: RequestState
    model: str
    text: str | None = None
    tokens: int = 0
    cost: Wei = "0"
    cached: bool = False
    finish_reason: FinishReason | None = None
    host: str | None = None
    job_id: str | None = None
    error: ErrorDetail | None = None
    poll: str | None = Field(None, description="Where to poll, with a 202")


class TextPart(Schema):
    model_config = ConfigDict(extra="allow")
    type: Literal["text"]
    text: Text = ""


class ChatMessage(Schema):
    model_config = ConfigDict(extra="allow")
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: Text | list[TextPart] | None = None


class ChatIn(Schema):
    """OpenAI's chat completion request; fields we do not use (n, top_p, user, …) are
    accepted and ignored. Beyond what a schema can say: the last message must be the
    user's, and the prompt the messages make must not be blank nor longer than
    GATEWAY_MAX_PROMPT_CHARS (400 INVALID_REQUEST, PROMPT_TOO_LONG)."""

    model_config = ConfigDict(extra="allow")
    model: str = Field(json_schema_extra=MODEL)
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: Integer | None = Field(None, json_schema_extra=MAX_TOKENS)
    max_completion_tokens: Integer | None = Field(None, json_schema_extra=MAX_TOKENS)
    temperature: Number | None = Field(None, json_schema_extra=TEMPERATURE)
    max_price_per_token: PriceString | PriceInteger | None = Field(
        None, description=MAX_PRICE_DESCRIPTION)
    stream: Boolean = False


class ChatAnswer(Schema):
    role: Literal["assistant"]
    content: str


class ChatChoice(Schema):
    index: int
    message: ChatAnswer
    finish_reason: Literal["stop", "length"]
    logprobs: None


class ChatUsage(Schema):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class ChatInkmarket(Schema):
    request_id: str
    host: str | None
    job_id: str | None
    finish_reason: FinishReason


class ChatCompletionOut(Schema):
    id: str
    object: Literal["chat.completion"]
    created: int
    model: str
    choices: list[ChatChoice]
    usage: ChatUsage
    cached: bool
    cost: Wei
    inkmarket: ChatInkmarket


class ModelHostOut(Schema):
    """One host answering for the model, with our own figures of it over `window_s`."""

    address: str
    price_per_token: Wei
    ttft_p50_ms: float | None = Field(
        description="Median time from the start of our stream to the first token.")
    tokens_per_s: float | None = Field(
        description="Median rate of our attempts from their first token to their last.")
    success_rate: float | None = Field(
        description="Accepted attempts over those that ended, failures counted only where "
                    "the host had the stream.")
    uptime: float | None = Field(description="Share of our capability probes it answered.")
    attempts: int = Field(description="Attempts counted in success_rate.")
    probes: int = Field(description="Probes counted in uptime.")


class ModelOut(Schema):
    id: str
    object: Literal["model"]
    created: int
    owned_by: str
    nodes: int
    available: bool
    min_price_per_token: Wei | None
    median_price_per_token: Wei | None
    ttft_ms: float | None = Field(description="Median of the hosts' TTFT p50 (ms).")
    tokens_per_s: float | None = Field(description="Median of the hosts' tokens per second.")
    window_s: int = Field(description="The window the figures are measured over (seconds).")
    hosts: list[ModelHostOut]


class ModelsOut(Schema):
    object: Literal["list"]
    data: list[ModelOut]


class UsageTotal(Schema):
    requests: int
    tokens: int
    cost: Wei


class UsageByModel(UsageTotal):
    model: str
    cached: int


class UsageByDay(UsageByModel):
    date: str = Field(json_schema_extra={"format": "date"})


class UsageOut(Schema):
    object: Literal["usage"]
    since: str = Field(json_schema_extra={"format": "date-time"})
    days: int
    total: UsageTotal
    by_model: list[UsageByModel]
    by_day: list[UsageByDay]


# One server-sent event of a streamed chat (`stream: true`): its `data` is a JSON chunk
# (the assistant's role first, then pieces of text, then the finish reason, then the
# usage, or an error when the job fails midway), or the closing [DONE]. In OpenAPI 3.1
# the schema of an event stream describes each event.
_STRING = {"type": "string"}
_INTEGER = {"type": "integer"}
CHAT_CHUNK = {
    "type": "object", "required": ["id", "object", "created", "model", "choices"],
    "properties": {
        "id": _STRING, "object": {"const": "chat.completion.chunk"}, "created": _INTEGER,
        "model": _STRING,
        "choices": {"type": "array", "items": {
            "type": "object", "required": ["index", "delta", "finish_reason", "logprobs"],
            "properties": {
                "index": _INTEGER,
                "delta": {"type": "object", "additionalProperties": False, "properties": {
                    "role": {"const": "assistant"}, "content": _STRING}},
                "finish_reason": {"enum": ["stop", "length", None]},
                "logprobs": {"type": "null"}}}},
        "usage": ChatUsage.model_json_schema(),
        "cached": {"type": "boolean"},
        "cost": {"type": "string", "pattern": "^[0-9]+$"}}}
CHAT_ERROR = {"type": "object", "required": ["error"], "properties": {"error": {
    "type": "object", "required": ["code", "message"],
    "properties": {"code": _STRING, "message": _STRING}}}}
CHAT_EVENT = {"type": "object", "required": ["data"], "properties": {"data": {"anyOf": [
    {"const": "[DONE]"},
    {"type": "string", "contentMediaType": "application/json",
     "contentSchema": {"anyOf": [CHAT_CHUNK, CHAT_ERROR]}}]}}}
