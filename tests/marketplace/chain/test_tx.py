"""How sending fails: every fault is a ChainError with a code and `permanent`."""

import pytest
from eth_account import Account
from web3 import AsyncWeb3

from marketplace.chain.connect import http_provider
from marketplace.chain.contracts import Chain
from marketplace.chain.errors import ChainError
from marketplace.chain.tx import Sender, TxRecord
from tests.conftest import free_port


async def test_a_receipt_that_does_not_come_times_out_with_the_hash(on_anvil):
    records: list[TxRecord] = []

    async def audit(record: TxRecord) -> None:
        records.append(record)

    sender = on_anvil.sender("platform", audit=audit)
    sender.receipt_timeout_s = 0.5
    chain = Chain(sender.w3, on_anvil.deployment, sender)
    rpc = sender.w3.provider.make_request
    await rpc("evm_setAutomine", [False])
    try:
        with pytest.raises(ChainError) as info:
            await chain.set_blocked(Account.create().address, True)
    finally:
        await rpc("evm_setAutomine", [True])
        await rpc("evm_mine", [])
    assert (info.value.code, info.value.permanent) == ("RECEIPT_TIMEOUT", False)
    assert info.value.tx_hash == records[0].tx_hash
    assert [r.status for r in records] == ["sent"]  # the intent is on record for a retry


async def test_a_node_that_does_not_answer_is_a_transient_error(tmp_path):
    w3 = AsyncWeb3(http_provider(f"http://127.0.0.1:{free_port()}"))
    sender = Sender(w3, Account.create(), lock_dir=tmp_path)
    with pytest.raises(ChainError) as info:
        await sender.transact("ETH", lambda: _Transfer())
    assert (info.value.code, info.value.permanent) == ("RPC_UNAVAILABLE", False)
    await w3.provider.disconnect()


class _Transfer:
    fn_name = "transfer"

    async def estimate_gas(self, tx):
        return 21000

    async def build_transaction(self, tx):
        return {**tx, "to": "0x000000000000000000000000000000000000dEaD"}
