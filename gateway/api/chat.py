"""POST /v1/chat/completions, compatible with OpenAI's API and clients: on the marketplace
the messages become one prompt (gateway.chat), an upstream gets them as they are; OpenAI's
parameters are honoured or refused (gateway.chat.chat_options); billed exactly like
/v1/inference; with `stream: true`, server-sent events ending in a chunk with `usage`
(unless `stream_options.include_usage` is false), then `data: [DONE]`."""

from __future__ import annotations

import asyncio
import json
import time

from django.conf import settings
from django.http import HttpRequest, StreamingHttpResponse
from ninja import Router

from gateway.api.auth import KEY_AUTH
from gateway.api.errors import error_body
from gateway.api.inference import RUN_ERRORS, start, wait
from gateway.api.schemas import CHAT_EVENT, CHAT_OPTIONS, ChatCompletionOut, ChatIn
from gateway.chat import chat_options, messages_to_prompt
from gateway.errors import GatewayError
from gateway.inference import InferenceResult
from observability.logging import request_id_var

router = Router(tags=["chat"], auth=KEY_AUTH)
DEFAULT_MAX_TOKENS = 256
DEFAULT_TEMPERATURE = 0.7
_END = object()
# With `stream: true` the 200 is a stream of server-sent events, not one JSON document.
STREAM = {"responses": {200: {"content": {"text/event-stream": {"schema": CHAT_EVENT}}}}}


def _usage(result: InferenceResult) -> dict:
    return {"prompt_tokens": result.prompt_tokens, "completion_tokens": result.tokens,
            "total_tokens": result.prompt_tokens + result.tokens}


_OPENAI_FINISH = frozenset({"stop", "length", "tool_calls", "content_filter"})


def _openai_finish(reason: str) -> str:
    # OpenAI's clients know these; a cancelled request stopped early.
    return reason if reason in _OPENAI_FINISH else "stop"


def _message(result: InferenceResult) -> dict:
    if result.message is None:
        return {"role": "assistant", "content": result.text}
    return {**result.message, "role": "assistant"}  # an upstream's: tool calls and all


def completion(result: InferenceResult, created: int) -> dict:
    return {"id": f"chatcmpl-{result.request_id.hex}", "object": "chat.completion",
            "created": created, "model": result.model,
            "choices": [{"index": 0, "message": _message(result),
                         "finish_reason": _openai_finish(result.finish_reason),
                         "logprobs": result.logprobs}],
            "usage": _usage(result), "cached": result.cached, "cost": str(result.cost_wei),
            "inkmarket": {"request_id": str(result.request_id), "host": result.host,
                          "job_id": result.job_id or None,
                          "finish_reason": result.finish_reason}}


def _sse(data: dict | str) -> bytes:
    return f"data: {data if isinstance(data, str) else json.dumps(data)}\n\n".encode()


@router.post("/chat/completions", response={200: ChatCompletionOut, **RUN_ERRORS},
             summary="OpenAI-compatible chat", openapi_extra=STREAM)
async def chat_completions(request: HttpRequest, body: ChatIn):
    messages = [m.model_dump(exclude_unset=True) for m in body.messages]
    upstream = bool(settings.GATEWAY_UPSTREAM_URL)
    # An upstream applies its own chat template to the messages as they are (a tool's
    # answer may come last); the transcript is what limits and the cache read.
    prompt = messages_to_prompt(messages, answer_last=not upstream)
    given = {name: value for name in CHAT_OPTIONS
             if (value := getattr(body, name)) is not None}
    options = chat_options(given, stream=body.stream, upstream=upstream)
    # On the marketplace the messages name the conversation's session (gateway.chat.
    # chat_session); the prompt is the transcript.
    run = {"messages": messages, "options": options}
    # `is None`, not `or`: a max_tokens of 0 is refused (INVALID_MAX_TOKENS), not read as
    # "not given".
    max_tokens = next((given for given in (body.max_completion_tokens, body.max_tokens)
                       if given is not None), DEFAULT_MAX_TOKENS)
    temperature = DEFAULT_TEMPERATURE if body.temperature is None else body.temperature
    created = int(time.time())
    if not body.stream:
        task, cancel, _, _ = await start(request, endpoint="chat", model=body.model,
                                         prompt=prompt, max_tokens=max_tokens,
                                         temperature=temperature,
                                         max_price_per_token=body.max_price_per_token, **run)
        # OpenAI's clients cannot poll: wait for the end (a hang-up cancels the job).
        await wait(task, cancel, None)
        return completion(task.result(), created)

    queue: asyncio.Queue = asyncio.Queue()
    timing = getattr(request, "timing", None)

    async def on_token(index: int, text: str, extra: dict | None = None) -> None:
        if timing is not None and timing.first_ns is None:
            timing.first_piece()
        queue.put_nowait(text if extra is None else (text, extra))

    task, cancel, recorded, request_id = await start(
        request, endpoint="chat", model=body.model, prompt=prompt, max_tokens=max_tokens,
        temperature=temperature, on_token=on_token,
        max_price_per_token=body.max_price_per_token, **run)
    task.add_done_callback(lambda _: queue.put_nowait(_END))
    reference = getattr(request, "request_id", None)
    # Refusals (402, 503, …) come before the stream, as HTTP errors: wait until the
    # money is reserved or the request refused.
    waiter = asyncio.ensure_future(recorded.wait())
    try:
        await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:
        cancel.set()
        raise
    finally:
        waiter.cancel()
    if task.done() and task.exception() is not None:
        raise task.exception()
    chunk_id = f"chatcmpl-{request_id.hex}"

    def chunk(delta: dict, finish: str | None = None, logprobs: dict | None = None) -> bytes:
        return _sse({"id": chunk_id, "object": "chat.completion.chunk", "created": created,
                     "model": body.model, "choices": [{"index": 0, "delta": delta,
                                                       "finish_reason": finish,
                                                       "logprobs": logprobs}]})

    def piece(item) -> bytes:
        if isinstance(item, str):
            return chunk({"content": item})
        text, extra = item  # logprobs, or an upstream's tool calls
        delta = {name: value for name, value in extra.items() if name != "logprobs"}
        if text or not delta:
            delta["content"] = text
        return chunk(delta, logprobs=extra.get("logprobs"))

    async def events():
        finished = False
        try:
            yield chunk({"role": "assistant", "content": ""})
            while (item := await queue.get()) is not _END:
                yield piece(item)
            try:
                result = task.result()
            except GatewayError as exc:
                finished = True
                # The stream outlives the middleware that set the request's id in the
                # context; the id is on the request.
                token = request_id_var.set(reference)
                try:
                    error = error_body(exc.code, exc.message, **exc.extra)
                finally:
                    request_id_var.reset(token)
                yield _sse(error)
                yield _sse("[DONE]")
                return
            finished = True
            yield chunk({}, _openai_finish(result.finish_reason))
            if options.include_usage:
                yield _sse({"id": chunk_id, "object": "chat.completion.chunk",
                            "created": created, "model": body.model, "choices": [],
                            "usage": _usage(result), "cached": result.cached,
                            "cost": str(result.cost_wei)})
            yield _sse("[DONE]")
        finally:
            if not finished:
                cancel.set()  # the client hung up: stop the job, bill what it got

    response = StreamingHttpResponse(events(), content_type="text/event-stream")
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"
    return response

