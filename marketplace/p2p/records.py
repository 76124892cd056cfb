"""Signed host records: what a host says about itself on the DHT and on gossip.

A record carries the host's address, URL, its capabilities body (models and prices, load,
queue, channel terms, encryption key, version: the same JSON as GET /v1/capabilities), a
sequence number, when it was issued and how long it lives. It is signed with the host's
chain key (EIP-191 over the canonical JSON), so whoever passes it on cannot change it, and
a record is believed only from the key it names. Whether that key is registered and staked
is the gate's question (marketplace.p2p.gate), not this module's.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

from eth_account import Account
from eth_account.messages import encode_defunct
from eth_utils import is_address, to_checksum_address

FUTURE_SKEW_S = 30  # clocks differ; a record from further ahead is refused


class BadRecord(ValueError):
    """A record we ignore; `reason` labels the metric (inkmarket_p2p_records_rejected_total)."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class HostRecord:
    address: str
    url: str
    capabilities: dict[str, Any]
    seq: int
    issued_at: int
    ttl_s: int
    leaving: bool = False
    signer_peer: str | None = field(default=None, compare=False)

    @property
    def expires_at(self) -> int:
        return self.issued_at + self.ttl_s

    def expired(self, now: float | None = None) -> bool:
        return (time.time() if now is None else now) >= self.expires_at

    def prices(self) -> dict[str, int]:
        """Model id -> wei per token, as the host says (the chain's price gates payment)."""
        found = {}
        for model in self.capabilities.get("models") or []:
            try:
                found[str(model["id"])] = int(model["pricePerToken"])
            except (KeyError, TypeError, ValueError):
                continue
        return found

    def body(self) -> dict[str, Any]:
        return {"address": self.address, "url": self.url, "capabilities": self.capabilities,
                "seq": self.seq, "issuedAt": self.issued_at, "ttl": self.ttl_s,
                "leaving": self.leaving}


def _canonical(body: dict[str, Any]) -> str:
    return json.dumps(body, sort_keys=True, separators=(",", ":"))


def sign(record: HostRecord, private_key: bytes) -> bytes:
    text = _canonical(record.body())
    signature = Account.sign_message(encode_defunct(text=text), private_key).signature
    return json.dumps({"record": text, "sig": "0x" + bytes(signature).hex()}).encode()


def verify(data: bytes, *, max_bytes: int, max_ttl_s: int,
           now: float | None = None) -> HostRecord:
    """The record in `data` if it is well formed, within the limits, current and signed by
    the address it names; BadRecord otherwise. Size first: nothing oversized is parsed."""
    if len(data) > max_bytes:
        raise BadRecord("oversized", f"record of {len(data)} bytes (limit {max_bytes})")
    try:
        outer = json.loads(data)
        text, sig = outer["record"], outer["sig"]
        body = json.loads(text)
        address, url = body["address"], body["url"]
        seq, issued_at, ttl = int(body["seq"]), int(body["issuedAt"]), int(body["ttl"])
        capabilities, leaving = body["capabilities"], bool(body.get("leaving", False))
    except (ValueError, KeyError, TypeError):
        raise BadRecord("malformed", "not a host record") from None
    if not (isinstance(text, str) and isinstance(sig, str) and isinstance(url, str)
            and isinstance(address, str) and is_address(address)
            and isinstance(capabilities, dict) and seq >= 0 and 0 < ttl):
        raise BadRecord("malformed", "a host record's fields are missing or of the wrong type")
    if ttl > max_ttl_s:
        raise BadRecord("malformed", f"a record may live {max_ttl_s} s at most")
    try:
        signer = Account.recover_message(encode_defunct(text=text), signature=sig)
    except (ValueError, TypeError) as exc:
        raise BadRecord("signature", f"unreadable signature: {exc}") from None
    if signer.lower() != address.lower():
        raise BadRecord("signature", f"signed by {signer}, not by {address}")
    now = time.time() if now is None else now
    if issued_at > now + FUTURE_SKEW_S:
        raise BadRecord("expired", "issued in the future")
    if issued_at + ttl <= now:
        raise BadRecord("expired", "the record's time to live has passed")
    return HostRecord(address=to_checksum_address(address), url=url,
                      capabilities=capabilities, seq=seq, issued_at=issued_at, ttl_s=ttl,
                      leaving=leaving)


# py-libp2p keeps at most k = 20 providers per key on each node and ignores newer ones
# until the old records expire (48 h): a model's providers are spread over this many keys,
# each host on the one its address picks, so 20 x SHARDS hosts fit.
SHARDS = 4


def model_keys(model: str) -> list[str]:
    """The DHT keys a model's providers are announced under, one a shard."""
    from eth_utils import keccak

    return [keccak(text=f"inkmarket/model/{model}/{shard}").hex() for shard in range(SHARDS)]


def model_key(model: str, address: str) -> str:
    """The DHT key this host provides `model` under."""
    return model_keys(model)[int(address.lower(), 16) % SHARDS]


def model_topic(model: str) -> str:
    """The gossipsub topic a model's live changes go out on."""
    return f"/inkmarket/model/{model}/1"
