"""Sending transactions from one account, safely from many coroutines and processes.

Nonces: a nonce is taken from the node's pending count while holding both an asyncio
lock (coroutines of this process) and an advisory file lock (other processes on this
machine), and the lock is held until the node has accepted the transaction, so the next
sender sees it counted. Gas is estimated with a 10% margin; fees are EIP-1559.

Every transaction is reported to an audit hook twice: when it is sent (with its hash,
known before sending) and when its receipt arrives.
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import time
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from eth_abi import decode as abi_decode
from eth_account.signers.local import LocalAccount
from web3 import AsyncWeb3
from web3.exceptions import (
    ContractCustomError,
    ContractLogicError,
    TimeExhausted,
    Web3Exception,
)

from marketplace.chain.artifacts import error_selectors
from marketplace.chain.errors import ChainError

try:  # py-evm's in-process chain (tests) reports reverts with its own exception
    from eth_tester.exceptions import TransactionFailed as _TesterRevert
except ImportError:  # pragma: no cover - eth-tester is a test dependency only
    class _TesterRevert(Exception):
        pass

log = logging.getLogger(__name__)
REVERTS = (ContractCustomError, ContractLogicError, _TesterRevert)
# What a node that is down, slow or refusing looks like from here.
RPC_FAULTS = (TimeoutError, OSError, aiohttp.ClientError, Web3Exception)

GAS_MARGIN_PERCENT = 10
RECEIPT_TIMEOUT_S = 60.0
# Reverts that mean "not yet" rather than "never": the same call succeeds later.
NOT_YET = frozenset({"DeadlineNotPassed", "DisputeWindowOpen", "CooldownNotOver",
                     "DisputesOpen", "ArbitrationOpen", "ChallengeOpen"})
# Node refusals recognised by their message (nodes do not agree on codes): the code we
# give them, and whether sending again can help.
RPC_REFUSALS = (
    ("insufficient funds", "INSUFFICIENT_FUNDS", True),
    ("nonce too low", "NONCE_CONFLICT", False),
    ("already known", "NONCE_CONFLICT", False),
    ("replacement transaction underpriced", "NONCE_CONFLICT", False),
    ("max fee per gas less than block base fee", "FEE_TOO_LOW", False),
)
DEFAULT_PRIORITY_FEE = 1_000_000_000  # 1 gwei, when the node cannot suggest one


@dataclass
class TxRecord:
    account: str
    contract: str
    function: str
    args: str
    tx_hash: str
    nonce: int
    value: int = 0
    status: str = "sent"  # sent, mined, reverted
    gas_used: int | None = None
    block: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)


AuditHook = Callable[[TxRecord], Awaitable[None]]


async def _no_audit(record: TxRecord) -> None:
    log.debug("tx %s %s.%s %s", record.status, record.contract, record.function, record.tx_hash)


def summarize(args: tuple) -> str:
    parts = []
    for arg in args:
        text = arg.hex() if isinstance(arg, bytes) else repr(arg)
        parts.append(text if len(text) <= 80 else text[:77] + "...")
    return ", ".join(parts)[:500]


def revert_error(exc: Exception, tx_hash: str | None = None) -> ChainError:
    code, message = decode_revert(exc)
    return ChainError(code, message, permanent=code not in NOT_YET, tx_hash=tx_hash)


def rpc_error(exc: BaseException, tx_hash: str | None = None) -> ChainError:
    """A node's refusal or an unreachable node, as one ChainError."""
    text = str(exc)
    lowered = text.lower()
    for needle, code, permanent in RPC_REFUSALS:
        if needle in lowered:
            return ChainError(code, text, permanent=permanent, tx_hash=tx_hash)
    return ChainError("RPC_UNAVAILABLE", text or type(exc).__name__, permanent=False,
                      tx_hash=tx_hash)


def decode_revert(exc: Exception) -> tuple[str, str]:
    """A contract's custom error (name and arguments) or its revert string."""
    data = getattr(exc, "data", None)
    if isinstance(data, dict):
        data = data.get("data")
    cause: BaseException | None = exc
    while data is None and cause is not None:
        data = next((a for a in cause.args if isinstance(a, bytes)), None)
        cause = cause.__cause__ or cause.__context__
    if isinstance(data, bytes):
        data = "0x" + data.hex()
    if isinstance(data, str) and data.startswith("0x") and len(data) >= 10:
        raw = bytes.fromhex(data[2:])
        known = error_selectors().get(raw[:4])
        if known:
            name, types = known
            try:
                values = abi_decode(types, raw[4:])
            except Exception:
                values = ()
            return name, f"{name}({', '.join(map(str, values))})"
    message = getattr(exc, "message", None) or str(exc)
    return "REVERTED", message


class _FileLock:
    def __init__(self, path: Path):
        self.path = path
        self.fd: int | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(self.fd, fcntl.LOCK_EX)

    def release(self) -> None:
        if self.fd is not None:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None


_loop_locks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, asyncio.Lock]]
_loop_locks = weakref.WeakKeyDictionary()


def _process_lock(key: str) -> asyncio.Lock:
    # One lock per account and event loop (asyncio locks cannot cross loops); keyed on the
    # loop itself, so a closed loop's locks go with it and are never handed to a new one.
    locks = _loop_locks.setdefault(asyncio.get_running_loop(), {})
    lock = locks.get(key)
    if lock is None:
        lock = locks[key] = asyncio.Lock()
    return lock


class Sender:
    """Signs and sends transactions for one account."""

    def __init__(self, w3: AsyncWeb3, account: LocalAccount, *, lock_dir: Path,
                 audit: AuditHook | None = None, receipt_timeout_s: float = RECEIPT_TIMEOUT_S):
        self.w3 = w3
        self.account = account
        self.address = account.address
        self.lock_dir = lock_dir
        self.audit = audit or _no_audit
        self.receipt_timeout_s = receipt_timeout_s
        self._chain_id: int | None = None

    async def chain_id(self) -> int:
        if self._chain_id is None:
            self._chain_id = await self.w3.eth.chain_id
        return self._chain_id

    async def _fees(self) -> dict[str, int]:
        block = await self.w3.eth.get_block("latest")
        base = int(block.get("baseFeePerGas", 0) or 0)
        try:
            tip = int(await self.w3.eth.max_priority_fee)
        except (Web3Exception, ValueError, NotImplementedError):
            tip = DEFAULT_PRIORITY_FEE
        return {"maxPriorityFeePerGas": tip, "maxFeePerGas": 2 * base + tip}

    async def transact(self, contract_name: str, fn, *args: Any, value: int = 0) -> dict:
        """Send `fn(*args)`; return the receipt, or raise ChainError with the revert reason."""
        call = fn(*args)
        try:
            gas = await call.estimate_gas({"from": self.address, "value": value})
        except REVERTS as exc:
            raise revert_error(exc) from None
        except RPC_FAULTS as exc:
            raise rpc_error(exc) from None
        try:
            chain_id = await self.chain_id()
        except RPC_FAULTS as exc:
            raise rpc_error(exc) from None
        lock = _FileLock(self.lock_dir / f"{chain_id}-{self.address.lower()}.lock")
        async with _process_lock(self.address):
            await asyncio.to_thread(lock.acquire)
            try:
                try:
                    nonce = await self.w3.eth.get_transaction_count(self.address, "pending")
                    tx = await call.build_transaction({
                        "from": self.address, "value": value, "nonce": nonce,
                        "gas": gas + (gas * GAS_MARGIN_PERCENT + 99) // 100,
                        "chainId": chain_id, **await self._fees(),
                    })
                except RPC_FAULTS as exc:
                    raise rpc_error(exc) from None
                signed = self.account.sign_transaction(tx)
                tx_hash = "0x" + signed.hash.hex().removeprefix("0x")
                record = TxRecord(account=self.address, contract=contract_name,
                                  function=getattr(call, "fn_name", "constructor"),
                                  args=summarize(args), tx_hash=tx_hash,
                                  nonce=nonce, value=value)
                await self.audit(record)  # intent first: a retry can find it
                try:
                    await self.w3.eth.send_raw_transaction(signed.raw_transaction)
                except RPC_FAULTS as exc:
                    record.status = "failed"
                    record.extra = {"error": str(exc)[:300]}
                    await self.audit(record)
                    raise rpc_error(exc, tx_hash) from None
            finally:
                lock.release()
        return await self.wait(record, tx)

    async def wait(self, record: TxRecord, tx: dict | None = None) -> dict:
        """Await the receipt; a transaction that reverted on chain raises its decoded error."""
        started = time.monotonic()
        try:
            receipt = await self.w3.eth.wait_for_transaction_receipt(
                record.tx_hash, timeout=self.receipt_timeout_s, poll_latency=0.05)
        except TimeExhausted:
            raise ChainError("RECEIPT_TIMEOUT",
                             f"no receipt after {time.monotonic() - started:.0f} s",
                             permanent=False, tx_hash=record.tx_hash) from None
        except RPC_FAULTS as exc:
            raise rpc_error(exc, record.tx_hash) from None
        record.gas_used = int(receipt["gasUsed"])
        record.block = int(receipt["blockNumber"])
        record.status = "mined" if receipt["status"] == 1 else "reverted"
        await self.audit(record)
        if receipt["status"] != 1:
            raise await self._why_reverted(record, tx, int(receipt["blockNumber"]))
        return dict(receipt)

    async def _why_reverted(self, record: TxRecord, tx: dict | None, block: int) -> ChainError:
        """Replay a transaction that passed estimation but reverted when mined (another
        sender got there first: a job claimed twice in one block) on the state its block
        left, to name the contract's error."""
        error = ChainError("REVERTED", f"{record.function} reverted on chain", permanent=True,
                           tx_hash=record.tx_hash)
        if tx is None:
            return error
        call = {k: tx[k] for k in ("from", "to", "data", "value", "gas") if k in tx}
        try:
            await self.w3.eth.call(call, block_identifier=block)
        except REVERTS as exc:
            code, message = decode_revert(exc)
            if code != "REVERTED":
                # Mined and failed: this transaction can never succeed, whatever the code.
                return ChainError(code, message, permanent=True, tx_hash=record.tx_hash)
        except RPC_FAULTS:
            pass
        return error
