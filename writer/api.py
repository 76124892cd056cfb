"""The writer for programs: JSON over django-ninja, with session auth and CSRF."""

from __future__ import annotations

import logging
from typing import Literal
from uuid import UUID

from asgiref.sync import sync_to_async
from django.http import HttpRequest
from ninja import NinjaAPI, Schema
from ninja.errors import AuthenticationError, HttpError, ValidationError
from ninja.security import SessionAuth

from accounts.errors import InsufficientFunds
from observability.errors import error_body
from writer import runner, selectors, services
from writer.models import Generation
from writer.services import MAX_PROMPT_CHARS

log = logging.getLogger(__name__)
api = NinjaAPI(title="Inkmarket writer API", version="1", urls_namespace="writer-api",
               auth=SessionAuth(csrf=True), docs_url="/docs")

ContentType = Literal["blog", "email", "code", "summary"]
Style = Literal["professional", "casual", "creative", "technical"]
Length = Literal["short", "medium", "long"]


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


@api.exception_handler(Exception)
def on_unexpected(request, exc: Exception):
    # A program gets the one error shape even for a bug; the traceback goes to the log.
    log.exception("writer API: %s %s failed", request.method, request.path)
    return _error(request, "INTERNAL", "something went wrong on our side; try again", 500)


class GenerateIn(Schema):
    type: ContentType
    prompt: str
    style: Style = "professional"
    length: Length = "medium"


class GenerateOut(Schema):
    jobId: UUID
    estimatedTime: float | None
    cost: str | None
    cached: bool


class ResultOut(Schema):
    jobId: UUID
    status: str
    progress: float
    tokens: int
    maxTokens: int
    result: str
    processed: dict
    model: str
    host: str
    cost: str
    cached: bool
    error: dict | None


class HistoryItem(Schema):
    jobId: UUID
    type: str
    prompt: str
    status: str
    tokens: int
    cost: str
    created: str


class EstimateOut(Schema):
    model: str
    maxTokens: int
    nodes: int
    cost: str | None
    estimatedTime: float | None


def _result(g: Generation) -> dict:
    return {"jobId": g.id, "status": g.status, "progress": round(g.seq / g.max_tokens, 3)
            if g.max_tokens else 0.0, "tokens": g.seq, "maxTokens": g.max_tokens,
            "result": g.final_text, "processed": g.processed, "model": g.model, "host": g.host,
            "cost": str(g.cost_wei), "cached": g.cached,
            "error": {"code": g.error_code, "message": g.error_shown, "reference": str(g.id)}
            if g.error_code else None}


@api.post("/generate", response={200: GenerateOut}, summary="Start a generation")
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


@api.get("/result/{job_id}", response=ResultOut, summary="A generation's status and text")
async def result(request: HttpRequest, job_id: UUID):
    user = await request.auser()
    generation = await Generation.objects.filter(pk=job_id, user=user).afirst()
    if generation is None:
        raise HttpError(404, "no such job")
    return _result(generation)


@api.get("/history", response=list[HistoryItem], summary="Your generations, newest first")
def history(request: HttpRequest, type: ContentType | None = None, q: str = "",
            limit: int = 50):
    items = selectors.generation_list(user=request.user, query=q, content_type=type or "")
    return [{"jobId": g.id, "type": g.content_type, "prompt": g.prompt, "status": g.status,
             "tokens": g.tokens, "cost": str(g.cost_wei), "created": g.created.isoformat()}
            for g in items[: max(1, min(limit, 200))]]


@api.get("/estimate", response=EstimateOut, summary="Cost and time before sending")
async def estimate(request: HttpRequest, type: ContentType, length: Length = "medium"):
    e = await services.estimate_generation(type, length, user=await request.auser())
    return {"model": e.model, "maxTokens": e.max_tokens, "nodes": e.nodes,
            "cost": str(e.cost_wei) if e.cost_wei is not None else None,
            "estimatedTime": e.seconds}
