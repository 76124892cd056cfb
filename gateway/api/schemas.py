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
from pydantic import AfterValidator, BeforeValidator, ConfigDict, Field, Strict, TypeAdapter
from pydantic_core import PydanticCustomError

from accounts.money import WeiText
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
Wei = WeiText

# A price ceiling in wei: a decimal string (a JSON number loses precision past 2^53) or
# an integer. Its range is checked by the server (400 INVALID_MAX_PRICE); the schema
# publishes the same bounds (marketplace.services.MAX_PRICE_CEILING_WEI).
PriceString = Annotated[str, Field(json_schema_extra=published(
    pattern=rf"^[1-9][0-9]{{0,{len(str(MAX_PRICE_CEILING_WEI)) - 1}}}$"))]
PriceInteger = Annotated[int, BeforeValidator(_json_integer), Strict(), Field(
    json_schema_extra=published(minimum=1, maximum=MAX_PRICE_CEILING_WEI))]
MAX_PRICE_DESCRIPTION = (
    "Wei per token at most (1 gwei = 10^9 wei): hosts asking more are not used, and the "
    "request reserves at the dearest host it would use. A decimal string or an integer, 1 "
    "to 10^28 - 1 (else 400 INVALID_MAX_PRICE); no host within it is a 503 "
    "NO_HOSTS_WITHIN_PRICE")

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
    """A message; in upstream mode it goes on as it came (with a tool call's fields)."""

    model_config = ConfigDict(extra="allow")
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: Text | list[TextPart] | None = None
    name: Text | None = None
    tool_calls: list[dict[str, Any]] | None = None
    tool_call_id: Text | None = None


OPTION = ("Honoured or refused (400 UNSUPPORTED_PARAMETER or INVALID_PARAMETER, with "
          "`param`), as docs/gateway.md's table of chat parameters says")


def by_mode(*, marketplace: dict, upstream: dict) -> Callable[[dict], None]:
    """JSON Schema keywords of an OpenAI chat parameter in the gateway's mode, as the
    server holds it (gateway.chat.chat_options): an upstream gets more of them."""
    def extra(schema: dict) -> None:
        schema.update(upstream if settings.GATEWAY_UPSTREAM_URL else marketplace)
    return extra


ONLY_NULL = {"type": "null"}
PENALTY = by_mode(marketplace={"minimum": 0, "maximum": 0},
                  upstream={"minimum": -2, "maximum": 2})
STOP_TEXT = {"minLength": 1, "maxLength": 200}


class ChatIn(Schema):
    """OpenAI's chat completion request. Beyond what a schema can say: on the marketplace
    the last message must be the user's; the prompt the messages make must not be blank nor
    longer than
    GATEWAY_MAX_PROMPT_CHARS (400 INVALID_REQUEST, PROMPT_TOO_LONG). OpenAI's parameters
    below are each honoured or refused with a 400 that names them; on the marketplace,
    those that would change how hosts sample are refused."""

    model_config = ConfigDict(extra="allow")
    model: str = Field(json_schema_extra=MODEL)
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: Integer | None = Field(None, json_schema_extra=MAX_TOKENS)
    max_completion_tokens: Integer | None = Field(None, json_schema_extra=MAX_TOKENS)
    temperature: Number | None = Field(None, json_schema_extra=TEMPERATURE)
    max_price_per_token: PriceString | PriceInteger | None = Field(
        None, description=MAX_PRICE_DESCRIPTION)
    stream: Boolean = False
    stop: Text | list[Text] | None = Field(None, description=OPTION, json_schema_extra={
        **STOP_TEXT, "maxItems": 4, "items": STOP_TEXT})
    seed: Integer | None = Field(None, description=OPTION, json_schema_extra=by_mode(
        marketplace=ONLY_NULL, upstream={}))
    n: Integer | None = Field(None, description=OPTION + "; one answer a request",
                             json_schema_extra={"minimum": 1, "maximum": 1})
    user: Text | None = Field(None, description=OPTION, json_schema_extra={"maxLength": 256})
    logprobs: Boolean | None = Field(None, description=OPTION)
    top_logprobs: Integer | None = Field(
        None, description=OPTION + "; only with logprobs: true", json_schema_extra=by_mode(
            marketplace={"minimum": 0, "maximum": 0}, upstream={"minimum": 0, "maximum": 20}))
    response_format: dict[str, Any] | None = Field(
        None, description=OPTION, json_schema_extra=by_mode(
            marketplace={"required": ["type"], "properties": {"type": {"const": "text"}}},
            upstream={"required": ["type"], "properties": {"type": {
                "enum": ["text", "json_object", "json_schema"]}}}))
    presence_penalty: Number | None = Field(None, description=OPTION,
                                            json_schema_extra=PENALTY)
    frequency_penalty: Number | None = Field(None, description=OPTION,
                                             json_schema_extra=PENALTY)
    top_p: Number | None = Field(None, description=OPTION, json_schema_extra=by_mode(
        marketplace=ONLY_NULL, upstream={"minimum": 0, "maximum": 1}))
    logit_bias: dict[str, Number] | None = Field(
        None, description=OPTION, json_schema_extra=by_mode(marketplace={"maxProperties": 0},
                                                            upstream={}))
    stream_options: dict[str, Any] | None = Field(
        None, description=OPTION + "; only with stream: true", json_schema_extra={
            "properties": {"include_usage": {"type": "boolean"}},
            "additionalProperties": False})
    tools: list[dict[str, Any]] | None = Field(None, description=OPTION,
                                               json_schema_extra=by_mode(
                                                   marketplace={"maxItems": 0}, upstream={}))
    tool_choice: str | dict[str, Any] | None = Field(
        None, description=OPTION, json_schema_extra=by_mode(marketplace=ONLY_NULL,
                                                            upstream={}))
    parallel_tool_calls: Boolean | None = Field(
        None, description=OPTION, json_schema_extra=by_mode(marketplace=ONLY_NULL,
                                                            upstream={}))
    functions: list[dict[str, Any]] | None = Field(
        None, description=OPTION + "; OpenAI's older form of tools, refused",
        json_schema_extra=ONLY_NULL)
    function_call: str | dict[str, Any] | None = Field(
        None, description=OPTION + "; OpenAI's older form of tool_choice, refused",
        json_schema_extra=ONLY_NULL)


# OpenAI's fields of a chat request that gateway.chat.chat_options judges.
CHAT_OPTIONS = ("stop", "seed", "n", "user", "logprobs", "top_logprobs", "response_format",
                "presence_penalty", "frequency_penalty", "stream_options", "tools",
                "tool_choice", "parallel_tool_calls", "functions", "function_call", "top_p",
                "logit_bias")


class ChatAnswer(Schema):
    role: Literal["assistant"]
    content: str | None
    tool_calls: list[dict[str, Any]] | None = Field(None, description="an upstream's")
    refusal: str | None = Field(None, description="an upstream's")


class ChatLogprobs(Schema):
    content: list[dict[str, Any]] | None
    refusal: list[dict[str, Any]] | None = None


class ChatChoice(Schema):
    index: int
    message: ChatAnswer
    finish_reason: Literal["stop", "length", "tool_calls", "content_filter"]
    logprobs: ChatLogprobs | None


class ChatUsage(Schema):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class ChatInkmarket(Schema):
    request_id: str
    host: str | None
    job_id: str | None
    finish_reason: str = Field(description="stop, length or cancelled; in upstream mode, "
                               "the upstream's own (tool_calls, ...)")


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
    min_price_per_token: Wei | None = Field(description="the cheapest host's price per token")
    median_price_per_token: Wei | None = Field(
        description="the median host's price per token")
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
                "delta": {"type": "object", "properties": {
                    "role": {"const": "assistant"}, "content": {"type": ["string", "null"]},
                    "tool_calls": {"type": "array"}}},
                "finish_reason": {"enum": ["stop", "length", "tool_calls", "content_filter",
                                           None]},
                "logprobs": {"anyOf": [{"type": "null"}, {"type": "object"}]}}}},
        "usage": ChatUsage.model_json_schema(),
        "cached": {"type": "boolean"},
        "cost": TypeAdapter(Wei).json_schema()}}
CHAT_ERROR = {"type": "object", "required": ["error"], "properties": {"error": {
    "type": "object", "required": ["code", "message"],
    "properties": {"code": _STRING, "message": _STRING}}}}
CHAT_EVENT = {"type": "object", "required": ["data"], "properties": {"data": {"anyOf": [
    {"const": "[DONE]"},
    {"type": "string", "contentMediaType": "application/json",
     "contentSchema": {"anyOf": [CHAT_CHUNK, CHAT_ERROR]}}]}}}
