"""A throwaway anvil chain with our contracts, for benchmarks."""

from __future__ import annotations

import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

from web3 import AsyncWeb3

from bench.common import free_port
from marketplace.chain.connect import http_provider
from marketplace.chain.contracts import Chain
from marketplace.chain.deploy import Terms, deploy
from marketplace.chain.devnet import anvil_args, bundled_model_approvals, dev_keys
from marketplace.chain.keystore import load_account
from marketplace.chain.tx import Sender


class BenchChain:
    def __init__(self):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.dir = Path(tempfile.mkdtemp(prefix="bench-chain-"))
        self.proc = subprocess.Popen(anvil_args(self.port, None), stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        body = b'{"jsonrpc":"2.0","id":1,"method":"eth_chainId","params":[]}'
        for _ in range(200):
            try:
                urllib.request.urlopen(urllib.request.Request(
                    self.url, data=body, headers={"Content-Type": "application/json"}),
                    timeout=1).close()
                break
            except OSError:
                time.sleep(0.05)
        self.keys = dev_keys(self.dir / "keys")
        self.deployment = None

    def chain(self, role: str) -> Chain:
        key = self.keys[role]
        w3 = AsyncWeb3(http_provider(self.url))
        sender = Sender(w3, load_account(key.keystore, key.passphrase_file),
                        lock_dir=self.dir / "locks")
        return Chain(w3, self.deployment, sender) if self.deployment else sender

    async def deploy(self) -> None:
        sender = self.chain("platform")
        self.deployment = await deploy(sender.w3, sender,
                                       Terms(treasury=self.keys["treasury"].address,
                                             arbitrator=self.keys["arbitrator"].address,
                                             models=bundled_model_approvals()))
        await sender.w3.provider.disconnect()

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)


class BenchMarket:
    """A throwaway market for the benchmarks that run the whole flow: anvil with our
    contracts, the platform wallet in Django's settings, and a host on the bundled model
    serving in this process (channels on or off as the host's defaults say)."""

    def __init__(self, var_dir: Path):
        self.var_dir = var_dir
        self.net = BenchChain()
        self.node = None
        self.runner = None

    async def start(self, price_per_token_wei: int = 10**9) -> None:
        from aiohttp import web
        from django.conf import settings

        from marketplace.host.backends import LlamaCppBackend
        from marketplace.host.cid import ResultStore
        from marketplace.host.server import HostConfig, HostNode

        await self.net.deploy()
        deployments = self.var_dir / "deployments"
        deployments.mkdir()
        (deployments / "31337.json").write_text(self.net.deployment.to_json())
        settings.CHAIN_RPC = self.net.url
        settings.CHAIN_DEPLOYMENTS_DIR = deployments
        settings.WALLET_KEYSTORE_FILE = str(self.net.keys["platform"].keystore)
        settings.WALLET_PASSPHRASE_FILE = str(self.net.keys["platform"].passphrase_file)
        port = free_port()
        self.node = HostNode(backend=LlamaCppBackend(), chain=self.net.chain("host-1"),
                             store=ResultStore(self.var_dir / "results"),
                             config=HostConfig(public_url=f"http://127.0.0.1:{port}",
                                               price_per_token_wei=price_per_token_wei,
                                               withdraw_every_s=3600))
        self.runner = web.AppRunner(self.node.app())
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", port).start()

    async def close(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
        self.net.close()
