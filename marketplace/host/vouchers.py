"""The host's vouchers: each one checked, the latest per channel stored durably before the
host does more work on it, and redeemed in time.

A voucher (marketplace.chain.channels) is accepted only if it is the channel's payer's
signature for this chain and contract, the channel is open and this host's, its amount is
at least the last one accepted (amounts are cumulative: a lower one is stale) and at most
the deposit. The latest voucher per channel is written to SQLite (WAL, synchronous=FULL)
and committed before `accept` returns, so a host that crashes right after loses neither
money nor the voucher: it closes with it when it comes back.

`ChannelWatch` closes a channel with its latest voucher as soon as the payer starts an exit
(the host has the challenge period to do so; docs/sessions.md), and on demand.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from marketplace.chain.channels import (
    BadVoucher,
    ChannelInfo,
    Channels,
    ChannelSettled,
    ChannelState,
    Voucher,
)
from marketplace.chain.errors import ChainError
from marketplace.chain.events import MAX_RANGE, read_range
from marketplace.chain.tx import RPC_FAULTS
from marketplace.host.disputes import repeat

log = logging.getLogger(__name__)

CHANNEL_READ_TTL_S = 10.0


class VoucherRefused(ValueError):
    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class Held:
    channel_id: int
    payer: str
    deposit: int
    amount: int  # the latest voucher's, cumulative
    signature: bytes

    @property
    def voucher(self) -> Voucher:
        return Voucher(self.channel_id, self.amount, self.signature)


class VoucherBook:
    """The latest voucher per channel, on disk. Thread-safe; calls are short."""

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS vouchers (channel_id INTEGER PRIMARY KEY, "
            "payer TEXT NOT NULL, deposit TEXT NOT NULL, amount TEXT NOT NULL, "
            "signature BLOB NOT NULL, redeemed INTEGER NOT NULL DEFAULT 0)")

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def latest(self, channel_id: int) -> Held | None:
        with self._lock:
            row = self._db.execute(
                "SELECT channel_id, payer, deposit, amount, signature FROM vouchers "
                "WHERE channel_id = ?", (channel_id,)).fetchone()
        if row is None:
            return None
        return Held(row[0], row[1], int(row[2]), int(row[3]), bytes(row[4]))

    def unredeemed(self) -> list[Held]:
        with self._lock:
            rows = self._db.execute(
                "SELECT channel_id, payer, deposit, amount, signature FROM vouchers "
                "WHERE redeemed = 0").fetchall()
        return [Held(r[0], r[1], int(r[2]), int(r[3]), bytes(r[4])) for r in rows]

    def store(self, held: Held) -> None:
        """Keep `held` unless a voucher for more is already kept (amounts only grow)."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                row = self._db.execute("SELECT amount FROM vouchers WHERE channel_id = ?",
                                       (held.channel_id,)).fetchone()
                if row is None:
                    self._db.execute(
                        "INSERT INTO vouchers (channel_id, payer, deposit, amount, signature) "
                        "VALUES (?, ?, ?, ?, ?)",
                        (held.channel_id, held.payer, str(held.deposit), str(held.amount),
                         held.signature))
                elif int(row[0]) <= held.amount:
                    self._db.execute(
                        "UPDATE vouchers SET amount = ?, signature = ?, deposit = ? "
                        "WHERE channel_id = ?",
                        (str(held.amount), held.signature, str(held.deposit),
                         held.channel_id))
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def mark_redeemed(self, channel_id: int) -> None:
        with self._lock:
            self._db.execute("UPDATE vouchers SET redeemed = 1 WHERE channel_id = ?",
                             (channel_id,))


class VoucherDesk:
    """Checks vouchers against the chain and keeps them in the book."""

    def __init__(self, channels: Channels, book: VoucherBook, host_address: str):
        self.channels = channels
        self.book = book
        self.host = host_address.lower()
        # Each channel as last read, and when: a deposit only grows and an exit only
        # starts, so a reading a few seconds old errs only towards refusing.
        self._info: dict[int, tuple[ChannelInfo, float]] = {}

    async def channel(self, channel_id: int, *, fresh: bool = False) -> ChannelInfo:
        known = None if fresh else self._info.get(channel_id)
        if known is not None and time.monotonic() - known[1] < CHANNEL_READ_TTL_S:
            return known[0]
        info = await self.channels.get(channel_id)
        if len(self._info) > 10_000:
            self._info.clear()
        self._info[channel_id] = (info, time.monotonic())
        return info

    async def ours(self, channel_id: int) -> ChannelInfo:
        """The channel as last read, if it exists and pays this host; VoucherRefused
        UNKNOWN_CHANNEL or NOT_YOUR_CHANNEL if not."""
        info = await self.channel(channel_id)
        if int(info.payer, 16) == 0:
            raise VoucherRefused("UNKNOWN_CHANNEL", f"no channel {channel_id}")
        if info.host.lower() != self.host:
            raise VoucherRefused("NOT_YOUR_CHANNEL", f"channel {channel_id} pays another host")
        return info

    async def accept(self, voucher: Voucher) -> Held:
        """Check `voucher` and keep it; returns what is now held for its channel. Raises
        VoucherRefused with a code: UNKNOWN_CHANNEL, NOT_YOUR_CHANNEL, CHANNEL_CLOSED,
        BAD_VOUCHER, STALE_VOUCHER, OVER_DEPOSIT."""
        info = await self.ours(voucher.channel_id)
        if info.state == ChannelState.CLOSED:
            raise VoucherRefused("CHANNEL_CLOSED", f"channel {voucher.channel_id} is closed")
        try:
            self.channels.vouchers.check(voucher, info.payer)
        except BadVoucher as exc:
            raise VoucherRefused("BAD_VOUCHER", str(exc)) from None
        if voucher.amount > info.deposit:
            info = await self.channel(voucher.channel_id, fresh=True)  # a top-up since?
            if voucher.amount > info.deposit:
                raise VoucherRefused("OVER_DEPOSIT", f"the voucher is for {voucher.amount} "
                                     f"wei; the channel holds {info.deposit}")
        held = await asyncio.to_thread(self.book.latest, voucher.channel_id)
        if held is not None and voucher.amount < held.amount:
            raise VoucherRefused("STALE_VOUCHER", f"the voucher is for {voucher.amount} wei; "
                                 f"one for {held.amount} was given before")
        new = Held(voucher.channel_id, info.payer, info.deposit, voucher.amount,
                   voucher.signature)
        await asyncio.to_thread(self.book.store, new)
        return new


class ChannelWatch:
    """Closes this host's channels with their latest voucher when their payer starts to
    exit; `redeem` closes one on demand (an operator, or a channel that is nearly spent)."""

    def __init__(self, channels: Channels, book: VoucherBook, host_address: str, *,
                 from_block: int = 0):
        self.channels = channels
        self.book = book
        self.host = host_address.lower()
        self.next_block = from_block

    async def redeem(self, channel_id: int) -> ChannelSettled | None:
        held = await asyncio.to_thread(self.book.latest, channel_id)
        if held is None or held.amount == 0:
            return None
        info = await self.channels.get(channel_id)
        if info.state == ChannelState.CLOSED:
            await asyncio.to_thread(self.book.mark_redeemed, channel_id)
            return None
        settled = await self.channels.close(held.voucher)
        await asyncio.to_thread(self.book.mark_redeemed, channel_id)
        log.info("channel %s closed with a voucher for %s wei: %s wei to this host (%s)",
                 channel_id, held.amount, settled.host_amount, settled.tx_hash)
        return settled

    async def step(self) -> list[int]:
        """Read ExitStarted events since the last step; close each of ours at once."""
        w3 = self.channels.chain.w3
        head = await w3.eth.block_number
        closed = []
        while self.next_block <= head:
            end = min(head, self.next_block + MAX_RANGE - 1)
            for event in await read_range(self.channels.contract, ["ExitStarted"],
                                          self.next_block, end):
                channel_id = int(event.args["channelId"])
                held = await asyncio.to_thread(self.book.latest, channel_id)
                if held is None:
                    continue  # not ours, or nothing was ever paid on it
                if await self.redeem(channel_id) is not None:
                    closed.append(channel_id)
            self.next_block = end + 1
        return closed

    async def run(self, every_s: float) -> None:
        # Vouchers kept before a crash and never redeemed: a channel whose exit started
        # while the host was down is closed now, the rest at their payer's exit.
        for held in await asyncio.to_thread(self.book.unredeemed):
            try:
                info = await self.channels.get(held.channel_id)
                if info.state == ChannelState.EXITING:
                    await self.redeem(held.channel_id)
                elif info.state == ChannelState.CLOSED:
                    await asyncio.to_thread(self.book.mark_redeemed, held.channel_id)
            except (ChainError, *RPC_FAULTS) as exc:
                log.warning("channel %s: %s", held.channel_id, exc)
        await repeat(self.step, every_s, "watching channels")
