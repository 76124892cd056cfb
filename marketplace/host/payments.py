"""What this host is owed on each payment channel, and the credit it gives.

A channel stream (protocol.py, docs/sessions.md) is paid as it goes: the client sends
vouchers, each the payer's signature of the channel's cumulative amount. Many streams,
of many users, share one channel, so the host counts per channel: `owed` grows by the
price of each token sent, `paid` is the latest voucher kept (marketplace.host.vouchers
checks it and stores it durably first). The host sends a token only while
owed + its price ≤ paid + the credit limit: a client that stops paying costs it at most
the limit. After a restart nothing unpaid is remembered: owed starts at what was paid.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from marketplace.chain.channels import ChannelInfo, ChannelState, Voucher
from marketplace.chain.errors import ChainError
from marketplace.chain.tx import RPC_FAULTS
from marketplace.host.link import StreamRefused
from marketplace.host.vouchers import Held, VoucherDesk, VoucherRefused
from marketplace.protocol import Code

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CreditTerms:
    limit_wei: int  # unpaid work on a channel before the host waits for a voucher
    vouchers_every: int  # tokens between the client's vouchers, at most (advertised)
    wait_s: float  # how long a stream waits for a voucher before it ends


class Credit:
    def __init__(self, desk: VoucherDesk, terms: CreditTerms):
        self.desk = desk
        self.terms = terms
        self._owed: dict[int, int] = {}
        self._paid: dict[int, int] = {}
        self._changed: dict[int, asyncio.Event] = {}

    async def channel(self, channel_id: int, payer: str) -> ChannelInfo:
        """The channel a stream is paid from, checked: it exists, pays this host, is open,
        and `payer` (the stream's signer) is its payer."""
        try:
            info = await self.desk.ours(channel_id)
        except VoucherRefused as exc:
            raise StreamRefused(exc.code, str(exc)) from None
        except (ChainError, *RPC_FAULTS) as exc:
            raise StreamRefused(Code.CHAIN_UNAVAILABLE, f"cannot read channel {channel_id}: "
                                f"{exc}") from None
        if info.state != ChannelState.OPEN:
            raise StreamRefused("CHANNEL_CLOSED", f"channel {channel_id} is "
                                f"{info.state.value}; open another")
        if info.payer.lower() != payer.lower():
            raise StreamRefused(Code.BAD_SIGNATURE, "the signature is not the channel's payer's")
        await self._load(channel_id)
        return info

    async def _load(self, channel_id: int) -> None:
        if channel_id in self._paid:
            return
        held = await asyncio.to_thread(self.desk.book.latest, channel_id)
        paid = held.amount if held is not None else 0
        self._paid.setdefault(channel_id, paid)
        self._owed.setdefault(channel_id, paid)

    def paid(self, channel_id: int) -> int:
        return self._paid.get(channel_id, 0)

    def owed(self, channel_id: int) -> int:
        return self._owed.get(channel_id, 0)

    def unpaid(self, channel_id: int) -> int:
        return max(self.owed(channel_id) - self.paid(channel_id), 0)

    def admits(self, channel_id: int, wei: int) -> bool:
        """Whether `wei` more of work stays within the credit limit."""
        return self.owed(channel_id) + wei <= self.paid(channel_id) + self.terms.limit_wei

    def charge(self, channel_id: int, wei: int) -> None:
        self._owed[channel_id] = self.owed(channel_id) + wei

    async def pay(self, voucher: Voucher) -> Held | None:
        """Check and keep a voucher. A stale one (lower than one kept, which happens when
        two streams of one channel pay at once) changes nothing and returns None; any other
        refusal raises VoucherRefused."""
        try:
            held = await self.desk.accept(voucher)
        except VoucherRefused as exc:
            if exc.code == "STALE_VOUCHER":
                log.debug("channel %s: %s", voucher.channel_id, exc)
                return None
            raise
        if held.amount > self.paid(voucher.channel_id):
            self._paid[voucher.channel_id] = held.amount
            self._owed[voucher.channel_id] = max(self.owed(voucher.channel_id), held.amount)
            event = self._changed.pop(voucher.channel_id, None)
            if event is not None:
                event.set()
        return held

    async def wait_paid(self, channel_id: int, wei: int, also: asyncio.Future,
                        timeout_s: float) -> bool:
        """Wait until `wei` more of work is within credit, `also` finishes or the time is
        up; whether it is within credit."""
        return await self._wait(channel_id, lambda: self.admits(channel_id, wei), also,
                                timeout_s)

    async def wait_until(self, channel_id: int, amount: int, also: asyncio.Future,
                         timeout_s: float) -> bool:
        """Wait until the channel is paid `amount` in all (or as `wait_paid`)."""
        return await self._wait(channel_id, lambda: self.paid(channel_id) >= amount, also,
                                timeout_s)

    async def _wait(self, channel_id: int, done, also: asyncio.Future,
                    timeout_s: float) -> bool:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while not done() and not also.done():
            left = deadline - loop.time()
            if left <= 0:
                break
            event = self._changed.setdefault(channel_id, asyncio.Event())
            waiter = asyncio.ensure_future(event.wait())
            try:
                await asyncio.wait([waiter, also], timeout=left,
                                   return_when=asyncio.FIRST_COMPLETED)
            finally:
                waiter.cancel()
        return done()
