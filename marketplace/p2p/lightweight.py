"""A lightweight host: registered and staked on chain, announced on the discovery network,
but serving no model. Tests and benchmarks of discovery run many of these on one machine."""

from __future__ import annotations

import asyncio
import copy
from typing import Any

from marketplace.chain.contracts import Chain
from marketplace.p2p.announcer import Announcer


def capabilities(address: str, model: str, price: int, *, public_key: str = "",
                 queue: tuple[int, int] = (0, 8)) -> dict[str, Any]:
    return {"version": "1.0.0", "protocol": 3, "address": address, "publicKey": public_key,
            "backend": "none", "models": [{"id": model, "pricePerToken": str(price)}],
            "load": {"active": 0, "slots": 1, "served": 0},
            "queue": {"length": queue[0], "capacity": queue[1]}, "channels": None}


class LightHost:
    def __init__(self, *, chain: Chain, url: str, model: str, price: int,
                 bootstrap: list[str], ttl_s: int = 30):
        self.chain = chain
        self.address = chain.sender.address
        self.url = url
        self.model = model
        self.body = capabilities(self.address, model, price)
        self.announcer = Announcer(private_key=bytes(chain.sender.account.key),
                                   address=self.address, url=url,
                                   capabilities=lambda: copy.deepcopy(self.body),
                                   bootstrap=bootstrap, ttl_s=ttl_s)

    async def register(self, stake: int) -> None:
        await self.chain.register(api_url=self.url, metadata={"backend": "none"},
                                  prices={self.model: self.price}, stake=stake)

    @property
    def price(self) -> int:
        return int(self.body["models"][0]["pricePerToken"])

    async def join(self) -> LightHost:
        await asyncio.to_thread(self.announcer.start)
        return self

    async def set_price(self, price: int, *, on_chain: bool = True) -> None:
        if on_chain:
            await self.chain.update_node(api_url=self.url, metadata={"backend": "none"},
                                         prices={self.model: price})
        self.body["models"][0]["pricePerToken"] = str(price)
        await asyncio.to_thread(self.announcer.changed)

    async def leave(self, *, say_goodbye: bool = True) -> None:
        await asyncio.to_thread(self.announcer.stop, say_goodbye=say_goodbye)
