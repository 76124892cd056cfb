"""Payment channels (contracts/src/PaymentChannels.sol): the contract's calls, and vouchers.

A voucher is the payer's EIP-712 signature of `Voucher(uint256 channelId, uint256 amount)`
under the domain {name "InkMarket Channels", version "1", chainId, verifyingContract}:
the cumulative amount the host has earned on the channel. `VoucherSigner` and
`voucher_signer` compute the digest here (the domain separator once per channel contract)
and sign or recover with secp256k1 through coincurve, so neither side pays for generic
typed-data encoding on every voucher. docs/sessions.md.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

import coincurve
from Crypto.Hash import keccak as _keccak256
from eth_utils import keccak, to_checksum_address

from marketplace.chain import artifacts
from marketplace.chain.contracts import Chain
from marketplace.chain.errors import ChainError

DOMAIN_NAME = "InkMarket Channels"
DOMAIN_VERSION = "1"
_DOMAIN_TYPEHASH = keccak(text="EIP712Domain(string name,string version,uint256 chainId,"
                               "address verifyingContract)")
VOUCHER_TYPEHASH = keccak(text="Voucher(uint256 channelId,uint256 amount)")
MAX_AMOUNT = 2**96 - 1  # a deposit is a uint96
# secp256k1's group order: a signature's s above half of it is the malleable twin (EIP-2).
SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141


def domain_separator(chain_id: int, contract: str) -> bytes:
    return keccak(_DOMAIN_TYPEHASH + keccak(text=DOMAIN_NAME) + keccak(text=DOMAIN_VERSION)
                  + chain_id.to_bytes(32, "big")
                  + bytes(12) + bytes.fromhex(to_checksum_address(contract)[2:]))


def voucher_digest(separator: bytes, channel_id: int, amount: int) -> bytes:
    if not 0 <= amount <= MAX_AMOUNT or not 0 < channel_id < 2**256:
        raise ValueError("a voucher's channel id or amount is out of range")
    struct = _keccak(VOUCHER_TYPEHASH + channel_id.to_bytes(32, "big")
                     + amount.to_bytes(32, "big"))
    return _keccak(b"\x19\x01" + separator + struct)


def _keccak(data: bytes) -> bytes:
    return _keccak256.new(data=data, digest_bits=256).digest()


class BadVoucher(ValueError):
    """A voucher that is not the payer's signature of that channel and amount."""


@dataclass(frozen=True)
class Voucher:
    channel_id: int
    amount: int  # wei, cumulative
    signature: bytes  # 65 bytes: r, s, v (27 or 28)

    def to_json(self) -> dict[str, Any]:
        return {"channelId": self.channel_id, "amount": str(self.amount),
                "signature": "0x" + self.signature.hex()}


class VoucherSigner:
    """Signs and checks the vouchers of one channel contract."""

    def __init__(self, chain_id: int, contract: str):
        self.chain_id = chain_id
        self.contract = to_checksum_address(contract)
        self.separator = domain_separator(chain_id, contract)

    def sign(self, private_key: bytes | coincurve.PrivateKey, channel_id: int,
             amount: int) -> Voucher:
        """Sign with the payer's key (RFC 6979 nonces, low s: the signature eth-account's
        sign_typed_data gives). Pass a coincurve.PrivateKey to skip parsing the key."""
        if not isinstance(private_key, coincurve.PrivateKey):
            private_key = coincurve.PrivateKey(private_key)
        raw = private_key.sign_recoverable(voucher_digest(self.separator, channel_id, amount),
                                           hasher=None)
        return Voucher(channel_id, amount, raw[:64] + bytes([raw[64] + 27]))

    def signer(self, voucher: Voucher) -> str:
        """The address that signed `voucher` (raises BadVoucher for a malformed one)."""
        return to_checksum_address(self._signer(voucher))

    def _signer(self, voucher: Voucher) -> bytes:
        raw = voucher.signature
        if len(raw) != 65 or raw[64] not in (27, 28):
            raise BadVoucher("a voucher's signature is 65 bytes ending in 27 or 28")
        s = int.from_bytes(raw[32:64], "big")
        if s > SECP256K1_N // 2:
            raise BadVoucher("a voucher's signature must have a low s (EIP-2)")
        try:
            public = coincurve.PublicKey.from_signature_and_message(
                raw[:64] + bytes([raw[64] - 27]),
                voucher_digest(self.separator, voucher.channel_id, voucher.amount), hasher=None)
        except ValueError as exc:
            raise BadVoucher(f"the voucher's signature does not verify: {exc}") from None
        return _keccak(public.format(compressed=False)[1:])[-20:]

    def check(self, voucher: Voucher, payer: str) -> None:
        if self._signer(voucher) != bytes.fromhex(payer.removeprefix("0x")):
            raise BadVoucher("the voucher is not signed by the channel's payer")


def voucher_from_json(data: Any) -> Voucher:
    """A voucher as it comes over the wire; ValueError for anything malformed."""
    if not isinstance(data, dict):
        raise ValueError("a voucher is an object")
    try:
        channel_id = int(data["channelId"])
        amount = int(str(data["amount"]), 10)
        signature = bytes.fromhex(str(data["signature"]).removeprefix("0x"))
    except (KeyError, TypeError, ValueError):
        raise ValueError("a voucher has channelId, amount (decimal wei) and a hex "
                         "signature") from None
    if not 0 < channel_id < 2**64 or not 0 <= amount <= MAX_AMOUNT or len(signature) != 65:
        raise ValueError("a voucher's channel id, amount or signature is out of range")
    return Voucher(channel_id, amount, signature)


class ChannelState(enum.Enum):
    OPEN = "open"
    EXITING = "exiting"
    CLOSED = "closed"


@dataclass(frozen=True)
class ChannelInfo:
    channel_id: int
    payer: str
    host: str
    deposit: int
    fee_bps: int
    exit_at: int
    closed: bool

    @property
    def state(self) -> ChannelState:
        if self.closed:
            return ChannelState.CLOSED
        return ChannelState.EXITING if self.exit_at else ChannelState.OPEN


@dataclass(frozen=True)
class ChannelSettled:
    tx_hash: str
    host_amount: int
    fee: int
    refund: int


class Channels:
    """The PaymentChannels contract of a deployment, written by the chain's sender."""

    def __init__(self, chain: Chain):
        if not chain.deployment.channels:
            raise ChainError("NO_CHANNELS", "this deployment has no PaymentChannels contract",
                             permanent=True)
        self.chain = chain
        self.contract = chain.w3.eth.contract(address=chain.deployment.channels,
                                              abi=artifacts.abi("PaymentChannels"))
        self.vouchers = VoucherSigner(chain.deployment.chain_id, chain.deployment.channels)

    async def _send(self, fn, *args, value: int = 0) -> dict:
        return await self.chain._send("PaymentChannels", fn, *args, value=value)

    def _event(self, receipt: dict, name: str) -> dict:
        from web3.logs import DISCARD

        (event,) = getattr(self.contract.events, name)().process_receipt(receipt,
                                                                          errors=DISCARD)
        return dict(event["args"])

    async def open(self, host: str, deposit_wei: int) -> int:
        return (await self.open_with_tx(host, deposit_wei))[0]

    async def open_with_tx(self, host: str, deposit_wei: int) -> tuple[int, str]:
        """The new channel's id and the hash of the transaction that opened it."""
        receipt = await self._send(self.contract.functions.open, to_checksum_address(host),
                                   value=deposit_wei)
        return int(self._event(receipt, "ChannelOpened")["channelId"]), Chain._hash(receipt)

    async def top_up(self, channel_id: int, wei: int) -> str:
        return Chain._hash(await self._send(self.contract.functions.topUp, channel_id,
                                            value=wei))

    async def close(self, voucher: Voucher) -> ChannelSettled:
        receipt = await self._send(self.contract.functions.close, voucher.channel_id,
                                   voucher.amount, voucher.signature)
        return self._settled(receipt)

    async def start_exit(self, channel_id: int) -> int:
        receipt = await self._send(self.contract.functions.startExit, channel_id)
        return int(self._event(receipt, "ExitStarted")["exitAt"])

    async def finish_exit(self, channel_id: int) -> ChannelSettled:
        return self._settled(await self._send(self.contract.functions.finishExit, channel_id))

    def _settled(self, receipt: dict) -> ChannelSettled:
        args = self._event(receipt, "ChannelClosed")
        return ChannelSettled(Chain._hash(receipt), int(args["hostAmount"]), int(args["fee"]),
                              int(args["refund"]))

    async def withdraw(self) -> str:
        return Chain._hash(await self._send(self.contract.functions.withdraw))

    async def withdrawable(self, address: str) -> int:
        return int(await self.contract.functions.withdrawable(
            to_checksum_address(address)).call())

    async def get(self, channel_id: int) -> ChannelInfo:
        c = await self.contract.functions.getChannel(channel_id).call()
        payer, deposit, host, fee_bps, exit_at, closed = c
        return ChannelInfo(channel_id, payer, host, int(deposit), int(fee_bps), int(exit_at),
                           bool(closed))

    async def totals(self) -> tuple[int, int, int]:
        """(contract balance, total deposits of open channels, total withdrawable)."""
        balance = await self.chain.w3.eth.get_balance(self.contract.address)
        deposits = await self.contract.functions.totalDeposits().call()
        owed = await self.contract.functions.totalWithdrawable().call()
        return int(balance), int(deposits), int(owed)

    async def challenge_period(self) -> int:
        return int(await self.contract.functions.challengePeriod().call())
