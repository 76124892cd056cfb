"""Negotiation: propose terms to a host's /v1/quote; take its price or its counter-offer
when it is within our limit."""

from __future__ import annotations

import aiohttp

from marketplace.client import pool
from marketplace.client.errors import ClientError, host_code
from marketplace.client.ranking import Candidate
from marketplace.protocol import GenerationRequest

QUOTE_TIMEOUT_S = 3.0


async def negotiate(host: Candidate, request: GenerationRequest, *,
                    max_price_per_token_wei: int | None) -> int:
    """The agreed price per token in wei, or ClientError (the caller tries another host)."""
    offer = max_price_per_token_wei or host.price_per_token_wei
    body = {"model": request.model, "maxTokens": request.max_tokens,
            "maxPricePerToken": str(offer)}
    try:
        async with pool.session().post(
                f"{host.url.rstrip('/')}/v1/quote", json=body,
                timeout=aiohttp.ClientTimeout(total=QUOTE_TIMEOUT_S)) as response:
            answer = await response.json(content_type=None)
            status = response.status
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        raise ClientError("HOST_UNAVAILABLE", f"{host.url}: {exc}", permanent=False) from None
    if status != 200:
        data = answer.get("data", {}) if isinstance(answer, dict) else {}
        raise ClientError(host_code(data.get("code", "QUOTE_REFUSED")),
                          str(data.get("message", status))[:500], permanent=False)
    terms = answer.get("terms") if answer.get("accepted") else answer.get("counter")
    if not terms:
        raise ClientError("QUOTE_REFUSED", answer.get("reason", "no terms"), permanent=False)
    price = int(terms["pricePerToken"])
    if max_price_per_token_wei is not None and price > max_price_per_token_wei:
        raise ClientError("PRICE_TOO_HIGH", f"{host.address} asks {price} wei per token",
                          permanent=False)
    return price
