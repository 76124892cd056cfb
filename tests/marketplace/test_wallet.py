"""The audit trail: every transaction the product sends is a ChainTransaction row."""

import pytest
from asgiref.sync import sync_to_async
from django.db import connections

from marketplace.models import ChainTransaction
from marketplace.wallet import audit_recorder
from tests.marketplace.chain.races import claim_in_one_block

pytestmark = pytest.mark.django_db(transaction=True)

MODEL = "smollm2-135m-instruct"


@pytest.fixture(autouse=True)
async def close_db_connections():
    yield
    await sync_to_async(connections.close_all)()


async def test_every_transaction_sent_is_recorded_with_its_gas_and_status(on_anvil):
    sender = on_anvil.sender("host-4", audit=audit_recorder(31337))
    chain = on_anvil.chain("host-4")
    chain.sender = sender
    tx_hash = await chain.register(api_url="http://127.0.0.1:9", metadata={"region": "x"},
                                   prices={MODEL: 10**9}, stake=10**17)
    row = await ChainTransaction.objects.aget(tx_hash=tx_hash)
    receipt = await chain.w3.eth.get_transaction_receipt(tx_hash)
    assert (row.account, row.contract, row.function, row.status) == (
        sender.address, "NodeRegistry", "register", ChainTransaction.Status.MINED)
    assert row.gas_used == receipt["gasUsed"]
    assert row.block == receipt["blockNumber"]
    assert row.value_wei == 10**17
    assert "http://127.0.0.1:9" in row.args
    assert row.chain_id == 31337


async def test_a_transaction_that_reverts_on_chain_is_recorded_as_reverted(on_anvil):
    """A claim that loses a race in one block reverts after it was sent."""
    platform = on_anvil.chain("platform")
    hosts = [on_anvil.chain("host-1"), on_anvil.chain("host-2")]
    for host in hosts:
        host.sender.audit = audit_recorder(31337)
        if not (await host.get_node(host.address)).active:
            await host.register(api_url="http://127.0.0.1:9", metadata={},
                                prices={MODEL: 10**9}, stake=10**17)
    posted = await platform.post_job(model=MODEL, prompt_hash=b"\x01" * 32, max_tokens=8,
                                     max_price_per_token_wei=10**9,
                                     deadline=await platform.block_time() + 300)
    await claim_in_one_block(platform, hosts, posted.job_id, MODEL)
    statuses = [row.status async for row in ChainTransaction.objects.filter(
        function="claimJob", args__startswith=f"{posted.job_id},")]
    assert sorted(statuses) == ["mined", "reverted"]
