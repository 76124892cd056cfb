"""The local devnet: anvil (from npm's @foundry-rs/anvil) with its state saved under var/,
our contracts deployed once and reused, and keystores for the platform wallet, the
treasury and the local hosts, made from anvil's well-known development accounts."""

from __future__ import annotations

import secrets
import shutil
from dataclasses import dataclass
from pathlib import Path

from eth_account import Account

from marketplace.chain.keystore import write_keystore

ROOT = Path(__file__).resolve().parents[2]
ANVIL_CANDIDATES = (
    ROOT / "node_modules" / "@foundry-rs" / "anvil-linux-amd64" / "bin" / "anvil",
    ROOT / "node_modules" / ".bin" / "anvil",
)
# anvil's default development mnemonic: public knowledge, for a local chain only.
DEV_MNEMONIC = "test test test test test test test test test test test junk"
CHAIN_ID = 31337
ROLES = {"platform": 0, "host-1": 1, "host-2": 2, "host-3": 3, "host-4": 4, "treasury": 9}
# Devnet keystores use a light scrypt cost so start-up stays fast; production keystores
# made with `write_keystore` keep eth-account's default.
DEV_SCRYPT_N = 2**12


def anvil_binary() -> str:
    for candidate in ANVIL_CANDIDATES:
        if candidate.exists():
            return str(candidate)
    found = shutil.which("anvil")
    if found:
        return found
    raise FileNotFoundError("anvil is not installed: run `npm ci` (package @foundry-rs/anvil)")


def anvil_args(port: int, state_file: Path | None) -> list[str]:
    args = [anvil_binary(), "--host", "127.0.0.1", "--port", str(port), "--chain-id",
            str(CHAIN_ID), "--accounts", "10", "--balance", "10000", "--mnemonic", DEV_MNEMONIC]
    if state_file is not None:
        state_file.parent.mkdir(parents=True, exist_ok=True)
        args += ["--state", str(state_file)]
    return args


def dev_private_key(index: int) -> bytes:
    Account.enable_unaudited_hdwallet_features()
    account = Account.from_mnemonic(DEV_MNEMONIC, account_path=f"m/44'/60'/0'/0/{index}")
    return bytes(account.key)


@dataclass(frozen=True)
class DevKey:
    role: str
    address: str
    keystore: Path
    passphrase_file: Path


def dev_keys(directory: Path) -> dict[str, DevKey]:
    """Keystores for each devnet role, written once under `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    passphrase_file = directory / "passphrase"
    if not passphrase_file.exists():
        passphrase_file.write_text(secrets.token_urlsafe(24))
        passphrase_file.chmod(0o600)
    passphrase = passphrase_file.read_text().strip()
    keys = {}
    for role, index in ROLES.items():
        path = directory / f"{role}.json"
        key = dev_private_key(index)
        address = Account.from_key(key).address
        if not path.exists():
            write_keystore(path, key, passphrase, kdf_iterations=DEV_SCRYPT_N)
        keys[role] = DevKey(role, address, path, passphrase_file)
    return keys
