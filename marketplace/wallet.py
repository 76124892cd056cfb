"""The product's own accounts on the chain: the platform wallet, which pays for jobs, and
the arbitrator, which resolves their disputes (a key of its own: the wallet that pays must
never judge). Each is a chain handle that records every transaction it sends in the audit
trail (ChainTransaction). The devnet's well-known keys are refused on any chain but the
devnet."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path

from asgiref.sync import sync_to_async
from django.conf import settings
from eth_account.signers.local import LocalAccount
from eth_utils import to_checksum_address
from web3 import AsyncWeb3

from marketplace.chain.connect import http_provider
from marketplace.chain.contracts import Chain
from marketplace.chain.deploy import load_deployment
from marketplace.chain.devnet import dev_keys, refuse_devnet_key
from marketplace.chain.errors import ChainError
from marketplace.chain.keystore import load_account
from marketplace.chain.tx import Sender, TxRecord

# One handle per event loop (by its id) for each account. Code that closes a loop's
# sessions pops that loop's entry from both.
_handles: dict[int, Chain] = {}
_arbitrator_handles: dict[int, Chain] = {}


def _record(record: TxRecord, chain_id: int) -> None:
    from marketplace.models import ChainTransaction

    ChainTransaction.objects.update_or_create(
        tx_hash=record.tx_hash,
        defaults={
            "chain_id": chain_id, "account": record.account, "contract": record.contract,
            "function": record.function, "args": record.args, "nonce": record.nonce,
            "value_wei": Decimal(record.value), "status": record.status,
            "gas_used": record.gas_used, "block": record.block,
            "error": str(record.extra.get("error", "")),
        },
    )


def audit_recorder(chain_id: int):
    record_sync = sync_to_async(_record)

    async def audit(record: TxRecord) -> None:
        await record_sync(record, chain_id)

    return audit


def wallet_files() -> tuple[Path, Path]:
    if settings.WALLET_KEYSTORE_FILE:
        return Path(settings.WALLET_KEYSTORE_FILE), Path(settings.WALLET_PASSPHRASE_FILE)
    key = dev_keys(settings.DEVNET_DIR / "keys")["platform"]
    return key.keystore, key.passphrase_file


def platform_account(chain_id: int) -> LocalAccount:
    """The platform wallet, for the chain with id `chain_id` (as its node reports it).

    Raises ChainError: KEYSTORE_* when the files cannot be read, DEVNET_KEY_ON_PUBLIC_CHAIN
    when the wallet is a devnet account and the chain is not the devnet."""
    keystore, passphrase = wallet_files()
    account = load_account(keystore, passphrase)
    refuse_devnet_key(account.address, chain_id=chain_id)
    return account


def arbitrator_files() -> tuple[Path, Path]:
    if settings.MARKETPLACE_ARBITRATOR_KEYSTORE_FILE:
        return (Path(settings.MARKETPLACE_ARBITRATOR_KEYSTORE_FILE),
                Path(settings.MARKETPLACE_ARBITRATOR_PASSPHRASE_FILE))
    key = dev_keys(settings.DEVNET_DIR / "keys")["arbitrator"]
    return key.keystore, key.passphrase_file


def keystore_address(path: Path) -> str | None:
    """The address a keystore names in its clear JSON (read without decrypting)."""
    try:
        address = json.loads(path.read_text()).get("address")
    except (OSError, ValueError, AttributeError):
        return None
    return to_checksum_address(address) if address else None


def arbitrator_account(chain_id: int) -> LocalAccount:
    """The arbitrator's key, for the chain with id `chain_id`.

    Raises ChainError: KEYSTORE_* when the files cannot be read, DEVNET_KEY_ON_PUBLIC_CHAIN
    as the platform wallet does, ARBITRATOR_IS_PLATFORM_WALLET when it is the same account
    as the platform wallet."""
    keystore, passphrase = arbitrator_files()
    account = load_account(keystore, passphrase)
    refuse_devnet_key(account.address, chain_id=chain_id)
    platform_keystore, _ = wallet_files()
    if account.address == keystore_address(platform_keystore):
        raise ChainError("ARBITRATOR_IS_PLATFORM_WALLET",
                         f"the arbitrator {account.address} is the platform wallet, which "
                         "pays for the jobs it would judge: give it a key of its own",
                         permanent=True)
    return account


def web3(rpc_url: str | None = None) -> AsyncWeb3:
    return AsyncWeb3(http_provider(rpc_url or settings.CHAIN_RPC,
                                   request_kwargs={"timeout": 10}))


async def platform_chain() -> Chain:
    """The platform wallet's chain handle for this event loop (made once, then reused)."""
    return await _chain(_handles, platform_account)


async def arbitrator_chain() -> Chain:
    """The arbitrator's chain handle for this event loop (made once, then reused): the
    only handle that resolves disputes."""
    return await _chain(_arbitrator_handles, arbitrator_account)


async def _chain(handles: dict[int, Chain], load: Callable[[int], LocalAccount]) -> Chain:
    key = id(asyncio.get_running_loop())
    handle = handles.get(key)
    if handle is not None:
        return handle
    w3 = web3()
    try:
        # The chain id is read once, here, and the key checked against it before
        # anything is signed: the handle is reused for the life of the loop.
        chain_id = await w3.eth.chain_id
        account = await asyncio.to_thread(load, chain_id)
        deployment = await load_deployment(w3, settings.CHAIN_DEPLOYMENTS_DIR)
    except (OSError, TimeoutError) as exc:
        await w3.provider.disconnect()
        raise ChainError("RPC_UNAVAILABLE", f"{settings.CHAIN_RPC}: {exc}",
                         permanent=False) from None
    except ChainError:
        await w3.provider.disconnect()
        raise
    if deployment is None:
        await w3.provider.disconnect()
        raise ChainError("NOT_DEPLOYED", "no contracts recorded for this chain: run "
                         "`python manage.py devnet up` or `deploy_contracts`", permanent=True)
    sender = Sender(w3, account, lock_dir=settings.VAR_DIR / "locks",
                    audit=audit_recorder(chain_id))
    handle = handles[key] = Chain(w3, deployment, sender)
    return handle


async def close_loop_handles() -> None:
    """Close and forget this event loop's handles (the platform wallet's and the
    arbitrator's), as a loop's owner does before the loop goes."""
    key = id(asyncio.get_running_loop())
    for handles in (_handles, _arbitrator_handles):
        handle = handles.pop(key, None)
        if handle is not None:
            await handle.close()
