"""An OpenAI-compatible server that answers at once, for measuring the gateway's own cost.

It serves `/v1/completions` and `/v1/chat/completions`, whole or streamed, with a fixed
short text and exact usage figures; nothing in the product uses it. Bare ASGI, so the
figure measured directly against it is as close to the network's floor as Python gets.
"""

from __future__ import annotations

import json
import time

TEXT = ["The", " tide", " turns", " twice", " a", " day", "."]
JSON = [(b"content-type", b"application/json")]
SSE = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]


async def _body(receive) -> dict:
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            break
    try:
        return json.loads(b"".join(chunks) or b"{}")
    except ValueError:
        return {}


def _usage(request: dict) -> dict:
    prompt = request.get("prompt") or " ".join(
        str(m.get("content", "")) for m in request.get("messages") or [])
    completion = min(len(TEXT), int(request.get("max_tokens") or len(TEXT)))
    prompt_tokens = max(1, len(prompt.split()))
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion,
            "total_tokens": prompt_tokens + completion}


def _choice(chat: bool, text: str, finish: str | None, *, delta: bool) -> dict:
    if chat:
        body = {"delta": {"content": text}} if delta else {
            "message": {"role": "assistant", "content": text}}
    else:
        body = {"text": text}
    return {"index": 0, "finish_reason": finish, **body}


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    path = scope["path"]
    if path not in ("/v1/completions", "/v1/chat/completions"):
        await send({"type": "http.response.start", "status": 404, "headers": JSON})
        await send({"type": "http.response.body", "body": b'{"error": "not found"}'})
        return
    request = await _body(receive)
    chat = path.endswith("chat/completions")
    usage = _usage(request)
    pieces = TEXT[:usage["completion_tokens"]]
    base = {"id": "cmpl-fast", "created": int(time.time()), "model": request.get("model", ""),
            "object": "chat.completion" if chat else "text_completion"}
    if not request.get("stream"):
        answer = {**base, "choices": [_choice(chat, "".join(pieces), "length", delta=False)],
                  "usage": usage}
        await send({"type": "http.response.start", "status": 200, "headers": JSON})
        await send({"type": "http.response.body", "body": json.dumps(answer).encode()})
        return
    await send({"type": "http.response.start", "status": 200, "headers": SSE})
    kind = "chat.completion.chunk" if chat else "text_completion"
    for i, piece in enumerate(pieces):
        last = i == len(pieces) - 1
        chunk = {**base, "object": kind,
                 "choices": [_choice(chat, piece, "length" if last else None, delta=True)]}
        await send({"type": "http.response.body", "more_body": True,
                    "body": b"data: " + json.dumps(chunk).encode() + b"\n\n"})
    tail = {**base, "object": kind, "choices": [], "usage": usage}
    await send({"type": "http.response.body", "more_body": True,
                "body": b"data: " + json.dumps(tail).encode() + b"\n\n"})
    await send({"type": "http.response.body", "body": b"data: [DONE]\n\n"})
