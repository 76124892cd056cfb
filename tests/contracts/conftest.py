"""Our contracts on py-evm, in process (web3's AsyncEthereumTesterProvider)."""

from __future__ import annotations

import pytest
from eth_account import Account
from web3 import AsyncWeb3
from web3.providers.eth_tester import AsyncEthereumTesterProvider

from marketplace.chain.contracts import Chain
from marketplace.chain.deploy import Terms, deploy
from marketplace.chain.tx import Sender

ETHER = 10**18
PRICE = 1_000_000_000  # wei per token
MODEL = "smollm2-135m-instruct"
# The sha256 MODEL is approved with here (these tests load no file).
MODEL_SHA256 = bytes.fromhex("5e" * 32)
ARBITRATION_WINDOW_S = 86400


class Net:
    """A fresh chain with our contracts and named, funded accounts."""

    def __init__(self, w3, tmp_path):
        self.w3 = w3
        self.tmp_path = tmp_path
        self.accounts: dict[str, Chain] = {}

    async def fund(self, name: str) -> Chain:
        account = Account.create()
        funder = (await self.w3.eth.accounts)[0]
        await self.w3.eth.send_transaction(
            {"from": funder, "to": account.address, "value": 100 * ETHER})
        sender = Sender(self.w3, account, lock_dir=self.tmp_path / "locks")
        chain = Chain(self.w3, self.deployment, sender) if hasattr(self, "deployment") else None
        self.accounts[name] = chain
        return sender

    def chain(self, name: str) -> Chain:
        return self.accounts[name]

    async def time_travel(self, seconds: int) -> None:
        provider = self.w3.provider
        tester = provider.ethereum_tester
        target = int(tester.get_block_by_number("latest")["timestamp"]) + seconds
        # The pending block's time follows the wall clock; on a slow run it can be past
        # the target already, and travelling there would be going backwards.
        pending = int(tester.get_block_by_number("pending")["timestamp"])
        tester.time_travel(max(target, pending + 1))

    async def now(self) -> int:
        return int((await self.w3.eth.get_block("latest"))["timestamp"])


@pytest.fixture
async def net(tmp_path):
    w3 = AsyncWeb3(AsyncEthereumTesterProvider())
    n = Net(w3, tmp_path)
    owner_sender = await n.fund("owner")
    arbitrator_sender = await n.fund("arbitrator")
    treasury = Account.create()
    n.treasury = treasury.address
    n.terms = Terms(treasury=treasury.address, arbitrator=arbitrator_sender.address,
                    min_stake_wei=ETHER // 10, cooldown_s=3600, fee_bps=250,
                    dispute_window_s=600, arbitration_window_s=ARBITRATION_WINDOW_S,
                    models={MODEL: MODEL_SHA256})
    n.deployment = await deploy(w3, owner_sender, n.terms)
    n.accounts["owner"] = Chain(w3, n.deployment, owner_sender)
    n.accounts["arbitrator"] = Chain(w3, n.deployment, arbitrator_sender)
    for name in ("alice", "bob", "host1", "host2", "mallory"):
        sender = await n.fund(name)
        n.accounts[name] = Chain(w3, n.deployment, sender)
    return n


@pytest.fixture
async def registered(net):
    """host1 and host2 registered for MODEL at PRICE and 2 x PRICE."""
    await net.chain("host1").register(api_url="http://h1", metadata={"region": "eu"},
                                      prices={MODEL: PRICE}, stake=ETHER)
    await net.chain("host2").register(api_url="http://h2", metadata={"region": "us"},
                                      prices={MODEL: 2 * PRICE}, stake=ETHER)
    return net
