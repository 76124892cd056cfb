"""Money in and out on chain: the deposit watcher, a deposit's progress, the payouts the
platform wallet sends out of the DepositBox, and the check that the books match the chain.

The watcher reads `Deposited` events only up to the newest block with
settings.FUNDS_CONFIRMATIONS confirmations, so a block that a reorganisation takes back
was never read; what it records is keyed by (chain, tx hash, log index), so reading a
block again after a restart credits nothing twice. Its cursor is in the database.

A payout is sent under its payment id, which the contract pays once: sending it again
after the node's answer was lost (a timeout, a dead worker) reverts AlreadyPaid instead of
paying twice, and is recorded as sent with the first transaction's hash.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta

from asgiref.sync import sync_to_async
from django.conf import settings
from django.utils import timezone
from eth_utils import keccak, to_checksum_address
from web3 import AsyncWeb3
from web3.exceptions import TransactionNotFound
from web3.logs import DISCARD

from accounts import funds
from accounts.models import ChainDeposit, DepositCursor, Payout, PayoutState
from marketplace.chain.connect import web3
from marketplace.chain.contracts import Chain, Deployment
from marketplace.chain.deploy import deployment_path
from marketplace.chain.errors import ChainError
from marketplace.chain.events import MAX_RANGE
from marketplace.chain.tx import RPC_FAULTS, rpc_error

log = logging.getLogger(__name__)

# A payout left "sending" this long belongs to a worker that died: queued again.
STUCK_AFTER = timedelta(minutes=10)


def _hex(value) -> str:
    return value.to_0x_hex() if hasattr(value, "to_0x_hex") else str(value)


def _cursor_get(chain_id: int, contract: str, default: int) -> int:
    row = DepositCursor.objects.filter(chain_id=chain_id, contract=contract).first()
    return row.block if row is not None else default


def _cursor_save(chain_id: int, contract: str, block: int) -> None:
    DepositCursor.objects.update_or_create(chain_id=chain_id, contract=contract,
                                           defaults={"block": block})


async def deposits_scan(chain: Chain, *, confirmations: int | None = None) -> int:
    """Record every deposit with enough confirmations since the cursor; how many were
    read. Raises ChainError RPC_UNAVAILABLE when the node is away (the cursor stays)."""
    needed = confirmations or settings.FUNDS_CONFIRMATIONS
    box = chain.deployment.deposits
    chain_id = chain.deployment.chain_id
    try:
        head = await chain.w3.eth.block_number
        last_safe = head - needed + 1  # a block's confirmations: head - block + 1
        cursor = await sync_to_async(_cursor_get)(chain_id, box, chain.deployment.block - 1)
        seen = 0
        start = cursor + 1
        while start <= last_safe:
            end = min(last_safe, start + MAX_RANGE - 1)
            logs = await chain.deposits.events.Deposited().get_logs(from_block=start,
                                                                    to_block=end)
            for item in logs:
                await sync_to_async(funds.deposit_record)(
                    chain_id=chain_id, tx_hash=_hex(item["transactionHash"]),
                    log_index=int(item["logIndex"]), block_number=int(item["blockNumber"]),
                    block_hash=_hex(item["blockHash"]), sender=item["args"]["from"],
                    ref=bytes(item["args"]["ref"]), amount_wei=int(item["args"]["amount"]))
                seen += 1
            await sync_to_async(_cursor_save)(chain_id, box, end)
            start = end + 1
    except RPC_FAULTS as exc:
        raise rpc_error(exc) from None
    return seen


@dataclass(frozen=True)
class Progress:
    """Where a deposit transaction is: pending (not mined), confirming (n of needed),
    credited or unattributed (recorded), failed (reverted), not_ours (mined, but no
    deposit to our box in it), or unknown (the node does not know it, or not yet)."""

    state: str
    confirmations: int
    needed: int
    amount_wei: int = 0


async def deposit_progress(chain: Chain, tx_hash: str) -> Progress:
    needed = settings.FUNDS_CONFIRMATIONS
    recorded = await sync_to_async(
        lambda: list(ChainDeposit.objects.filter(chain_id=chain.deployment.chain_id,
                                                 tx_hash=tx_hash.lower())))()
    if recorded:
        first = recorded[0]
        return Progress(first.state, needed, needed, sum(d.amount_wei for d in recorded))
    try:
        try:
            receipt = await chain.w3.eth.get_transaction_receipt(tx_hash)
        except TransactionNotFound:  # not mined (yet), or not known at all
            known = await _known(chain, tx_hash)
            return Progress("pending" if known else "unknown", 0, needed)
        head = await chain.w3.eth.block_number
    except RPC_FAULTS as exc:
        raise rpc_error(exc) from None
    if receipt["status"] != 1:
        return Progress("failed", 0, needed)
    events = chain.deposits.events.Deposited().process_receipt(receipt, errors=DISCARD)
    mine = [e for e in events if e["address"] == to_checksum_address(chain.deployment.deposits)]
    if not mine:
        return Progress("not_ours", 0, needed)
    amount = sum(int(e["args"]["amount"]) for e in mine)
    return Progress("confirming", head - int(receipt["blockNumber"]) + 1, needed, amount)


async def _known(chain: Chain, tx_hash: str) -> bool:
    try:
        await chain.w3.eth.get_transaction(tx_hash)
    except TransactionNotFound:
        return False
    return True


# ---- Where deposits go ----------------------------------------------------------------


def deployment_recorded() -> Deployment | None:
    """The deployment recorded for settings.FUNDS_CHAIN_ID, read from its file (no node
    is asked); None when there is none or it has no deposit box."""
    path = deployment_path(settings.CHAIN_DEPLOYMENTS_DIR, settings.FUNDS_CHAIN_ID)
    try:
        deployment = Deployment.from_json(path.read_text())
    except (OSError, ValueError, TypeError):
        return None
    return deployment if deployment.deposits else None


def deposit_call_data(ref: str) -> str:
    """The calldata of `deposit(ref)`, for a wallet to send with the ether."""
    return "0x" + keccak(text="deposit(bytes32)")[:4].hex() + ref.removeprefix("0x")


def payment_uri(deployment: Deployment, ref: str) -> str:
    """An ERC-681 payment request for a deposit: what a phone wallet reads from a QR code."""
    return (f"ethereum:{deployment.deposits}@{deployment.chain_id}/deposit?bytes32={ref}")


@asynccontextmanager
async def reader() -> AsyncIterator[Chain]:
    """A read-only handle on the recorded deployment, closed after use; ChainError
    NOT_DEPLOYED when none is recorded."""
    deployment = deployment_recorded()
    if deployment is None:
        raise ChainError("NOT_DEPLOYED", "no deposit box recorded for this chain",
                         permanent=True)
    chain = Chain(web3(settings.CHAIN_RPC), deployment)
    try:
        yield chain
    finally:
        await chain.close()


# ---- Payouts ----------------------------------------------------------------------------


def _payment_id(payout: Payout) -> bytes:
    return bytes.fromhex(payout.payment_id.removeprefix("0x"))


async def _paid_event(chain: Chain, payment_id: bytes) -> tuple[str, int] | None:
    logs = await chain.deposits.events.Paid().get_logs(
        from_block=chain.deployment.block, argument_filters={"id": payment_id})
    if not logs:
        return None
    return _hex(logs[0]["transactionHash"]), int(logs[0]["blockNumber"])


async def payout_send(chain: Chain, payout_id: int) -> str:
    """Send one queued payout; its state afterwards (sent, failed, queued, or skipped when
    another worker has it). A fault that may have reached the chain leaves it queued; the
    next try asks the contract first whether it was paid."""
    payout = await sync_to_async(funds.payout_claim)(payout_id=payout_id)
    if payout is None:
        return "skipped"
    payment_id = _payment_id(payout)
    try:
        if await chain.paid(payment_id):
            return await _record_paid(chain, payout)
        receipt = await chain.pay(payment_id, payout.to_address, payout.amount_wei)
    except ChainError as exc:
        return await _after_error(chain, payout, exc)
    except RPC_FAULTS as exc:
        return await _after_error(chain, payout, rpc_error(exc))
    await sync_to_async(funds.payout_sent)(payout_id=payout.pk,
                                           tx_hash=_hex(receipt["transactionHash"]),
                                           block_number=int(receipt["blockNumber"]))
    log.info("payout %s sent: %s wei to %s", payout.payment_id, payout.amount_wei,
             payout.to_address)
    return PayoutState.SENT


async def _record_paid(chain: Chain, payout: Payout) -> str:
    found = await _paid_event(chain, _payment_id(payout))
    tx_hash, block = found if found else ("", None)
    await sync_to_async(funds.payout_sent)(payout_id=payout.pk, tx_hash=tx_hash,
                                           block_number=block)
    return PayoutState.SENT


async def _after_error(chain: Chain, payout: Payout, exc: ChainError) -> str:
    if exc.code == "AlreadyPaid":
        return await _record_paid(chain, payout)
    if exc.permanent:
        log.warning("payout %s failed for good: %s", payout.payment_id, exc)
        await sync_to_async(funds.payout_failed)(payout_id=payout.pk,
                                                 error=f"{exc.code}: {exc.message}")
        return PayoutState.FAILED
    log.warning("payout %s not sent yet: %s", payout.payment_id, exc)
    await sync_to_async(funds.payout_requeue)(payout_id=payout.pk,
                                              error=f"{exc.code}: {exc.message}")
    return PayoutState.QUEUED


def payouts_due() -> list[int]:
    """Queued payouts, after putting back the ones a dead worker left sending."""
    Payout.objects.filter(state=PayoutState.SENDING,
                          updated_at__lt=timezone.now() - STUCK_AFTER).update(
        state=PayoutState.QUEUED)
    return list(Payout.objects.filter(state=PayoutState.QUEUED).order_by("pk")
                .values_list("pk", flat=True)[:100])


async def payouts_send_due(chain: Chain, payout_ids: list[int] | None = None
                           ) -> dict[str, int]:
    """Send `payout_ids` (by default, every payout due); how many ended in each state."""
    done: dict[str, int] = {}
    if payout_ids is None:
        payout_ids = await sync_to_async(payouts_due)()
    for payout_id in payout_ids:
        state = await payout_send(chain, payout_id)
        done[state] = done.get(state, 0) + 1
    return done


# ---- The books against the chain ----------------------------------------------------------


def _books() -> tuple[int, int, int]:
    recorded = sum(ChainDeposit.objects.values_list("amount_wei", flat=True))
    sent = sum(Payout.objects.filter(state=PayoutState.SENT).values_list("amount_wei",
                                                                         flat=True))
    in_flight = Payout.objects.filter(state__in=(PayoutState.QUEUED, PayoutState.SENDING))
    return recorded, sent, in_flight.count()


async def funds_violations(chain: Chain, *, confirmations: int | None = None) -> list[str]:
    """What does not match between the DepositBox's events and our records; [] when sound:
    deposits seen on chain (with enough confirmations) = credited + unattributed (+ those
    refunded to their senders), and payouts paid on chain = payouts recorded as sent."""
    needed = confirmations or settings.FUNDS_CONFIRMATIONS
    head = await chain.w3.eth.block_number
    first = chain.deployment.block
    deposited = await chain.deposits.events.Deposited().get_logs(
        from_block=first, to_block=max(first, head - needed + 1))
    paid = await chain.deposits.events.Paid().get_logs(from_block=first)
    on_chain_in = sum(int(e["args"]["amount"]) for e in deposited
                      if int(e["blockNumber"]) <= head - needed + 1)
    on_chain_out = sum(int(e["args"]["amount"]) for e in paid)
    recorded, sent, in_flight = await sync_to_async(_books)()
    problems = []
    if on_chain_in != recorded:
        problems.append(f"deposits on chain {on_chain_in} wei != recorded {recorded} wei")
    if on_chain_out != sent and not in_flight:
        problems.append(f"paid on chain {on_chain_out} wei != sent {sent} wei")
    return problems


async def faucet(w3: AsyncWeb3, address: str, amount_wei: int) -> int:
    """Devnet only: give `address` test ether (anvil's balance setter); its new balance.
    ChainError NOT_DEVNET on any other chain."""
    from marketplace.chain.devnet import CHAIN_ID

    address = to_checksum_address(address)
    try:
        if await w3.eth.chain_id != CHAIN_ID:
            raise ChainError("NOT_DEVNET", "the faucet works on the local devnet only",
                             permanent=True)
        balance = int(await w3.eth.get_balance(address)) + amount_wei
        await w3.provider.make_request("anvil_setBalance", [address, hex(balance)])
    except RPC_FAULTS as exc:
        raise rpc_error(exc) from None
    return balance
