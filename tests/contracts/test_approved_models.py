"""A model id names exact weights: the admin approves it with its GGUF's sha256, and hosts
may list only approved models."""

import pytest
from eth_utils import keccak
from web3.logs import DISCARD

from marketplace.chain.contracts import ZERO_HASH
from marketplace.chain.errors import ChainError
from tests.contracts.conftest import ETHER, MODEL, MODEL_SHA256, PRICE

OTHER = "tinyllama-1b"
OTHER_SHA256 = bytes.fromhex("a1" * 32)


async def reverts(code, awaitable):
    with pytest.raises(ChainError) as info:
        await awaitable
    assert info.value.code == code, info.value
    return info.value


async def test_the_deployment_approves_its_models_with_their_hashes(net):
    assert await net.chain("alice").model_hash(MODEL) == MODEL_SHA256
    assert await net.chain("alice").model_hash(OTHER) == ZERO_HASH


async def test_a_host_cannot_register_a_model_that_is_not_approved(net):
    error = await reverts("ModelNotApproved", net.chain("mallory").register(
        api_url="http://m", metadata={}, prices={MODEL: PRICE, OTHER: PRICE}, stake=ETHER))
    assert OTHER in error.message  # the error names the model
    assert (await net.chain("alice").get_node(net.chain("mallory").address)).stake == 0


async def test_a_host_cannot_update_to_a_model_that_is_not_approved(registered):
    host = registered.chain("host1")
    await reverts("ModelNotApproved", host.update_node(api_url="http://h1", metadata={},
                                                       prices={OTHER: PRICE}))
    assert (await host.get_node(host.address, MODEL)).price_per_token_wei == PRICE


async def test_the_admin_approves_a_model_and_hosts_may_then_list_it(net):
    owner, host = net.chain("owner"), net.chain("host1")
    receipt = await net.w3.eth.get_transaction_receipt(
        await owner.approve_model(OTHER, OTHER_SHA256))
    (event,) = owner.registry.events.ModelApproved().process_receipt(receipt, errors=DISCARD)
    assert (event["args"]["modelKey"], event["args"]["modelId"],
            event["args"]["sha256OfGguf"]) == (keccak(text=OTHER), OTHER, OTHER_SHA256)
    await host.register(api_url="http://h1", metadata={}, prices={OTHER: PRICE}, stake=ETHER)
    assert [n.url for n in await host.active_nodes(OTHER)] == ["http://h1"]


async def test_only_the_admin_approves_and_revokes(net):
    for who in ("mallory", "arbitrator", "host1"):
        await reverts("AccessControlUnauthorizedAccount",
                      net.chain(who).approve_model(OTHER, OTHER_SHA256))
        await reverts("AccessControlUnauthorizedAccount", net.chain(who).revoke_model(MODEL))
    assert await net.chain("alice").model_hash(OTHER) == ZERO_HASH


async def test_an_approved_model_id_cannot_be_pointed_at_other_weights(net):
    owner = net.chain("owner")
    await reverts("ModelHashTaken", owner.approve_model(MODEL, OTHER_SHA256))
    await owner.approve_model(MODEL, MODEL_SHA256)  # the same file again changes nothing
    await reverts("ZeroHash", owner.approve_model(OTHER, ZERO_HASH))
    assert await owner.model_hash(MODEL) == MODEL_SHA256


async def test_a_revoked_model_is_not_listed_claimed_or_registered(registered):
    net = registered
    owner, alice, host = net.chain("owner"), net.chain("alice"), net.chain("host1")
    posted = await alice.post_job(model=MODEL, prompt_hash=b"\x01" * 32, max_tokens=10,
                                  max_price_per_token_wei=2 * PRICE,
                                  deadline=await net.now() + 600)
    receipt = await net.w3.eth.get_transaction_receipt(await owner.revoke_model(MODEL))
    (event,) = owner.registry.events.ModelRevoked().process_receipt(receipt, errors=DISCARD)
    assert event["args"]["modelId"] == MODEL
    assert await alice.model_hash(MODEL) == ZERO_HASH
    assert await alice.active_nodes(MODEL) == []
    await reverts("NotServing", host.claim_job(posted.job_id, MODEL))
    await reverts("ModelNotApproved", host.update_node(api_url="http://h1", metadata={},
                                                       prices={MODEL: PRICE}))
    await reverts("ModelNotApproved", owner.revoke_model(MODEL))  # nothing left to revoke
    # Approved again (the same file), the hosts that listed it are back.
    await owner.approve_model(MODEL, MODEL_SHA256)
    assert len(await alice.active_nodes(MODEL)) == 2
    await host.claim_job(posted.job_id, MODEL)


async def test_a_job_claimed_before_its_model_is_revoked_runs_its_course(registered):
    net = registered
    alice, host = net.chain("alice"), net.chain("host1")
    posted = await alice.post_job(model=MODEL, prompt_hash=b"\x01" * 32, max_tokens=10,
                                  max_price_per_token_wei=2 * PRICE,
                                  deadline=await net.now() + 600)
    await host.claim_job(posted.job_id, MODEL)
    await net.chain("owner").revoke_model(MODEL)
    await host.submit_result(posted.job_id, result_hash=b"\x02" * 32, cid="bafk", tokens_used=5)
    settled = await alice.accept_result(posted.job_id)
    assert settled.paid_wei == 5 * PRICE
