"""Payment channels: the cost of a voucher, and the gas of a channel's life.

- `voucher sign and verify us`: the payer signs a voucher and the host checks it
  (marketplace.chain.channels: the EIP-712 digest computed with a cached domain separator,
  secp256k1 through coincurve). Baseline in the same run: eth-account's generic
  `sign_typed_data` and `recover_message` for the same typed data.
- Gas of each channel operation on py-evm in process, and what opening and closing one
  channel costs per prompt when it pays for a 20-prompt conversation (one channel serves
  many conversations; this is the least it is shared). Baseline: a plain ether transfer.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path

from eth_account import Account
from eth_account.messages import encode_typed_data
from web3 import AsyncWeb3
from web3.providers.eth_tester import AsyncEthereumTesterProvider

from bench.common import report
from marketplace.chain.channels import DOMAIN_NAME, DOMAIN_VERSION, Channels, VoucherSigner
from marketplace.chain.contracts import Chain
from marketplace.chain.deploy import Terms, deploy
from marketplace.chain.tx import Sender

MODEL = "smollm2-135m-instruct"
PROMPTS = 20
ROUNDS = 2000


def voucher_figures() -> None:
    payer = Account.create()
    contract = "0x" + "12" * 20
    signer = VoucherSigner(31337, contract)
    key = bytes(payer.key)
    started = time.perf_counter()
    for amount in range(1, ROUNDS + 1):
        signer.check(signer.sign(key, 7, amount * 1000), payer.address)
    ours = (time.perf_counter() - started) / ROUNDS * 1e6

    domain = {"name": DOMAIN_NAME, "version": DOMAIN_VERSION, "chainId": 31337,
              "verifyingContract": contract}
    types = {"Voucher": [{"name": "channelId", "type": "uint256"},
                         {"name": "amount", "type": "uint256"}]}
    rounds = ROUNDS // 10
    started = time.perf_counter()
    for amount in range(1, rounds + 1):
        message = {"channelId": 7, "amount": amount * 1000}
        signed = payer.sign_typed_data(domain, types, message)
        recovered = Account.recover_message(
            encode_typed_data(domain_data=domain, message_types=types, message_data=message),
            signature=signed.signature)
        assert recovered == payer.address
    generic = (time.perf_counter() - started) / rounds * 1e6
    # The two agree on the signature: the same digest, the same deterministic nonce.
    same = payer.sign_typed_data(domain, types, {"channelId": 7, "amount": 5})
    assert same.signature == signer.sign(key, 7, 5).signature
    report("voucher sign and verify us", round(ours, 1), "us (target <= 1000)")
    report("voucher sign and verify us (eth-account typed data)", round(generic, 1), "us")
    report("voucher speed-up vs eth-account", round(generic / ours, 1), "x")


async def gas_figures() -> None:
    w3 = AsyncWeb3(AsyncEthereumTesterProvider())
    lock_dir = Path(tempfile.mkdtemp())
    funder = (await w3.eth.accounts)[0]
    gas: dict[str, int] = {}

    async def used(tx_hash: str) -> int:
        return int((await w3.eth.get_transaction_receipt(tx_hash))["gasUsed"])

    async def account() -> Sender:
        acct = Account.create()
        tx = await w3.eth.send_transaction({"from": funder, "to": acct.address,
                                            "value": 10**21})
        gas.setdefault("ether transfer (baseline)", await used(tx.to_0x_hex()))
        return Sender(w3, acct, lock_dir=lock_dir)

    owner, arbitrator = await account(), await account()
    deployment = await deploy(w3, owner, Terms(treasury=Account.create().address,
                                               arbitrator=arbitrator.address,
                                               models={MODEL: b"\x5e" * 32}))
    payer_sender, host_sender = await account(), await account()
    host = Chain(w3, deployment, host_sender)
    await host.register(api_url="http://127.0.0.1:9101", metadata={},
                        prices={MODEL: 10**9}, stake=10**17)
    payer, host_channels = Channels(Chain(w3, deployment, payer_sender)), Channels(host)
    key = bytes(payer_sender.account.key)

    async def tx_gas(name: str, call) -> None:
        before = await w3.eth.block_number
        await call
        block = await w3.eth.get_block(before + 1, full_transactions=False)
        gas[name] = sum([await used(t.to_0x_hex()) for t in block["transactions"]])

    for label in ("", " (steady)"):  # the second time, the accounts' credits exist
        channel_id = None

        async def opening():
            nonlocal channel_id
            channel_id = await payer.open(host.address, 10**16)

        await tx_gas(f"open{label}", opening())
        await tx_gas(f"topUp{label}", payer.top_up(channel_id, 10**15))
        await tx_gas(f"close{label}", host_channels.close(
            payer.vouchers.sign(key, channel_id, 4 * 10**15)))
    exiting = await payer.open(host.address, 10**16)
    await tx_gas("startExit", payer.start_exit(exiting))
    w3.provider.ethereum_tester.time_travel(await host.block_time() + 86_401)
    await tx_gas("finishExit", payer.finish_exit(exiting))
    await tx_gas("withdraw (host)", host_channels.withdraw())

    for name, value in gas.items():
        report(f"gas channel {name}", value, "gas")
    life = gas["open (steady)"] + gas["close (steady)"]
    report("channel open+close gas per prompt (20-prompt conversation)", life // PROMPTS,
           "gas (target <= 15,000)")
    report("channel transactions per prompt (20-prompt conversation)", 2 / PROMPTS,
           "(target <= 0.1)")
    report("channel open+close gas ratio vs ether transfer", round(
        life / gas["ether transfer (baseline)"], 2))


def main() -> None:
    voucher_figures()
    asyncio.run(gas_figures())


if __name__ == "__main__":
    main()
