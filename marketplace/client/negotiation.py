"""Negotiation: propose terms to a host's /v1/quote; take its price or its counter-offer
when it is within our limit."""

from __future__ import annotations

import asyncio

import aiohttp

from marketplace.client import pool
from marketplace.client.bounded import (
    Limits,
    SeenQuote,
    SeenRefusal,
    fault,
    parse_body,
    read_body,
)
from marketplace.client.errors import ClientError, HostFault, host_code
from marketplace.client.hosturl import host_url_check
from marketplace.client.ranking import Candidate
from marketplace.protocol import GenerationRequest

QUOTE_TIMEOUT_S = 3.0


async def negotiate(host: Candidate, request: GenerationRequest, *,
                    max_price_per_token_wei: int | None) -> int:
    """The agreed price per token in wei, or ClientError (the caller tries another host)."""
    base = await host_url_check(host.url)  # nothing is sent to a refused URL
    offer = max_price_per_token_wei or host.price_per_token_wei
    body = {"model": request.model, "maxTokens": request.max_tokens,
            "maxPricePerToken": str(offer)}
    try:
        async with asyncio.timeout(QUOTE_TIMEOUT_S):
            async with pool.session().post(f"{base}/v1/quote", json=body,
                                           allow_redirects=False) as response:
                answer = await read_body(response, Limits.from_settings())
                status = response.status
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise ClientError("HOST_UNAVAILABLE", f"{host.url}: {exc}", permanent=False) from None
    if status != 200:
        try:
            refusal = parse_body(answer, SeenRefusal).data
        except ClientError:
            raise ClientError("QUOTE_REFUSED", f"{host.url} answered {status}",
                              permanent=False) from None
        # A host's word never ends the job: another host may take it.
        raise ClientError(host_code(refusal.code), refusal.message[:500], permanent=False)
    quote = parse_body(answer, SeenQuote)
    terms = quote.terms if quote.accepted else quote.counter
    if terms is None:
        if quote.accepted:
            raise fault(HostFault.MALFORMED, f"{host.address} accepted without terms")
        raise ClientError("QUOTE_REFUSED", quote.reason or "no terms", permanent=False)
    price = int(terms.price_per_token)
    if max_price_per_token_wei is not None and price > max_price_per_token_wei:
        raise ClientError("PRICE_TOO_HIGH", f"{host.address} asks {price} wei per token",
                          permanent=False)
    return price
