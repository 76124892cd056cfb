"""The compiled contracts committed under contracts/artifacts/."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

from eth_utils import keccak

ARTIFACTS = Path(__file__).resolve().parents[2] / "contracts" / "artifacts"
CONTRACTS = ("NodeRegistry", "JobMarketplace", "PaymentEscrow")


@cache
def artifact(name: str) -> dict:
    return json.loads((ARTIFACTS / f"{name}.json").read_text())


def abi(name: str) -> list[dict]:
    return artifact(name)["abi"]


def bytecode(name: str) -> str:
    return artifact(name)["bytecode"]


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
