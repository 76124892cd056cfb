"""Typed async wrappers over NodeRegistry, JobMarketplace, PaymentEscrow and DepositBox.

Amounts are ints in wei. Model ids are strings on our side and keccak256 keys on chain.
Reads need no account; writes go through a Sender (nonces, gas, fees, audit).
"""

from __future__ import annotations

import asyncio
import enum
import json
from dataclasses import dataclass
from typing import Any

from eth_utils import keccak, to_checksum_address
from web3 import AsyncWeb3
from web3.logs import DISCARD

from marketplace.chain import artifacts
from marketplace.chain.errors import ChainError
from marketplace.chain.tx import Sender

ZERO_ADDRESS = "0x0000000000000000000000000000000000000000"
ZERO_HASH = bytes(32)


def model_key(model_id: str) -> bytes:
    return keccak(text=model_id)


class JobStatus(enum.IntEnum):
    NONE = 0
    POSTED = 1
    CLAIMED = 2
    SUBMITTED = 3
    COMPLETED = 4
    DISPUTED = 5
    RESOLVED = 6
    REFUNDED = 7
    CANCELLED = 8


def _fields(contract_name: str, function: str) -> list[str]:
    """The field names of the struct a view function returns, from the ABI."""
    (item,) = (i for i in artifacts.abi(contract_name)
               if i["type"] == "function" and i["name"] == function)
    return [c["name"] for c in item["outputs"][0]["components"]]


@dataclass(frozen=True)
class Deployment:
    chain_id: int
    registry: str
    marketplace: str
    escrow: str
    block: int = 0
    code_version: str = ""
    channels: str = ""  # PaymentChannels (marketplace.chain.channels)
    deposits: str = ""  # the DepositBox: users' deposits in, withdrawals out

    def to_json(self) -> str:
        return json.dumps(self.__dict__, indent=2)

    @classmethod
    def from_json(cls, text: str) -> Deployment:
        return cls(**json.loads(text))


@dataclass(frozen=True)
class NodeInfo:
    address: str
    url: str
    metadata: dict[str, Any]
    stake: int
    active: bool
    completed: int
    failed: int
    disputed: int
    price_per_token_wei: int = 0
    unregister_requested_at: int = 0
    open_disputes: int = 0  # while any is open, the stake cannot be withdrawn


@dataclass(frozen=True)
class ChainJob:
    job_id: int
    client: str
    host: str
    status: JobStatus
    max_tokens: int
    deadline: int
    max_price_per_token_wei: int
    price_per_token_wei: int
    tokens_used: int
    dispute_until: int  # the end of the dispute window; once disputed, the arbitration deadline
    fee_bps: int
    model_tag: bytes

    def serves(self, model: str) -> bool:
        return model_key(model)[:8] == self.model_tag

    @property
    def escrow_wei(self) -> int:
        return self.max_tokens * self.max_price_per_token_wei

    @property
    def arbitration_deadline(self) -> int | None:
        """While disputed: the time after which anyone may expire the dispute."""
        return self.dispute_until if self.status == JobStatus.DISPUTED else None


@dataclass(frozen=True)
class SubmittedResult:
    result_hash: str
    cid: str
    tokens_used: int
    host: str


@dataclass(frozen=True)
class Posted:
    job_id: int
    tx_hash: str
    escrow_wei: int


@dataclass(frozen=True)
class Settled:
    tx_hash: str
    host_amount: int
    fee: int
    refund: int

    @property
    def paid_wei(self) -> int:
        return self.host_amount + self.fee


class Chain:
    """The contracts of one deployment, read by anyone, written by `sender`."""

    def __init__(self, w3: AsyncWeb3, deployment: Deployment, sender: Sender | None = None):
        self.w3 = w3
        self.deployment = deployment
        self.sender = sender
        self.registry = w3.eth.contract(address=deployment.registry,
                                        abi=artifacts.abi("NodeRegistry"))
        self.market = w3.eth.contract(address=deployment.marketplace,
                                      abi=artifacts.abi("JobMarketplace"))
        self.escrow = w3.eth.contract(address=deployment.escrow,
                                      abi=artifacts.abi("PaymentEscrow"))
        self.deposits = w3.eth.contract(address=deployment.deposits or None,
                                        abi=artifacts.abi("DepositBox"))

    async def close(self) -> None:
        """Release the provider's HTTP session (aiohttp warns about unclosed ones)."""
        disconnect = getattr(self.w3.provider, "disconnect", None)
        if disconnect is not None:
            await disconnect()

    @property
    def address(self) -> str:
        if self.sender is None:
            raise ChainError("NO_ACCOUNT", "this chain handle has no account", permanent=True)
        return self.sender.address

    async def _send(self, name: str, fn, *args: Any, value: int = 0) -> dict:
        if self.sender is None:
            raise ChainError("NO_ACCOUNT", "this chain handle cannot send", permanent=True)
        return await self.sender.transact(name, fn, *args, value=value)

    @staticmethod
    def _hash(receipt: dict) -> str:
        value = receipt["transactionHash"]
        return value.to_0x_hex() if hasattr(value, "to_0x_hex") else str(value)

    async def block_time(self) -> int:
        return int((await self.w3.eth.get_block("latest"))["timestamp"])

    # ---- NodeRegistry ---------------------------------------------------------------

    async def register(self, *, api_url: str, metadata: dict, prices: dict[str, int],
                       stake: int) -> str:
        receipt = await self._send(
            "NodeRegistry", self.registry.functions.register, api_url,
            json.dumps(metadata, sort_keys=True), list(prices), list(prices.values()),
            value=stake)
        return self._hash(receipt)

    async def update_node(self, *, api_url: str, metadata: dict, prices: dict[str, int],
                          add_stake: int = 0) -> str:
        receipt = await self._send(
            "NodeRegistry", self.registry.functions.update, api_url,
            json.dumps(metadata, sort_keys=True), list(prices), list(prices.values()),
            value=add_stake)
        return self._hash(receipt)

    async def request_unregister(self) -> str:
        return self._hash(await self._send("NodeRegistry",
                                           self.registry.functions.requestUnregister))

    async def withdraw_stake(self) -> str:
        return self._hash(await self._send("NodeRegistry", self.registry.functions.withdrawStake))

    async def slash(self, node: str, amount: int, reason: str) -> str:
        return self._hash(await self._send("NodeRegistry", self.registry.functions.slash,
                                           node, amount, reason))

    async def approve_model(self, model_id: str, sha256: bytes) -> str:
        """Approve `model_id` as the GGUF file whose sha256 is `sha256` (admin only)."""
        return self._hash(await self._send("NodeRegistry", self.registry.functions.approveModel,
                                           model_id, sha256))

    async def revoke_model(self, model_id: str) -> str:
        return self._hash(await self._send("NodeRegistry", self.registry.functions.revokeModel,
                                           model_id))

    async def model_hash(self, model_id: str) -> bytes:
        """The sha256 of the GGUF file `model_id` names on chain; 32 zero bytes when the
        model is not approved."""
        return bytes(await self.registry.functions.modelHash(model_id).call())

    async def has_role(self, contract: str, role: str, address: str) -> bool:
        """Whether `address` holds `role` ("ARBITRATOR_ROLE", ...) in "registry" or "market"."""
        handle = self.registry if contract == "registry" else self.market
        return bool(await handle.functions.hasRole(keccak(text=role),
                                                   to_checksum_address(address)).call())

    async def set_blocked(self, account: str, blocked: bool) -> str:
        return self._hash(await self._send("NodeRegistry", self.registry.functions.setBlocked,
                                           account, blocked))

    async def min_stake(self) -> int:
        return int(await self.registry.functions.minStake().call())

    async def get_node(self, address: str, model: str | None = None) -> NodeInfo:
        address = to_checksum_address(address)
        node = self.registry.functions.getNode(address).call()
        if model is None:
            raw, price = await node, 0
        else:  # both reads at once: one round trip's wait, not two
            raw, price = await asyncio.gather(
                node, self.registry.functions.activePrice(address, model_key(model)).call())
        n = dict(zip(_fields("NodeRegistry", "getNode"), raw, strict=True))
        price = int(price)
        try:
            metadata = json.loads(n["metadata"]) if n["metadata"] else {}
        except ValueError:
            metadata = {}
        return NodeInfo(address=address, url=n["apiUrl"], metadata=metadata,
                        stake=int(n["stake"]), active=bool(n["active"]),
                        completed=int(n["completed"]), failed=int(n["failed"]),
                        disputed=int(n["disputed"]), price_per_token_wei=price,
                        unregister_requested_at=int(n["unregisterRequestedAt"]),
                        open_disputes=int(n["openDisputes"]))

    async def active_nodes(self, model: str) -> list[NodeInfo]:
        addresses = await self.registry.functions.activeNodesForModel(model).call()
        nodes = await asyncio.gather(*(self.get_node(a, model) for a in addresses))
        return [n for n in nodes if n.active and n.price_per_token_wei > 0]

    # ---- JobMarketplace -------------------------------------------------------------

    async def post_job(self, *, model: str, prompt_hash: bytes, max_tokens: int,
                       max_price_per_token_wei: int, deadline: int,
                       host: str | None = None) -> Posted:
        escrow = max_tokens * max_price_per_token_wei
        receipt = await self._send(
            "JobMarketplace", self.market.functions.postJob, model, prompt_hash, max_tokens,
            max_price_per_token_wei, deadline, host or ZERO_ADDRESS, value=escrow)
        (event,) = self.market.events.JobPosted().process_receipt(receipt, errors=DISCARD)
        return Posted(job_id=int(event["args"]["jobId"]), tx_hash=self._hash(receipt),
                      escrow_wei=escrow)

    async def claim_job(self, job_id: int, model: str) -> str:
        return self._hash(await self._send("JobMarketplace", self.market.functions.claimJob,
                                           job_id, model))

    async def submit_result(self, job_id: int, *, result_hash: bytes, cid: str,
                            tokens_used: int) -> str:
        return self._hash(await self._send("JobMarketplace", self.market.functions.submitResult,
                                           job_id, result_hash, cid, tokens_used))

    def _settled(self, receipt: dict, event_name: str) -> Settled:
        (event,) = getattr(self.market.events, event_name)().process_receipt(receipt,
                                                                            errors=DISCARD)
        args = event["args"]
        return Settled(tx_hash=self._hash(receipt), host_amount=int(args["hostAmount"]),
                       fee=int(args["fee"]), refund=int(args["refund"]))

    async def cancel_job(self, job_id: int) -> str:
        """Take back a job that no host has claimed yet (the whole escrow is credited)."""
        return self._hash(await self._send("JobMarketplace", self.market.functions.cancelJob,
                                           job_id))

    async def accept_result(self, job_id: int) -> Settled:
        receipt = await self._send("JobMarketplace", self.market.functions.acceptResult, job_id)
        return self._settled(receipt, "JobCompleted")

    async def finalize(self, job_id: int) -> Settled:
        receipt = await self._send("JobMarketplace", self.market.functions.finalize, job_id)
        return self._settled(receipt, "JobCompleted")

    async def dispute(self, job_id: int, reason: str) -> str:
        return self._hash(await self._send("JobMarketplace", self.market.functions.disputeJob,
                                           job_id, reason))

    async def resolve_dispute(self, job_id: int, host_share_bps: int,
                              slash_wei: int = 0) -> Settled:
        """The arbitrator's verdict: the host's share of its payment, and `slash_wei` of its
        stake to the treasury."""
        receipt = await self._send("JobMarketplace", self.market.functions.resolveDispute,
                                   job_id, host_share_bps, slash_wei)
        return self._settled(receipt, "DisputeResolved")

    async def expire_dispute(self, job_id: int) -> Settled:
        """End a dispute past its arbitration deadline, as if the submitted result stood."""
        receipt = await self._send("JobMarketplace", self.market.functions.expireDispute, job_id)
        return self._settled(receipt, "DisputeExpired")

    async def refund_expired(self, job_id: int) -> str:
        return self._hash(await self._send("JobMarketplace",
                                           self.market.functions.refundExpired, job_id))

    async def get_job(self, job_id: int) -> ChainJob:
        j = dict(zip(_fields("JobMarketplace", "getJob"),
                     await self.market.functions.getJob(job_id).call(), strict=True))
        return ChainJob(
            job_id=job_id, client=j["client"], host=j["host"], status=JobStatus(j["state"]),
            max_tokens=int(j["maxTokens"]), deadline=int(j["deadline"]),
            max_price_per_token_wei=int(j["maxPricePerToken"]),
            price_per_token_wei=int(j["price"]), tokens_used=int(j["tokensUsed"]),
            dispute_until=int(j["disputeUntil"]), fee_bps=int(j["feeBps"]),
            model_tag=bytes(j["modelTag"]),
        )

    async def fee_bps(self) -> int:
        return int(await self.market.functions.feeBps().call())

    async def dispute_window(self) -> int:
        return int(await self.market.functions.disputeWindow().call())

    async def arbitration_window(self) -> int:
        return int(await self.market.functions.arbitrationWindow().call())

    async def set_arbitration_window(self, seconds: int) -> str:
        return self._hash(await self._send("JobMarketplace",
                                           self.market.functions.setArbitrationWindow, seconds))

    async def job_posted_event(self, job_id: int, from_block: int = 0) -> dict | None:
        logs = await self.market.events.JobPosted().get_logs(
            from_block=from_block, argument_filters={"jobId": job_id})
        return dict(logs[0]["args"]) if logs else None

    async def submitted_result(self, job_id: int, from_block: int = 0) -> SubmittedResult | None:
        """The result hash, CID and tokens the host committed to, from its event."""
        logs = await self.market.events.ResultSubmitted().get_logs(
            from_block=from_block, argument_filters={"jobId": job_id})
        if not logs:
            return None
        args = logs[-1]["args"]
        return SubmittedResult(result_hash="0x" + bytes(args["resultHash"]).hex(),
                               cid=args["cid"], tokens_used=int(args["tokensUsed"]),
                               host=args["host"])

    # ---- PaymentEscrow --------------------------------------------------------------

    async def withdrawable(self, address: str) -> int:
        return int(await self.escrow.functions.withdrawable(to_checksum_address(address)).call())

    async def withdraw(self) -> str:
        return self._hash(await self._send("PaymentEscrow", self.escrow.functions.withdraw))

    async def escrow_totals(self) -> tuple[int, int, int]:
        """(contract balance, total escrowed, total withdrawable)."""
        balance = await self.w3.eth.get_balance(self.deployment.escrow)
        escrowed = await self.escrow.functions.totalEscrowed().call()
        owed = await self.escrow.functions.totalWithdrawable().call()
        return int(balance), int(escrowed), int(owed)

    # ---- DepositBox -----------------------------------------------------------------

    async def deposit(self, ref: bytes, value: int) -> str:
        """Fund the account whose deposit reference is `ref`; the transaction's hash."""
        return self._hash(await self._send("DepositBox", self.deposits.functions.deposit, ref,
                                           value=value))

    async def pay(self, payment_id: bytes, to: str, amount: int) -> dict:
        """Pay `amount` out of the deposit box to `to`, once per `payment_id` (a second
        payment under the same id reverts AlreadyPaid); the receipt."""
        return await self._send("DepositBox", self.deposits.functions.pay, payment_id,
                                to_checksum_address(to), amount)

    async def paid(self, payment_id: bytes) -> bool:
        return bool(await self.deposits.functions.paid(payment_id).call())
