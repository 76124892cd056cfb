"""The writer for programs: JSON over django-ninja, with session auth and CSRF.

The published schema (/api/openapi.json) says what the server enforces: the prompt's
limits, the enums, the CSRF cookie and header a POST needs besides the session, and every
status an operation answers, each error in the one shape. tests/writer/test_api_schema.py
holds the two together."""

from __future__ import annotations

import logging
from typing import Annotated, Literal
from uuid import UUID

from asgiref.sync import sync_to_async
from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.http import HttpRequest
from django.http.multipartparser import MultiPartParserError
from ninja import NinjaAPI, Query, Schema
from ninja.errors import AuthenticationError, HttpError, ValidationError
from ninja.security import SessionAuth
from pydantic import AfterValidator, ConfigDict, Field
from pydantic_core import PydanticCustomError

from accounts.errors import InsufficientFunds
from accounts.money import WeiText
from observability.errors import error_body
from writer import runner, selectors, services
from writer.models import Generation, Status
from writer.services import MAX_PROMPT_CHARS

log = logging.getLogger(__name__)
api = NinjaAPI(title="Inkmarket writer API", version="1", urls_namespace="writer-api",
               auth=SessionAuth(csrf=True), docs_url="/docs")

ContentType = Literal["blog", "email", "code", "summary"]
Style = Literal["professional", "casual", "creative", "technical"]
Length = Literal["short", "medium", "long"]
# What str.strip() removes (every whitespace character of Unicode is below U+3001): a
# prompt with another character, and no NUL, is not empty.
WHITESPACE = "".join(c for c in map(chr, range(0x3001)) if c.isspace())
NO_NUL = r"^[^\x00]*$"
PROMPT = rf"^[^\x00]*[^\x00{WHITESPACE}][^\x00]*$"
HISTORY_MAX = 200


def _storable(value: str) -> str:
    # PostgreSQL's text holds no NUL, and UTF-8 no unpaired surrogate (which a JSON
    # "\ud800" escape still makes): refused here, not failed on when stored or searched.
    if "\x00" in value:
        raise PydanticCustomError("nul_character", "must not contain NUL (U+0000)")
    try:
        value.encode()
    except UnicodeEncodeError:
        raise PydanticCustomError("unpaired_surrogate",
                                  "must not contain an unpaired surrogate") from None
    return value


Text = Annotated[str, AfterValidator(_storable), Field(json_schema_extra={"pattern": NO_NUL})]


class ErrorDetail(Schema):
    model_config = ConfigDict(extra="allow")
    code: str = Field(description="INVALID_REQUEST, UNAUTHENTICATED, FORBIDDEN, NOT_FOUND, "
                      "PAYLOAD_TOO_LARGE, INSUFFICIENT_FUNDS, NO_HOSTS_AVAILABLE, INTERNAL")
    message: str


class ErrorOut(Schema):
    """Every error: a code, a message, and fields of the code's own (`required` and
    `available`, wei as strings, with INSUFFICIENT_FUNDS)."""

    error: ErrorDetail


def errors(*statuses: int) -> dict[int, type[ErrorOut]]:
    # Every operation may answer 401 (no session) and 500 (a bug, in the one shape).
    return {status: ErrorOut for status in sorted({*statuses, 401, 500})}


# Django's CSRF check on a POST: the csrftoken cookie, and the same token in a header.
CSRF = {"parameters": [
    {"in": "cookie", "name": settings.CSRF_COOKIE_NAME, "required": True,
     "schema": {"type": "string"}, "description": "Django's CSRF cookie"},
    {"in": "header", "name": "X-CSRFToken", "required": True,  # settings.CSRF_HEADER_NAME
     "schema": {"type": "string"}, "description": "The CSRF cookie's token"}]}


def _error(request, code: str, message: str, status: int, **extra):
    return api.create_response(request, error_body(code, message, **extra), status=status)


@api.exception_handler(ValidationError)
def on_validation(request, exc: ValidationError):
    first = exc.errors[0] if exc.errors else {}
    where = ".".join(str(p) for p in first.get("loc", ()) if p not in ("body", "query"))
    return _error(request, "INVALID_REQUEST", f"{where}: {first.get('msg', 'invalid')}", 400)


@api.exception_handler(AuthenticationError)
def on_auth(request, exc):
    return _error(request, "UNAUTHENTICATED", "log in first (session cookie and CSRF token)",
                  401)


@api.exception_handler(HttpError)
def on_http(request, exc: HttpError):
    code = {400: "INVALID_REQUEST", 403: "FORBIDDEN", 404: "NOT_FOUND",
            405: "METHOD_NOT_ALLOWED", 429: "RATE_LIMITED"}.get(exc.status_code, "ERROR")
    return _error(request, code, str(exc), exc.status_code)


@api.exception_handler(MultiPartParserError)
def on_malformed_form(request, exc):
    # Django's CSRF check reads a form body; a multipart one without a boundary is
    # malformed, the client's error.
    return _error(request, "INVALID_REQUEST", f"malformed body: {exc}", 400)


@api.exception_handler(RequestDataTooBig)
def on_too_large(request, exc):
    return _error(request, "PAYLOAD_TOO_LARGE", f"the request body is over "
                  f"{settings.DATA_UPLOAD_MAX_MEMORY_SIZE} bytes", 413)


@api.exception_handler(Exception)
def on_unexpected(request, exc: Exception):
    # A program gets the one error shape even for a bug; the traceback goes to the log.
    log.exception("writer API: %s %s failed", request.method, request.path)
    return _error(request, "INTERNAL", "something went wrong on our side; try again", 500)


class GenerateIn(Schema):
    type: ContentType
    # Checked in the view, whose messages programs already read; published here.
    prompt: Text = Field(json_schema_extra={"minLength": 1, "maxLength": MAX_PROMPT_CHARS,
                                            "pattern": PROMPT})
    style: Style = "professional"
    length: Length = "medium"


Wei = WeiText
GenerationStatus = Literal[tuple(Status.values)]


class GenerateOut(Schema):
    jobId: UUID
    estimatedTime: float | None
    cost: Wei | None
    cached: bool


class ResultError(Schema):
    """Why a generation failed: its code, the code's fixed message, and the generation's
    id to quote."""

    code: str
    message: str
    reference: str = Field(description="The generation's id: quote it when you report it")


class ResultOut(Schema):
    jobId: UUID
    status: GenerationStatus
    progress: float
    tokens: int
    maxTokens: int
    result: str
    processed: dict
    model: str
    host: str
    cost: Wei
    cached: bool
    error: ResultError | None


class HistoryItem(Schema):
    jobId: UUID
    type: ContentType
    prompt: str
    status: GenerationStatus
    tokens: int
    cost: Wei
    created: str = Field(json_schema_extra={"format": "date-time"})


class EstimateOut(Schema):
    model: str
    maxTokens: int
    nodes: int
    cost: Wei | None
    estimatedTime: float | None


def _result(g: Generation) -> dict:
    return {"jobId": g.id, "status": g.status, "progress": round(g.seq / g.max_tokens, 3)
            if g.max_tokens else 0.0, "tokens": g.seq, "maxTokens": g.max_tokens,
            "result": g.final_text, "processed": g.processed, "model": g.model, "host": g.host,
            "cost": str(g.cost_wei), "cached": g.cached,
            "error": {"code": g.error_code, "message": g.error_shown, "reference": str(g.id)}
            if g.error_code else None}


@api.post("/generate", response={200: GenerateOut, **errors(400, 402, 403, 413, 503)},
          summary="Start a generation", openapi_extra=CSRF)
async def generate(request: HttpRequest, body: GenerateIn):
    if not body.prompt.strip():
        raise HttpError(400, "the prompt is empty")
    if len(body.prompt) > MAX_PROMPT_CHARS:
        raise HttpError(400, f"the prompt is over {MAX_PROMPT_CHARS} characters")
    user = await request.auser()
    estimate = await services.estimate_generation(body.type, body.length, user=user)
    try:
        generation = await sync_to_async(services.generation_create)(
            user=user, content_type=body.type, style=body.style, length=body.length,
            prompt=body.prompt, price_cap_wei=estimate.price_cap_wei)
    except InsufficientFunds as exc:
        return _error(request, "INSUFFICIENT_FUNDS", str(exc), 402,
                      required=str(exc.required_wei), available=str(exc.available_wei))
    except services.NoHosts as exc:
        return _error(request, "NO_HOSTS_AVAILABLE", str(exc), 503)
    if not generation.cached:
        runner.generation_start(generation.id)
    return {"jobId": generation.id, "estimatedTime": estimate.seconds,
            "cost": "0" if generation.cached else (
                str(estimate.cost_wei) if estimate.cost_wei is not None else None),
            "cached": generation.cached}


@api.get("/result/{job_id}", response={200: ResultOut, **errors(400, 404)},
         summary="A generation's status and text")
async def result(request: HttpRequest, job_id: UUID):
    user = await request.auser()
    generation = await Generation.objects.filter(pk=job_id, user=user).afirst()
    if generation is None:
        raise HttpError(404, "no such job")
    return _result(generation)


@api.get("/history", response={200: list[HistoryItem], **errors(400)},
         summary="Your generations, newest first")
def history(request: HttpRequest, type: ContentType | None = None, q: Text = "",
            limit: int = Query(50, ge=1, le=HISTORY_MAX)):
    items = selectors.generation_list(user=request.user, query=q, content_type=type or "")
    return [{"jobId": g.id, "type": g.content_type, "prompt": g.prompt, "status": g.status,
             "tokens": g.tokens, "cost": str(g.cost_wei), "created": g.created.isoformat()}
            for g in items[:limit]]


@api.get("/estimate", response={200: EstimateOut, **errors(400)},
         summary="Cost and time before sending")
async def estimate(request: HttpRequest, type: ContentType, length: Length = "medium"):
    e = await services.estimate_generation(type, length, user=await request.auser())
    return {"model": e.model, "maxTokens": e.max_tokens, "nodes": e.nodes,
            "cost": str(e.cost_wei) if e.cost_wei is not None else None,
            "estimatedTime": e.seconds}
