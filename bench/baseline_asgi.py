"""A bare ASGI app answering a fixed JSON body: the floor any Django endpoint is compared to."""

BODY = b'{"status": "ok", "checks": {"database": {"ok": true, "ms": 0.1}}}'


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": BODY})
