"""The local devnet: anvil (from npm's @foundry-rs/anvil) with its state saved under var/,
our contracts deployed once and reused, and keystores for the platform wallet, the
arbitrator, the treasury and the local hosts, made from anvil's well-known development
accounts. The arbitrator is an account of its own: the platform wallet pays for jobs, so
it never judges their disputes.

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
from eth_utils import to_checksum_address

from marketplace.chain.connect import connect, web3
from marketplace.chain.contracts import Chain
from marketplace.chain.deploy import Terms, ensure_deployed
from marketplace.chain.errors import DevnetKeyOnPublicChain
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
ROLES = {"platform": 0, "host-1": 1, "host-2": 2, "host-3": 3, "host-4": 4, "arbitrator": 8,
         "treasury": 9}
# Devnet keystores use a light scrypt cost so start-up stays fast; production keystores
# made with `write_keystore` keep eth-account's default.
DEV_SCRYPT_N = 2**12
# anvil also writes its state every so often, so a crash loses at most this much.
STATE_INTERVAL_S = 30
# The mnemonic's accounts (m/44'/60'/0'/0/<index>) that tools print and tutorials copy:
# anvil lists the first 10, hardhat the first 20. Written out because deriving them costs
# over a second (pure-Python elliptic curves); a test derives them again.
WELL_KNOWN_ADDRESSES = frozenset({
    "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266",  # 0
    "0x70997970C51812dc3A010C7d01b50e0d17dc79C8",  # 1
    "0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC",  # 2
    "0x90F79bf6EB2c4f870365E785982E1f101E93b906",  # 3
    "0x15d34AAf54267DB7D7c367839AAf71A00a2C6A65",  # 4
    "0x9965507D1a55bcC2695C58ba16FB37d819B0A4dc",  # 5
    "0x976EA74026E726554dB657fA54763abd0C3a0aa9",  # 6
    "0x14dC79964da2C08b23698B3D3cc7Ca32193d9955",  # 7
    "0x23618e81E3f5cdF7f54C3d65f7FBc0aBf5B21E8f",  # 8
    "0xa0Ee7A142d267C1f36714E4a8F75612F20a79720",  # 9
    "0xBcd4042DE499D14e55001CcbB24a551F3b954096",  # 10
    "0x71bE63f3384f5fb98995898A86B02Fb2426c5788",  # 11
    "0xFABB0ac9d68B0B445fB7357272Ff202C5651694a",  # 12
    "0x1CBd3b2770909D4e10f157cABC84C7264073C9Ec",  # 13
    "0xdF3e18d64BC6A983f673Ab319CCaE4f1a57C7097",  # 14
    "0xcd3B766CCDd6AE721141F452C550Ca635964ce71",  # 15
    "0x2546BcD3c84621e976D8185a91A922aE77ECEc30",  # 16
    "0xbDA5747bFD65F08deb54cb465eB87D40e51B197E",  # 17
    "0xdD2FD4581271e230360230F9337D5c0430Bf44C0",  # 18
    "0x8626f6940E2eb28930eFb4CeF49B2d1F2C9C1199",  # 19
})


def bundled_model_approvals() -> dict[str, bytes]:
    """The models a devnet (and a test chain) approves: the bundled SmolLM2 GGUF, the one
    model id every local host, test and benchmark registers. A host on an OpenAI-compatible
    backend serves it too, from a server loading the same file."""
    from marketplace.weights import SMOLLM2_ID, bundled_model_path, file_sha256

    return {SMOLLM2_ID: file_sha256(bundled_model_path())}


def devnet_terms(treasury: str, arbitrator: str) -> Terms:
    return Terms(treasury=treasury, arbitrator=arbitrator, min_stake_wei=10**16,
                 cooldown_s=3600, fee_bps=250, dispute_window_s=600,
                 arbitration_window_s=3600, models=bundled_model_approvals())


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


def refuse_devnet_key(address: str, *, chain_id: int) -> None:
    """Raise DevnetKeyOnPublicChain when `address` is a devnet account and `chain_id` is
    not the devnet's: the devnet's keys are public, so on any other chain its funds and
    its roles (admin, arbitrator) belong to whoever uses them first."""
    address = to_checksum_address(address)
    if chain_id != CHAIN_ID and address in WELL_KNOWN_ADDRESSES:
        raise DevnetKeyOnPublicChain(address, chain_id, CHAIN_ID)


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
        terms = await asyncio.to_thread(devnet_terms, keys["treasury"].address,
                                        keys["arbitrator"].address)
        return await ensure_deployed(w3, sender, terms, var_dir / "deployments")
    finally:
        await w3.provider.disconnect()


async def ready_chain(role: str, *, rpc_url: str, var_dir: Path,
                      audit: AuditHook | None = None) -> Chain:
    """A handle for one devnet role (platform, arbitrator, host-1..4, treasury) on a running devnet,
    with our contracts deployed once and reused."""
    await ensure_devnet_deployed(rpc_url, var_dir)
    key = dev_keys(var_dir / "devnet" / "keys")[role]
    return await connect(rpc_url, deployments_dir=var_dir / "deployments",
                         lock_dir=var_dir / "locks", keystore=key.keystore,
                         passphrase_file=key.passphrase_file, audit=audit)
