"""The compiled contracts committed under contracts/artifacts/."""

from __future__ import annotations

import hashlib
import json
from functools import cache
from pathlib import Path

from eth_utils import keccak

ARTIFACTS = Path(__file__).resolve().parents[2] / "contracts" / "artifacts"
CONTRACTS = ("NodeRegistry", "JobMarketplace", "PaymentEscrow", "PaymentChannels")


@cache
def artifact(name: str) -> dict:
    return json.loads((ARTIFACTS / f"{name}.json").read_text())


def abi(name: str) -> list[dict]:
    return artifact(name)["abi"]


def bytecode(name: str) -> str:
    return artifact(name)["bytecode"]


@cache
def code_version() -> str:
    """A fingerprint of the compiled contracts, recorded with each deployment so that a
    deployment of older code is noticed and replaced, not talked to with a newer ABI."""
    digest = hashlib.sha256()
    for name in CONTRACTS:
        digest.update(bytecode(name).encode())
    return digest.hexdigest()[:16]


@cache
def error_selectors() -> dict[bytes, tuple[str, list[str]]]:
    """4-byte selector → (custom error name, argument types), over all our contracts."""
    found: dict[bytes, tuple[str, list[str]]] = {}
    for name in (*CONTRACTS, "ReentrantWithdrawer"):
        for item in abi(name):
            if item["type"] == "error":
                types = [i["type"] for i in item["inputs"]]
                signature = f"{item['name']}({','.join(types)})"
                found[keccak(text=signature)[:4]] = (item["name"], types)
    return found
