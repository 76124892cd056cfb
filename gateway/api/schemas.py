"""Shapes of the gateway's JSON. Range checks are not here but in
gateway.inference.inference_validate, which answers with their own codes."""

from __future__ import annotations

from typing import Any

from ninja import Schema
from pydantic import ConfigDict, Field


class ErrorDetail(Schema):
    model_config = ConfigDict(extra="allow")
    code: str
    message: str
    request_id: str | None = Field(None, description="The request's id (X-Request-ID): "
                                   "quote it when you report a failure")


class ErrorOut(Schema):
    model_config = ConfigDict(extra="allow")
    error: ErrorDetail


class InferenceIn(Schema):
    model: str
    prompt: str
    max_tokens: int = 256
    temperature: float = 0.7


class InferenceOut(Schema):
    id: str
    object: str = "inference"
    status: str
    model: str
    text: str | None = None
    tokens: int = 0
    cost: str = "0"
    cached: bool = False
    finish_reason: str | None = None
    host: str | None = None
    job_id: str | None = None
    error: dict | None = None
    poll: str | None = None


class ChatMessage(Schema):
    model_config = ConfigDict(extra="allow")
    role: str
    content: Any = None


class ChatIn(Schema):
    """OpenAI's chat completion request; fields we do not use (n, top_p, user, …) are
    accepted and ignored."""

    model_config = ConfigDict(extra="allow")
    model: str
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    temperature: float | None = None
    stream: bool = False
