"""GET /v1/models: the models on the network, in the shape OpenAI's clients list, with
the marketplace's own figures beside each: for the model, and for each host answering for
it, measured by our own jobs and probes over MARKETPLACE_FIGURES_WINDOW_S
(marketplace.figures; docs/gateway.md, "GET /v1/models")."""

from __future__ import annotations

import asyncio

from django.conf import settings
from django.http import HttpRequest
from ninja import Router

from accounts.models import Scope
from gateway.api.auth import KEY_AUTH, require_scope
from gateway.api.errors import error_responses
from gateway.api.schemas import ModelsOut

router = Router(tags=["models"], auth=KEY_AUTH)


def _entry(model: str, *, nodes: int, min_price, median_price, ttft_ms, tokens_per_s,
           hosts=()) -> dict:
    return {"id": model, "object": "model", "created": 0, "owned_by": "inkmarket",
            "nodes": nodes, "available": nodes > 0,
            "min_price_per_token": None if min_price is None else str(min_price),
            "median_price_per_token": None if median_price is None else str(median_price),
            "ttft_ms": ttft_ms, "tokens_per_s": tokens_per_s,
            "window_s": settings.MARKETPLACE_FIGURES_WINDOW_S,
            "hosts": [_host(c) for c in hosts]}


def _host(candidate) -> dict:
    figures = candidate.figures
    return {"address": candidate.address,
            "price_per_token": str(candidate.price_per_token_wei),
            "ttft_p50_ms": figures.ttft_p50_ms, "tokens_per_s": figures.tokens_per_s,
            "success_rate": figures.success_rate, "uptime": figures.uptime,
            "attempts": figures.attempts, "probes": figures.probes}


async def _quoted(model: str) -> dict:
    from marketplace.services import price_quote

    quote = await price_quote(model)
    if quote is None:
        return _entry(model, nodes=0, min_price=None, median_price=None, ttft_ms=None,
                      tokens_per_s=None)
    return _entry(model, nodes=quote.nodes, min_price=quote.min_price_wei,
                  median_price=quote.median_price_wei, ttft_ms=quote.ttft_ms,
                  tokens_per_s=quote.tokens_per_s, hosts=quote.hosts)


@router.get("/models", response={200: ModelsOut, **error_responses(403)},
            summary="Models, their hosts, prices and speed")
async def models(request: HttpRequest):
    require_scope(request, Scope.MODELS)
    if settings.GATEWAY_UPSTREAM_URL:
        price = settings.GATEWAY_UPSTREAM_PRICE_WEI
        data = [_entry(m, nodes=1, min_price=price, median_price=price, ttft_ms=None,
                       tokens_per_s=None) for m in settings.GATEWAY_MODELS]
    else:
        data = list(await asyncio.gather(*(_quoted(m) for m in settings.GATEWAY_MODELS)))
    return {"object": "list", "data": data}
