"""Disputes that end: either party may dispute, the arbitrator (its own key) has until the
arbitration deadline, and after it anyone may expire the dispute, which settles as if the
submitted result stood. The host's stake is held while a dispute is open and freed on
every way it ends."""

import pytest
from web3.logs import DISCARD

from marketplace.chain.contracts import JobStatus
from tests.contracts.conftest import ARBITRATION_WINDOW_S, ETHER, PRICE
from tests.contracts.test_job_marketplace import FEE_BPS, reverts, split, submitted


async def disputed(net, by="alice", tokens=40, host="host1"):
    posted = await submitted(net, host=host, tokens=tokens)
    await net.chain(by).dispute(posted.job_id, "junk")
    return posted


async def test_the_host_may_dispute_its_own_submitted_result(registered):
    net = registered
    posted = await submitted(net)
    receipt = await net.w3.eth.get_transaction_receipt(
        await net.chain("host1").dispute(posted.job_id, "the client will not accept"))
    (event,) = net.chain("alice").market.events.JobDisputed().process_receipt(
        receipt, errors=DISCARD)
    assert event["args"]["by"] == net.chain("host1").address
    job = await net.chain("alice").get_job(posted.job_id)
    assert job.status == JobStatus.DISPUTED
    block = await net.w3.eth.get_block(receipt["blockNumber"])
    assert job.arbitration_deadline == event["args"]["arbitrationDeadline"] == (
        block["timestamp"] + ARBITRATION_WINDOW_S)
    assert (await net.chain("alice").get_node(net.chain("host1").address)).open_disputes == 1


@pytest.mark.parametrize("stranger", ["bob", "host2", "owner", "arbitrator"])
async def test_no_one_but_the_client_and_the_host_may_dispute(registered, stranger):
    posted = await submitted(registered)
    await reverts("NotParty", registered.chain(stranger).dispute(posted.job_id, "meddling"))
    assert (await registered.chain("alice").get_job(posted.job_id)).status == JobStatus.SUBMITTED


async def test_a_dispute_cannot_be_expired_before_its_deadline(registered):
    net = registered
    posted = await disputed(net)
    await reverts("ArbitrationOpen", net.chain("bob").expire_dispute(posted.job_id))
    await net.time_travel(ARBITRATION_WINDOW_S - 60)
    await reverts("ArbitrationOpen", net.chain("host1").expire_dispute(posted.job_id))
    assert (await net.chain("alice").get_job(posted.job_id)).status == JobStatus.DISPUTED


async def test_after_the_deadline_anyone_expires_the_dispute_and_the_result_stands(registered):
    """The arbitrator said nothing: the host is paid for the tokens it reported, less the
    fee, the client gets the rest, and the host's stake is free again."""
    net = registered
    posted = await disputed(net, tokens=40)
    await net.time_travel(ARBITRATION_WINDOW_S + 1)
    settled = await net.chain("bob").expire_dispute(posted.job_id)
    expected = split(40, PRICE, posted.escrow_wei)
    assert (settled.host_amount, settled.fee, settled.refund) == expected
    alice = net.chain("alice")
    assert (await alice.withdrawable(net.chain("host1").address),
            await alice.withdrawable(net.treasury),
            await alice.withdrawable(alice.address)) == expected
    assert (await alice.get_job(posted.job_id)).status == JobStatus.RESOLVED
    node = await alice.get_node(net.chain("host1").address)
    assert (node.open_disputes, node.disputed, node.stake) == (0, 1, ETHER)
    balance, escrowed, owed = await alice.escrow_totals()
    assert (balance, escrowed) == (owed, 0)


async def test_the_arbitrator_cannot_resolve_after_the_deadline(registered):
    """The deadline binds the arbitrator too: a late verdict cannot race the expiry."""
    net = registered
    posted = await disputed(net)
    await net.time_travel(ARBITRATION_WINDOW_S + 1)
    await reverts("ArbitrationClosed", net.chain("arbitrator").resolve_dispute(posted.job_id, 0))
    await net.chain("host1").expire_dispute(posted.job_id)


async def test_a_dispute_is_settled_once(registered):
    net = registered
    arbitrator = net.chain("arbitrator")
    posted = await disputed(net)
    await arbitrator.resolve_dispute(posted.job_id, 0)
    await reverts("WrongState", arbitrator.resolve_dispute(posted.job_id, 10000))
    await net.time_travel(ARBITRATION_WINDOW_S + 1)
    await reverts("WrongState", net.chain("bob").expire_dispute(posted.job_id))
    expired = await disputed(net)
    await net.time_travel(ARBITRATION_WINDOW_S + 1)
    await net.chain("bob").expire_dispute(expired.job_id)
    await reverts("WrongState", net.chain("bob").expire_dispute(expired.job_id))
    await reverts("WrongState", net.chain("alice").dispute(expired.job_id, "again"))
    assert (await net.chain("alice").get_node(net.chain("host1").address)).open_disputes == 0


async def test_a_job_that_was_never_disputed_cannot_be_expired(registered):
    posted = await submitted(registered)
    assert (await registered.chain("alice").get_job(posted.job_id)).arbitration_deadline is None
    await registered.time_travel(ARBITRATION_WINDOW_S + 1)
    await reverts("WrongState", registered.chain("bob").expire_dispute(posted.job_id))


async def test_the_arbitrator_refunds_the_client_and_slashes_the_host_to_the_treasury(registered):
    net = registered
    host, alice = net.chain("host1"), net.chain("alice")
    posted = await disputed(net)
    registry_before = await net.w3.eth.get_balance(net.deployment.registry)
    settled = await net.chain("arbitrator").resolve_dispute(posted.job_id, 0,
                                                            slash_wei=ETHER // 4)
    assert (settled.host_amount, settled.fee, settled.refund) == (0, 0, posted.escrow_wei)
    node = await alice.get_node(host.address)
    assert (node.stake, node.open_disputes, node.active) == (ETHER - ETHER // 4, 0, True)
    assert int(await alice.registry.functions.slashedBalance().call()) == ETHER // 4
    # The slashed ether stays in the registry until the treasury pulls it.
    assert await net.w3.eth.get_balance(net.deployment.registry) == registry_before
    before = await net.w3.eth.get_balance(net.treasury)
    owner = net.chain("owner")
    await owner.sender.transact("NodeRegistry", owner.registry.functions.withdrawSlashed)
    assert await net.w3.eth.get_balance(net.treasury) == before + ETHER // 4
    assert await alice.withdrawable(alice.address) == posted.escrow_wei


async def test_a_slash_below_the_minimum_stake_delists_the_host(registered):
    net = registered
    posted = await disputed(net)
    await net.chain("arbitrator").resolve_dispute(posted.job_id, 0,
                                                  slash_wei=ETHER - ETHER // 20)
    node = await net.chain("alice").get_node(net.chain("host1").address)
    assert (node.stake, node.active, node.open_disputes) == (ETHER // 20, False, 0)


async def test_a_slash_larger_than_the_stake_is_refused_and_nothing_moves(registered):
    net = registered
    posted = await disputed(net)
    await reverts("SlashTooLarge", net.chain("arbitrator").resolve_dispute(
        posted.job_id, 0, slash_wei=2 * ETHER))
    job = await net.chain("alice").get_job(posted.job_id)
    node = await net.chain("alice").get_node(net.chain("host1").address)
    assert (job.status, node.stake, node.open_disputes) == (JobStatus.DISPUTED, ETHER, 1)


async def test_the_platform_admin_is_not_the_arbitrator(registered):
    """Deployed with an arbitrator of its own: the admin (the paying wallet) can neither
    resolve a dispute nor slash."""
    net = registered
    owner = net.chain("owner")
    posted = await disputed(net)
    await reverts("AccessControlUnauthorizedAccount", owner.resolve_dispute(posted.job_id, 0))
    await reverts("AccessControlUnauthorizedAccount",
                  owner.slash(net.chain("host1").address, 1, "no"))
    for contract in ("registry", "market"):
        assert not await owner.has_role(contract, "ARBITRATOR_ROLE", owner.address)
        assert await owner.has_role(contract, "ARBITRATOR_ROLE",
                                    net.chain("arbitrator").address)


async def test_the_stake_is_released_on_every_way_a_dispute_ends(registered):
    """Three disputes against one host: one resolved, one resolved with a slash, one
    expired. Until the last ends the stake stays; then the host leaves with what is left."""
    net = registered
    host, arbitrator = net.chain("host1"), net.chain("arbitrator")
    first, second, third = (await disputed(net), await disputed(net, by="host1"),
                            await disputed(net))
    await host.request_unregister()
    await net.time_travel(3601)
    await arbitrator.resolve_dispute(first.job_id, 10000)
    await arbitrator.resolve_dispute(second.job_id, 5000, slash_wei=ETHER // 10)
    await reverts("DisputesOpen", host.withdraw_stake())
    await net.time_travel(ARBITRATION_WINDOW_S)
    await net.chain("bob").expire_dispute(third.job_id)
    node = await host.get_node(host.address)
    assert (node.open_disputes, node.disputed) == (0, 3)
    before = await net.w3.eth.get_balance(host.address)
    receipt = await net.w3.eth.get_transaction_receipt(await host.withdraw_stake())
    gas = receipt["gasUsed"] * receipt["effectiveGasPrice"]
    assert await net.w3.eth.get_balance(host.address) == before + ETHER - ETHER // 10 - gas


async def test_the_arbitration_deadline_is_fixed_when_the_dispute_is_opened(registered):
    net = registered
    owner = net.chain("owner")
    posted = await disputed(net)
    receipt = await net.w3.eth.get_transaction_receipt(await owner.set_arbitration_window(60))
    (event,) = owner.market.events.ArbitrationWindowChanged().process_receipt(
        receipt, errors=DISCARD)
    assert event["args"]["arbitrationWindow"] == 60
    assert await owner.arbitration_window() == 60
    await net.time_travel(120)
    await reverts("ArbitrationOpen", net.chain("bob").expire_dispute(posted.job_id))
    later = await disputed(net)
    await net.time_travel(61)
    await net.chain("bob").expire_dispute(later.job_id)
    await reverts("AccessControlUnauthorizedAccount",
                  net.chain("arbitrator").set_arbitration_window(1))


async def test_an_expired_dispute_keeps_the_fee_agreed_at_posting(registered):
    net = registered
    owner = net.chain("owner")
    posted = await disputed(net, tokens=37)
    await owner.sender.transact("JobMarketplace", owner.market.functions.setFeeBps, 2000)
    await net.time_travel(ARBITRATION_WINDOW_S + 1)
    settled = await net.chain("bob").expire_dispute(posted.job_id)
    payment = 37 * PRICE
    assert settled.fee == payment * FEE_BPS // 10000


async def test_the_arbitration_window_is_at_most_thirty_days(net):
    owner = net.chain("owner")
    await reverts("ArbitrationWindowTooLong", owner.set_arbitration_window(30 * 86400 + 1))
    await owner.set_arbitration_window(30 * 86400)
    assert await owner.arbitration_window() == 30 * 86400
