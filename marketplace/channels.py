"""Our side of the payment channels: the platform wallet pays hosts with vouchers.

One channel per host serves every prompt of every user (docs/sessions.md, "Our side"). A
stream first takes a lease: headroom reserved on the channel under a row lock, so streams
running at once on one channel never promise the host more than the deposit holds. As
tokens arrive it pays: `channel_pay` adds to the channel's cumulative amount, signs the
voucher for the new total and commits both, with what the attempt paid, in one
transaction, before the caller sends the voucher. A crash loses nothing: the latest
voucher is in the database the moment anyone could have seen it, and the cumulative
amount is the sum of every payment ever made on the channel, whatever the number of
processes paying at once. At the end the stream gives back what it did not use.

Off the critical path (`channels_maintain`, on Celery beat): top-ups of channels running
low, exits of idle channels and of channels whose host left the registry, the end of
those exits after the challenge period, channels the host closed itself, opens a crash
cut short. `channels_reconcile` checks the books.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import threading
import weakref
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F, Q, Sum
from django.db.models.functions import Greatest
from django.utils import timezone
from eth_utils import to_checksum_address

from marketplace.chain.channels import Channels, Voucher, VoucherSigner
from marketplace.chain.contracts import Chain
from marketplace.chain.errors import ChainError
from marketplace.models import (
    LIVE_CHANNEL_STATES,
    AttemptState,
    JobAttempt,
    PaymentChannel,
    PaymentChannelState,
)

log = logging.getLogger(__name__)

OPEN = PaymentChannelState.OPEN


class ChannelError(Exception):
    """A payment our side refuses to sign (`code` is machine-readable)."""

    def __init__(self, code: str, message: str):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


@dataclass(frozen=True, eq=False)
class Lease:
    """Headroom reserved on one channel for one stream. Compared by identity: two streams
    reserving the same amount on the same channel hold two leases."""

    channel_pk: int
    channel_id: int
    host: str
    contract: str
    reserved_wei: int


# How much of each lease's reservation has been used by payments or given back, in this
# process (a lease lives in the process that took it). A process that dies with leases
# held leaves their reservation on the channel; channels_maintain frees it once the
# channel has gone unused for MARKETPLACE_CHANNEL_LEASE_MAX_S.
_lease_used: weakref.WeakKeyDictionary[Lease, int] = weakref.WeakKeyDictionary()
_lease_lock = threading.Lock()


def _lease_left(lease: Lease) -> int:
    with _lease_lock:
        return lease.reserved_wei - _lease_used.get(lease, 0)


def _lease_use(lease: Lease, wei: int) -> None:
    with _lease_lock:
        _lease_used[lease] = _lease_used.get(lease, 0) + wei


@functools.lru_cache(maxsize=16)
def _signer(chain_id: int, contract: str) -> VoucherSigner:
    return VoucherSigner(chain_id, contract)


def _key(chain: Chain, host_address: str) -> dict[str, Any]:
    return {"chain_id": chain.deployment.chain_id,
            "contract": to_checksum_address(chain.deployment.channels),
            "host_address": to_checksum_address(host_address)}


def _timestamp(seconds: int) -> datetime:
    return datetime.fromtimestamp(seconds, tz=UTC)


# ---- leases and payments (the stream's side) --------------------------------------------


def channel_lease(*, chain_id: int, contract: str, host_address: str,
                  need_wei: int) -> Lease | None:
    """Reserve `need_wei` on our open channel to the host; None when there is no open
    channel or too little headroom on it (then the channel is marked for a top-up)."""
    if need_wei < 0:
        raise ChannelError("INVALID_AMOUNT", "a lease reserves zero wei or more")
    host = to_checksum_address(host_address)
    contract = to_checksum_address(contract)
    with transaction.atomic():
        channel = PaymentChannel.objects.select_for_update().filter(
            chain_id=chain_id, contract=contract, host_address=host, state=OPEN).first()
        if channel is None:
            return None
        if channel.remaining_wei < need_wei:
            if not channel.wants_top_up:
                PaymentChannel.objects.filter(pk=channel.pk).update(wants_top_up=True)
            return None
        now = timezone.now()
        PaymentChannel.objects.filter(pk=channel.pk).update(
            reserved_wei=F("reserved_wei") + need_wei, last_used_at=now, updated=now)
    return Lease(channel.pk, int(channel.channel_id), host, contract, need_wei)


def channel_pay(*, lease: Lease, attempt_id: int, add_wei: int,
                private_key: bytes) -> Voucher:
    """Pay `add_wei` more on the lease's channel for attempt `attempt_id`: the voucher for
    the channel's new cumulative amount, committed with it before this returns."""
    if add_wei < 0:
        raise ChannelError("INVALID_AMOUNT", "a payment adds zero wei or more")
    with transaction.atomic():
        # The row lock orders every payment on the channel: each signs the total of all
        # the ones before it plus its own.
        channel = PaymentChannel.objects.select_for_update().get(pk=lease.channel_pk)
        if channel.state != OPEN:
            raise ChannelError("CHANNEL_NOT_OPEN",
                               f"channel {channel.channel_id} is {channel.state}: it takes no "
                               "more vouchers")
        spent = int(channel.spent_wei) + add_wei
        if spent > int(channel.deposit_wei):
            raise ChannelError("OVER_DEPOSIT",
                               f"paying {add_wei} wei would bring channel {channel.channel_id} "
                               f"to {spent} wei, over its deposit of {int(channel.deposit_wei)}")
        covered = min(add_wei, max(_lease_left(lease), 0))
        voucher = _signer(channel.chain_id, channel.contract).sign(
            private_key, int(channel.channel_id), spent)
        now = timezone.now()
        PaymentChannel.objects.filter(pk=channel.pk).update(
            spent_wei=spent, reserved_wei=max(int(channel.reserved_wei) - covered, 0),
            signature="0x" + voucher.signature.hex(), last_used_at=now, updated=now)
        if not JobAttempt.objects.filter(pk=attempt_id).update(
                voucher_wei=F("voucher_wei") + add_wei, channel_id=channel.pk):
            raise ChannelError("UNKNOWN_ATTEMPT", f"no attempt {attempt_id} to pay for")
        _lease_use(lease, covered)
    return voucher


def channel_release(*, lease: Lease, unused_wei: int) -> None:
    """Give back `unused_wei` of the lease's reservation (never more than it still
    holds, so a second release gives back nothing)."""
    give = min(max(unused_wei, 0), max(_lease_left(lease), 0))
    if give == 0:
        return
    PaymentChannel.objects.filter(pk=lease.channel_pk).update(
        reserved_wei=Greatest(F("reserved_wei") - give, 0), updated=timezone.now())
    _lease_use(lease, give)


# ---- opening and topping up ----------------------------------------------------------------


def live_channel(*, chain_id: int, contract: str, host_address: str) -> PaymentChannel | None:
    return PaymentChannel.objects.filter(chain_id=chain_id, contract=contract,
                                         host_address=host_address,
                                         state__in=LIVE_CHANNEL_STATES).first()


def _opening_create(*, payer: str, **key: Any) -> PaymentChannel | None:
    """The intent to open, recorded before the deposit is sent; None if another caller
    holds the host's one live channel already (the partial unique constraint)."""
    try:
        with transaction.atomic():
            return PaymentChannel.objects.create(payer_address=payer, **key)
    except IntegrityError:
        return None


def _channel_set(pk: int, *, state_was: str | None = None, log_entry: dict | None = None,
                 **fields: Any) -> bool:
    """Write fields of a channel (only while in `state_was`, if given), appending
    `log_entry` to its txs; whether it was written."""
    with transaction.atomic():
        rows = PaymentChannel.objects.select_for_update().filter(pk=pk)
        if state_was is not None:
            rows = rows.filter(state=state_was)
        channel = rows.first()
        if channel is None:
            return False
        for name, value in fields.items():
            setattr(channel, name, value)
        if log_entry:
            channel.txs = [*channel.txs, {**log_entry, "at": timezone.now().isoformat()}]
        channel.save()
        return True


async def _opened_event(channels: Channels, *, payer: str, host: str) -> list[dict]:
    filters = {"payer": to_checksum_address(payer), "host": to_checksum_address(host)}
    logs = await channels.contract.events.ChannelOpened().get_logs(
        from_block=channels.chain.deployment.block, argument_filters=filters)
    return [{"channel_id": int(e["args"]["channelId"]), "deposit": int(e["args"]["deposit"]),
             "tx": Chain._hash(e)} for e in logs]


async def channel_ensure(chain: Chain, host_address: str) -> PaymentChannel | None:
    """Our open channel to the host, opening it first if there is none; None when it
    cannot be had now (the open failed, or another caller's open did not finish within
    MARKETPLACE_CHANNEL_OPEN_WAIT_S). Safe to call from many processes at once: one
    deposit is sent."""
    if not chain.deployment.channels:
        return None
    key = _key(chain, host_address)
    channel = await sync_to_async(live_channel)(**key)
    if channel is not None and channel.state == OPEN:
        return channel
    if channel is None:
        created = await sync_to_async(_opening_create)(payer=chain.address, **key)
        if created is not None:
            return await _channel_open(chain, created)
    return await _channel_wait(key)


async def _channel_open(chain: Chain, channel: PaymentChannel) -> PaymentChannel | None:
    deposit = settings.MARKETPLACE_CHANNEL_DEPOSIT_WEI
    channels = Channels(chain)
    try:
        channel_id, tx = await channels.open_with_tx(channel.host_address, deposit)
    except ChainError as exc:
        if exc.permanent:  # refused (the host is not active, the wallet is short): nothing sent
            await sync_to_async(_channel_set)(channel.pk, state_was=PaymentChannelState.OPENING,
                                              state=PaymentChannelState.FAILED,
                                              error=str(exc)[:2000])
        else:
            # Perhaps sent and mined: left OPENING for channels_maintain, which finds its
            # event or, after MARKETPLACE_CHANNEL_OPENING_STALE_S, marks it FAILED.
            await sync_to_async(_channel_set)(channel.pk, error=str(exc)[:2000])
        log.warning("could not open a channel to %s: %s", channel.host_address, exc)
        return None
    await sync_to_async(_channel_set)(
        channel.pk, state_was=PaymentChannelState.OPENING, state=OPEN, channel_id=channel_id,
        deposit_wei=deposit, open_tx=tx, error="",
        last_used_at=timezone.now())
    log.info("channel %s opened to %s with %s wei", channel_id, channel.host_address, deposit)
    return await PaymentChannel.objects.aget(pk=channel.pk)


async def _channel_wait(key: dict[str, Any]) -> PaymentChannel | None:
    """Wait for the channel another caller is opening."""
    deadline = asyncio.get_running_loop().time() + settings.MARKETPLACE_CHANNEL_OPEN_WAIT_S
    while True:
        channel = await sync_to_async(live_channel)(**key)
        if channel is None or channel.state == OPEN:
            return channel
        if asyncio.get_running_loop().time() > deadline:
            return None
        await asyncio.sleep(0.1)


def _needs_top_up() -> Q:
    return Q(wants_top_up=True) | Q(
        deposit_wei__lt=F("spent_wei") + F("reserved_wei")
        + settings.MARKETPLACE_CHANNEL_LOW_WATER_WEI)


def _top_up_claim(pk: int) -> bool:
    """Take the channel's top-up, if it needs one and nobody is sending one (a claim older
    than MARKETPLACE_CHANNEL_OPENING_STALE_S belongs to a process that died)."""
    now = timezone.now()
    stale = now - timedelta(seconds=settings.MARKETPLACE_CHANNEL_OPENING_STALE_S)
    return bool(PaymentChannel.objects.filter(
        _needs_top_up(), Q(top_up_started_at__isnull=True) | Q(top_up_started_at__lt=stale),
        pk=pk, state=OPEN).update(top_up_started_at=now))


def _deposit_raise(pk: int, *, on_chain: int, log_entry: dict) -> None:
    """Take the deposit up to what the chain holds and end the top-up's claim. The chain
    is the truth and a deposit only grows, so this may run twice for one top-up (by its
    sender and by the beat) and count it once."""
    with transaction.atomic():
        channel = PaymentChannel.objects.select_for_update().get(pk=pk)
        channel.top_up_started_at = None
        if on_chain > int(channel.deposit_wei):
            channel.deposit_wei = on_chain
            channel.wants_top_up = False
            channel.txs = [*channel.txs, {**log_entry, "deposit": str(on_chain),
                                          "at": timezone.now().isoformat()}]
        channel.save()


async def channel_top_up(chain: Chain, channel: PaymentChannel) -> PaymentChannel | None:
    """Add MARKETPLACE_CHANNEL_TOP_UP_WEI to an open channel whose headroom (deposit -
    spent - reserved) is below MARKETPLACE_CHANNEL_LOW_WATER_WEI, or that a stream found
    short; None when it needs none, another caller is topping it up, or the top-up failed."""
    if not await sync_to_async(_top_up_claim)(channel.pk):
        return None
    wei = settings.MARKETPLACE_CHANNEL_TOP_UP_WEI
    channels = Channels(chain)
    try:
        tx = await channels.top_up(int(channel.channel_id), wei)
    except ChainError as exc:
        log.warning("could not top up channel %s: %s", channel.channel_id, exc)
        if exc.permanent:  # nothing was sent: the next run may try again
            await sync_to_async(_channel_set)(channel.pk, top_up_started_at=None,
                                              error=str(exc)[:2000])
        return None
    info = await channels.get(int(channel.channel_id))
    await sync_to_async(_deposit_raise)(channel.pk, on_chain=info.deposit,
                                        log_entry={"kind": "top-up", "wei": str(wei), "tx": tx})
    log.info("channel %s topped up with %s wei", channel.channel_id, wei)
    return await PaymentChannel.objects.aget(pk=channel.pk)


# ---- exits and closes ----------------------------------------------------------------------


def channel_exit_request(*, channel_pk: int) -> bool:
    """Stop using an open channel and have the beat start its exit (admin's "start
    exit"); False when it is not open."""
    return _channel_set(channel_pk, state_was=OPEN, state=PaymentChannelState.EXITING,
                        log_entry={"kind": "exit-requested"})


def _closed_record(pk: int, *, host_amount: int, fee: int, refund: int, tx: str,
                   by_exit: bool) -> None:
    _channel_set(pk, state=PaymentChannelState.CLOSED, host_amount_wei=host_amount,
                 fee_wei=fee, refund_wei=refund, close_tx=tx, closed_by_exit=by_exit,
                 reserved_wei=0, closed_at=timezone.now(),
                 log_entry={"kind": "closed", "tx": tx})


async def _closed_event(channels: Channels, channel_id: int) -> dict | None:
    logs = await channels.contract.events.ChannelClosed().get_logs(
        from_block=channels.chain.deployment.block, argument_filters={"channelId": channel_id})
    if not logs:
        return None
    args = logs[-1]["args"]
    return {"host_amount": int(args["hostAmount"]), "fee": int(args["fee"]),
            "refund": int(args["refund"]), "tx": Chain._hash(logs[-1]),
            "by_exit": bool(args["byExit"])}


async def _exit_start(channels: Channels, channel: PaymentChannel) -> bool:
    """Send startExit for a channel we marked EXITING; record when it ends."""
    try:
        exit_at = await channels.start_exit(int(channel.channel_id))
        tx = "startExit"
    except ChainError as exc:
        if exc.code != "Exiting":
            log.warning("could not start the exit of channel %s: %s", channel.channel_id, exc)
            return False
        exit_at = (await channels.get(int(channel.channel_id))).exit_at  # sent before a crash
        tx = "found on chain"
    await sync_to_async(_channel_set)(channel.pk, exit_at=_timestamp(exit_at),
                                      log_entry={"kind": "exit-started", "tx": tx})
    log.info("exit of channel %s started; it ends at %s", channel.channel_id, exit_at)
    return True


def _maintained() -> list[PaymentChannel]:
    return list(PaymentChannel.objects.exclude(
        state__in=[PaymentChannelState.CLOSED, PaymentChannelState.FAILED]).order_by("pk"))


def _idle_exit_claim(pk: int, *, host_gone: bool) -> bool:
    """Mark an open channel EXITING: unused for MARKETPLACE_CHANNEL_IDLE_EXIT_S with
    nothing reserved (checked in the same statement, so a lease taken meanwhile wins), or
    whatever its use when its host has left the registry."""
    rows = PaymentChannel.objects.filter(pk=pk, state=OPEN)
    if not host_gone:
        cutoff = timezone.now() - timedelta(seconds=settings.MARKETPLACE_CHANNEL_IDLE_EXIT_S)
        rows = rows.filter(reserved_wei=0).filter(
            Q(last_used_at__lt=cutoff) | Q(last_used_at__isnull=True, created__lt=cutoff))
    if not rows.update(state=PaymentChannelState.EXITING, updated=timezone.now()):
        return False
    _channel_set(pk, log_entry={"kind": "exit-decided",
                                "why": "host left the registry" if host_gone else "idle"})
    return True


def _stale_leases_free() -> int:
    cutoff = timezone.now() - timedelta(seconds=settings.MARKETPLACE_CHANNEL_LEASE_MAX_S)
    return PaymentChannel.objects.filter(state=OPEN, reserved_wei__gt=0,
                                         last_used_at__lt=cutoff).update(reserved_wei=0)


def _known_channel_ids(contract: str) -> set[int]:
    return set(PaymentChannel.objects.filter(contract=contract, channel_id__isnull=False)
               .values_list("channel_id", flat=True))


async def _opening_resolve(channels: Channels, channel: PaymentChannel) -> str:
    """An open a crash cut short: its ChannelOpened event makes it OPEN, else FAILED."""
    stale = timezone.now() - timedelta(seconds=settings.MARKETPLACE_CHANNEL_OPENING_STALE_S)
    if channel.created > stale:
        return "opening"  # its opener may still be at it
    events = await _opened_event(channels, payer=channel.payer_address,
                                 host=channel.host_address)
    known = await sync_to_async(_known_channel_ids)(channel.contract)
    found = [e for e in events if e["channel_id"] not in known]
    if found:
        event = found[0]
        await sync_to_async(_channel_set)(
            channel.pk, state_was=PaymentChannelState.OPENING, state=OPEN,
            channel_id=event["channel_id"], deposit_wei=event["deposit"], open_tx=event["tx"],
            last_used_at=timezone.now(), log_entry={"kind": "open-found", "tx": event["tx"]})
        return "opened"
    await sync_to_async(_channel_set)(
        channel.pk, state_was=PaymentChannelState.OPENING, state=PaymentChannelState.FAILED,
        error=(channel.error + "\n" if channel.error else "")
        + "no ChannelOpened event: the open was never mined")
    return "failed"


async def channels_maintain(chain: Chain) -> dict[str, int]:
    """One pass over our channels on this deployment (Celery beat); counts what it did."""
    if not chain.deployment.channels:
        return {}
    channels = Channels(chain)
    contract = to_checksum_address(chain.deployment.channels)
    done: dict[str, int] = {}

    def count(what: str) -> None:
        done[what] = done.get(what, 0) + 1

    freed = await sync_to_async(_stale_leases_free)()
    if freed:
        done["leases freed"] = freed
    now_on_chain = await chain.block_time()
    active: dict[str, bool] = {}
    for channel in await sync_to_async(_maintained)():
        if channel.chain_id != chain.deployment.chain_id or channel.contract != contract:
            continue
        try:
            if channel.state == PaymentChannelState.OPENING:
                count(await _opening_resolve(channels, channel))
                continue
            info = await channels.get(int(channel.channel_id))
            if info.closed:
                event = await _closed_event(channels, int(channel.channel_id))
                if event is None:
                    # Closed, but the node no longer serves the event's log: stop using it
                    # now; channels_reconcile reports the settlement as missing.
                    log.error("channel %s is closed on chain and its ChannelClosed event "
                              "cannot be read", channel.channel_id)
                    await sync_to_async(_channel_set)(
                        channel.pk, state=PaymentChannelState.CLOSED, reserved_wei=0,
                        closed_at=timezone.now(), error="closed on chain; no ChannelClosed "
                                                        "event to read its settlement from")
                    count("closed, settlement unknown")
                    continue
                await sync_to_async(_closed_record)(channel.pk, **event)
                count("closed by exit" if event["by_exit"] else "closed by host")
                continue
            if info.deposit < int(channel.deposit_wei):
                log.error("channel %s holds %s wei on chain, less than the %s wei in our "
                          "books", channel.channel_id, info.deposit, int(channel.deposit_wei))
                count("problems")
            if info.deposit > int(channel.deposit_wei):
                await sync_to_async(_deposit_raise)(
                    channel.pk, on_chain=info.deposit, log_entry={"kind": "deposit-found"})
                channel = await PaymentChannel.objects.aget(pk=channel.pk)
            if channel.state == OPEN:
                if channel.host_address not in active:
                    active[channel.host_address] = bool(
                        await chain.registry.functions.isActive(channel.host_address).call())
                host_gone = not active[channel.host_address]
                if await sync_to_async(_idle_exit_claim)(channel.pk, host_gone=host_gone):
                    channel = await PaymentChannel.objects.aget(pk=channel.pk)
                elif await channel_top_up(chain, channel) is not None:
                    count("topped up")
                    continue
            if channel.state != PaymentChannelState.EXITING:
                continue
            if channel.exit_at is None:
                if await _exit_start(channels, channel):
                    count("exit started")
            elif now_on_chain > int(channel.exit_at.timestamp()):
                settled = await channels.finish_exit(int(channel.channel_id))
                await sync_to_async(_closed_record)(
                    channel.pk, host_amount=settled.host_amount, fee=settled.fee,
                    refund=settled.refund, tx=settled.tx_hash, by_exit=True)
                count("exit finished")
        except ChainError as exc:
            # One channel's trouble (a close racing ours, the node briefly down) waits for
            # the next pass; the others go on.
            log.warning("channel %s: %s", channel.channel_id, exc)
            count("errors")
    if await channels.withdrawable(chain.address):
        await channels.withdraw()  # what closes refunded, back to the platform wallet
        count("withdrawn")
    for problem in await sync_to_async(channels_reconcile)():
        log.error("channel books: %s", problem)
        count("problems")
    return done


# ---- the books -------------------------------------------------------------------------------


def channels_reconcile() -> list[str]:
    """Everything wrong with our channels' books; [] when sound. For every channel:
    spent = the sum of what its attempts' vouchers paid, and spent + reserved <= deposit;
    for a closed one: host amount + fee + refund = deposit, and host amount + fee (the
    voucher the host redeemed) <= spent. For every channel attempt: what the job was
    charged for it is what its vouchers paid when it was accepted, else nothing."""
    paid = dict(JobAttempt.objects.filter(channel__isnull=False).values("channel")
                .annotate(total=Sum("voucher_wei")).values_list("channel", "total"))
    problems = []
    # What users pay for a channel job is what its vouchers paid; a part not accepted (its
    # host failed, or its result did) is charged to nobody but the platform.
    for attempt in (JobAttempt.objects.filter(channel__isnull=False)
                    .only("pk", "state", "paid_wei", "voucher_wei").iterator()):
        charged = int(attempt.paid_wei)
        expected = int(attempt.voucher_wei) if attempt.state == AttemptState.ACCEPTED else 0
        if charged != expected:
            problems.append(f"attempt {attempt.pk} ({attempt.state}): charged {charged} wei, "
                            f"its vouchers call for {expected} wei")
    for c in PaymentChannel.objects.order_by("pk").iterator():
        where = f"channel {c.channel_id} (row {c.pk}) to {c.host_address}"
        spent, deposit = int(c.spent_wei), int(c.deposit_wei)
        by_attempts = int(paid.get(c.pk) or 0)
        if by_attempts != spent:
            problems.append(f"{where}: vouchers signed for {spent} wei but its attempts "
                            f"paid {by_attempts} wei")
        if spent + int(c.reserved_wei) > deposit:
            problems.append(f"{where}: spent {spent} + reserved {int(c.reserved_wei)} wei "
                            f"is over the deposit of {deposit} wei")
        if c.state != PaymentChannelState.CLOSED:
            continue
        split = (c.host_amount_wei, c.fee_wei, c.refund_wei)
        if None in split:
            problems.append(f"{where}: closed without its settlement recorded")
            continue
        host_amount, fee, refund = (int(x) for x in split)
        if host_amount + fee + refund != deposit:
            problems.append(f"{where}: closed paying {host_amount} + fee {fee} + refund "
                            f"{refund} wei, not its deposit of {deposit} wei")
        if host_amount + fee > spent:
            problems.append(f"{where}: the host redeemed {host_amount + fee} wei, more than "
                            f"the {spent} wei we signed")
    return problems


async def channels_chain_violations(chain: Chain) -> list[str]:
    """What does not match between our open and exiting channels and the contract; []
    when sound: each one's deposit and state, the contract's solvency (balance = deposits
    + withdrawable), and its total deposits covering ours (other payers may add more)."""
    if not chain.deployment.channels:
        return []
    channels = Channels(chain)
    contract = to_checksum_address(chain.deployment.channels)

    def ours() -> list[PaymentChannel]:
        return list(PaymentChannel.objects.filter(
            chain_id=chain.deployment.chain_id, contract=contract, channel_id__isnull=False,
            state__in=[OPEN, PaymentChannelState.EXITING]))

    problems = []
    total = 0
    for c in await sync_to_async(ours)():
        info = await channels.get(int(c.channel_id))
        total += int(c.deposit_wei)
        if info.deposit != int(c.deposit_wei):
            problems.append(f"channel {c.channel_id}: deposit {info.deposit} wei on chain, "
                            f"{int(c.deposit_wei)} wei in our books")
        if info.closed:
            problems.append(f"channel {c.channel_id}: closed on chain, {c.state} in our books")
    balance, deposits, owed = await channels.totals()
    if balance != deposits + owed:
        problems.append(f"the channels contract holds {balance} wei, not its deposits "
                        f"{deposits} + owed {owed} wei")
    if deposits < total:
        problems.append(f"the channels contract holds {deposits} wei of open deposits, less "
                        f"than our {total} wei")
    return problems
