"""A ready chain handle: the recorded deployment for the node's chain, and an account
from its keystore to send with (or none, to only read)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from web3 import AsyncHTTPProvider, AsyncWeb3

from marketplace.chain.contracts import Chain
from marketplace.chain.deploy import load_deployment
from marketplace.chain.errors import ChainError
from marketplace.chain.keystore import load_account
from marketplace.chain.tx import RPC_FAULTS, AuditHook, Sender, rpc_error


class _NoLock:
    """A lock that is never held (the `threading.Lock` interface web3 uses)."""

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        return True

    def release(self) -> None:
        pass

    def locked(self) -> bool:
        return False


def http_provider(rpc_url: str, **options) -> AsyncHTTPProvider:
    """web3's AsyncHTTPProvider, without the lock that can hang every chain call of the
    process for good.

    web3 7 guards each provider's session cache with one `threading.Lock` shared by every
    provider in the process, taken in a thread pool around each request. A request
    cancelled while it waits for that lock (a timeout, a cancelled job) can leave it held:
    every later request of every provider then waits forever (web3.py issue #3867, open).
    Each of our providers is used from one event loop, where the section the lock guards
    runs without a thread switch, so it needs no lock at all."""
    provider = AsyncHTTPProvider(rpc_url, **options)
    provider._request_session_manager._lock = _NoLock()
    return provider


def web3(rpc_url: str, *, timeout_s: float = 10.0) -> AsyncWeb3:
    return AsyncWeb3(http_provider(rpc_url, request_kwargs={"timeout": timeout_s}))


async def connect(rpc_url: str, *, deployments_dir: Path, lock_dir: Path,
                  keystore: Path | None = None, passphrase_file: Path | None = None,
                  audit: AuditHook | None = None) -> Chain:
    """Our contracts on the node at `rpc_url`, as recorded in `deployments_dir`.

    Raises ChainError: RPC_UNAVAILABLE when the node does not answer, NOT_DEPLOYED when no
    deployment of the current code is recorded for its chain (or its code is gone)."""
    w3 = web3(rpc_url)
    try:
        deployment = await load_deployment(w3, deployments_dir)
    except RPC_FAULTS as exc:
        await w3.provider.disconnect()
        raise rpc_error(exc) from None
    if deployment is None:
        await w3.provider.disconnect()
        raise ChainError("NOT_DEPLOYED", f"no deployment of the current contracts for "
                         f"{rpc_url} in {deployments_dir}", permanent=True)
    sender = None
    if keystore is not None:
        if passphrase_file is None:
            raise ChainError("KEYSTORE_UNREADABLE", "a keystore needs its passphrase file",
                             permanent=True)
        account = await asyncio.to_thread(load_account, keystore, passphrase_file)
        sender = Sender(w3, account, lock_dir=lock_dir, audit=audit)
    return Chain(w3, deployment, sender)
