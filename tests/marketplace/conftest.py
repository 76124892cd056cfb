"""A real anvil node over JSON-RPC, on a free port, with our contracts deployed."""

from __future__ import annotations

import subprocess
import time
import urllib.request

import pytest
from web3 import AsyncHTTPProvider, AsyncWeb3

from marketplace.chain.contracts import Chain
from marketplace.chain.deploy import Terms, deploy
from marketplace.chain.devnet import anvil_args, dev_keys
from marketplace.chain.keystore import load_account
from marketplace.chain.tx import Sender
from tests.conftest import free_port


def start_anvil(port: int) -> subprocess.Popen:
    proc = subprocess.Popen(anvil_args(port, None), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    body = b'{"jsonrpc":"2.0","id":1,"method":"eth_chainId","params":[]}'
    for _ in range(200):
        try:
            request = urllib.request.Request(f"http://127.0.0.1:{port}", data=body,
                                             headers={"Content-Type": "application/json"})
            urllib.request.urlopen(request, timeout=1).close()
            return proc
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError("anvil did not start")


@pytest.fixture(scope="session")
def anvil():
    port = free_port()
    proc = start_anvil(port)
    yield f"http://127.0.0.1:{port}"
    proc.terminate()
    proc.wait(timeout=10)


@pytest.fixture(scope="session")
def dev_keyring(tmp_path_factory):
    return dev_keys(tmp_path_factory.mktemp("keys"))


class Anvil:
    def __init__(self, url, keys, lock_dir):
        self.url = url
        self.keys = keys
        self.lock_dir = lock_dir
        self.made: list[AsyncWeb3] = []

    def w3(self) -> AsyncWeb3:
        w3 = AsyncWeb3(AsyncHTTPProvider(self.url))
        self.made.append(w3)
        return w3

    async def close(self) -> None:
        for w3 in self.made:
            await w3.provider.disconnect()

    def sender(self, role: str, w3: AsyncWeb3 | None = None, audit=None) -> Sender:
        key = self.keys[role]
        account = load_account(key.keystore, key.passphrase_file)
        return Sender(w3 or self.w3(), account, lock_dir=self.lock_dir, audit=audit)

    async def deploy(self) -> Chain:
        sender = self.sender("platform")
        deployment = await deploy(sender.w3, sender,
                                  Terms(treasury=self.keys["treasury"].address,
                                        min_stake_wei=10**16))
        self.deployment = deployment
        return Chain(sender.w3, deployment, sender)

    def chain(self, role: str) -> Chain:
        sender = self.sender(role)
        return Chain(sender.w3, self.deployment, sender)


@pytest.fixture
async def on_anvil(anvil, dev_keyring, tmp_path):
    net = Anvil(anvil, dev_keyring, tmp_path / "locks")
    await net.deploy()
    yield net
    await net.close()


@pytest.fixture(autouse=True)
async def close_network_sessions():
    """aiohttp warns about sessions left open; close the pool's and the wallet's."""
    yield
    from marketplace import wallet
    from marketplace.client import pool

    await pool.close()
    for handle in list(wallet._handles.values()):
        try:
            await handle.close()
        except RuntimeError:
            pass  # bound to a loop that is already closed
    wallet._handles.clear()
