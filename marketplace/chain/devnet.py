"""The local devnet: anvil (from npm's @foundry-rs/anvil) with its state saved under var/,
our contracts deployed once and reused, and keystores for the platform wallet, the
treasury and the local hosts, made from anvil's well-known development accounts.

Paths are given as a `var` directory: keystores in var/devnet/keys, deployments in
var/deployments/<chain id>.json, nonce locks in var/locks (the same layout the Django
settings use, so the product and a database-less host share one devnet)."""

from __future__ import annotations

import asyncio
import json
import secrets
import shutil
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from eth_account import Account

from marketplace.chain.connect import connect, web3
from marketplace.chain.contracts import Chain
from marketplace.chain.deploy import Terms, ensure_deployed
from marketplace.chain.keystore import load_account, write_keystore
from marketplace.chain.tx import AuditHook, Sender

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
# anvil also writes its state every so often, so a crash loses at most this much.
STATE_INTERVAL_S = 30


def devnet_terms(treasury: str) -> Terms:
    return Terms(treasury=treasury, min_stake_wei=10**16, cooldown_s=3600, fee_bps=250,
                 dispute_window_s=600)


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
        args += ["--state", str(state_file), "--state-interval", str(STATE_INTERVAL_S)]
    return args


def wait_for_rpc(url: str, *, timeout_s: float = 20.0) -> None:
    """Block until the node at `url` answers a JSON-RPC call."""
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "eth_chainId", "params": []})
    deadline = time.monotonic() + timeout_s
    while True:
        request = urllib.request.Request(url, data=body.encode(),
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=1):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"no JSON-RPC node answered at {url}") from None
            time.sleep(0.05)


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


async def ensure_devnet_deployed(rpc_url: str, var_dir: Path,
                                 audit: AuditHook | None = None):
    """Deploy our contracts from the devnet platform key unless a deployment of the
    current code is recorded and present; returns the Deployment."""
    keys = dev_keys(var_dir / "devnet" / "keys")
    w3 = web3(rpc_url)
    try:
        account = await asyncio.to_thread(load_account, keys["platform"].keystore,
                                          keys["platform"].passphrase_file)
        sender = Sender(w3, account, lock_dir=var_dir / "locks", audit=audit)
        return await ensure_deployed(w3, sender, devnet_terms(keys["treasury"].address),
                                     var_dir / "deployments")
    finally:
        await w3.provider.disconnect()


async def ready_chain(role: str, *, rpc_url: str, var_dir: Path,
                      audit: AuditHook | None = None) -> Chain:
    """A handle for one devnet role (platform, host-1..4, treasury) on a running devnet,
    with our contracts deployed once and reused."""
    await ensure_devnet_deployed(rpc_url, var_dir)
    key = dev_keys(var_dir / "devnet" / "keys")[role]
    return await connect(rpc_url, deployments_dir=var_dir / "deployments",
                         lock_dir=var_dir / "locks", keystore=key.keystore,
                         passphrase_file=key.passphrase_file, audit=audit)
