import pytest

from marketplace.chain.errors import ChainError
from tests.contracts.conftest import ETHER, MODEL, PRICE


async def reverts(code, awaitable):
    with pytest.raises(ChainError) as info:
        await awaitable
    assert info.value.code == code, info.value


async def disputed_job(net, host="host1", tokens=30):
    """A job `host` claimed and delivered, which its client (alice) disputes."""
    posted = await net.chain("alice").post_job(
        model=MODEL, prompt_hash=b"\x01" * 32, max_tokens=50, max_price_per_token_wei=2 * PRICE,
        deadline=await net.now() + 600)
    await net.chain(host).claim_job(posted.job_id, MODEL)
    await net.chain(host).submit_result(posted.job_id, result_hash=b"\x02" * 32, cid="bafk",
                                        tokens_used=tokens)
    await net.chain("alice").dispute(posted.job_id, "served junk")
    return posted.job_id


async def test_a_registered_host_is_listed_for_its_models_with_its_price(registered):
    alice = registered.chain("alice")
    nodes = await alice.active_nodes(MODEL)
    assert {(n.url, n.price_per_token_wei) for n in nodes} == {
        ("http://h1", PRICE), ("http://h2", 2 * PRICE)}
    h1 = next(n for n in nodes if n.url == "http://h1")
    assert h1.metadata == {"region": "eu"}
    assert h1.stake == ETHER
    assert await alice.active_nodes("another-model") == []


async def test_a_stake_below_the_minimum_is_refused(net):
    await reverts("StakeTooLow", net.chain("mallory").register(
        api_url="http://m", metadata={}, prices={MODEL: PRICE}, stake=ETHER // 100))


async def test_a_host_registers_once_and_needs_a_price_for_each_model(net):
    host = net.chain("host1")
    await reverts("NoModels", host.register(api_url="u", metadata={}, prices={}, stake=ETHER))
    await reverts("ZeroPrice", host.register(api_url="u", metadata={}, prices={MODEL: 0},
                                             stake=ETHER))
    await host.register(api_url="u", metadata={}, prices={MODEL: PRICE}, stake=ETHER)
    await reverts("AlreadyRegistered", host.register(api_url="u", metadata={},
                                                     prices={MODEL: PRICE}, stake=ETHER))


async def test_an_update_changes_url_models_and_prices(registered):
    host = registered.chain("host1")
    await registered.chain("owner").approve_model("other", b"\x07" * 32)
    await host.update_node(api_url="http://h1-new", metadata={"region": "ap"},
                           prices={"other": 5 * PRICE})
    assert [n.url for n in await host.active_nodes(MODEL)] == ["http://h2"]
    (other,) = await host.active_nodes("other")
    assert (other.url, other.price_per_token_wei, other.metadata) == (
        "http://h1-new", 5 * PRICE, {"region": "ap"})


async def test_unregistering_waits_for_the_cooldown_then_returns_the_stake(registered):
    net = registered
    host = net.chain("host1")
    await reverts("UnregisterNotRequested", host.withdraw_stake())
    await host.request_unregister()
    assert [n.url for n in await host.active_nodes(MODEL)] == ["http://h2"]
    await reverts("CooldownNotOver", host.withdraw_stake())
    await net.time_travel(3601)
    before = await net.w3.eth.get_balance(host.address)
    tx = await host.withdraw_stake()
    receipt = await net.w3.eth.get_transaction_receipt(tx)
    gas = receipt["gasUsed"] * receipt["effectiveGasPrice"]
    assert await net.w3.eth.get_balance(host.address) == before + ETHER - gas
    assert (await host.get_node(host.address)).stake == 0


async def test_only_the_marketplace_writes_reputation(registered):
    host = registered.chain("host1")
    for fn, args in ((host.registry.functions.recordCompleted, ()),
                     (host.registry.functions.recordDisputed, ()),
                     (host.registry.functions.recordDisputeResolved, (0,))):
        await reverts("AccessControlUnauthorizedAccount",
                      host.sender.transact("NodeRegistry", fn, host.address, *args))


async def test_the_arbitrator_slashes_and_a_host_below_the_minimum_is_delisted(registered):
    net = registered
    h1 = net.chain("host1").address
    await reverts("AccessControlUnauthorizedAccount",
                  net.chain("alice").slash(h1, ETHER // 2, "fraud"))
    await reverts("SlashTooLarge", net.chain("arbitrator").slash(h1, 2 * ETHER, "fraud"))
    await net.chain("arbitrator").slash(h1, ETHER - ETHER // 20, "served junk")
    node = await net.chain("alice").get_node(h1)
    assert node.stake == ETHER // 20
    assert not node.active
    assert [n.url for n in await net.chain("alice").active_nodes(MODEL)] == ["http://h2"]
    treasury_before = await net.w3.eth.get_balance(net.treasury)
    owner = net.chain("owner")
    await owner.sender.transact("NodeRegistry", owner.registry.functions.withdrawSlashed)
    assert await net.w3.eth.get_balance(net.treasury) == (
        treasury_before + ETHER - ETHER // 20)


async def test_a_blocked_account_cannot_register(net):
    await net.chain("owner").set_blocked(net.chain("mallory").address, True)
    await reverts("AccountBlocked", net.chain("mallory").register(
        api_url="u", metadata={}, prices={MODEL: PRICE}, stake=ETHER))


async def test_a_host_that_leaves_and_comes_back_keeps_its_record(registered):
    net = registered
    host = net.chain("host1")
    posted = await net.chain("alice").post_job(
        model=MODEL, prompt_hash=b"\x01" * 32, max_tokens=10, max_price_per_token_wei=PRICE,
        deadline=await net.now() + 60)
    await host.claim_job(posted.job_id, MODEL)
    await net.time_travel(61)
    await net.chain("alice").refund_expired(posted.job_id)  # the host went silent
    await host.request_unregister()
    await reverts("AlreadyRegistered", host.register(api_url="u", metadata={},
                                                     prices={MODEL: PRICE}, stake=ETHER))
    await net.time_travel(3601)
    await host.withdraw_stake()
    await host.register(api_url="http://h1-again", metadata={}, prices={MODEL: PRICE},
                        stake=ETHER)
    node = await host.get_node(host.address, MODEL)
    assert (node.url, node.active, node.stake, node.failed) == ("http://h1-again", True,
                                                                 ETHER, 1)
    assert node.price_per_token_wei == PRICE


async def test_a_leaving_host_comes_back_by_updating(registered):
    net = registered
    host = net.chain("host1")
    await host.request_unregister()
    await host.update_node(api_url="http://h1", metadata={}, prices={MODEL: PRICE})
    assert sorted(n.url for n in await host.active_nodes(MODEL)) == ["http://h1", "http://h2"]
    await reverts("UnregisterNotRequested", host.withdraw_stake())


async def test_a_host_cannot_take_its_stake_away_while_a_dispute_against_it_is_open(registered):
    """The host serves junk, asks to leave at once and waits out the cooldown: its stake
    stays until the arbitrator has had its say (and slashed it)."""
    net = registered
    host, arbitrator = net.chain("host1"), net.chain("arbitrator")
    job_id = await disputed_job(net)
    await host.request_unregister()
    await net.time_travel(3601)
    with pytest.raises(ChainError) as info:
        await host.withdraw_stake()
    assert info.value.code == "DisputesOpen"
    assert info.value.message == "DisputesOpen(1)"
    assert info.value.permanent is False  # it succeeds once the dispute is resolved
    node = await host.get_node(host.address)
    assert (node.stake, node.open_disputes, node.disputed) == (ETHER, 1, 1)
    await arbitrator.slash(host.address, ETHER // 4, "served junk")
    await arbitrator.resolve_dispute(job_id, 0)
    node = await host.get_node(host.address)
    assert (node.open_disputes, node.disputed) == (0, 1)
    before = await net.w3.eth.get_balance(host.address)
    receipt = await net.w3.eth.get_transaction_receipt(await host.withdraw_stake())
    gas = receipt["gasUsed"] * receipt["effectiveGasPrice"]
    assert await net.w3.eth.get_balance(host.address) == before + ETHER - ETHER // 4 - gas
    assert (await host.get_node(host.address)).stake == 0


async def test_the_stake_stays_until_every_open_dispute_is_resolved(registered):
    net = registered
    host, arbitrator = net.chain("host1"), net.chain("arbitrator")
    first, second = await disputed_job(net), await disputed_job(net)
    await disputed_job(net, host="host2")  # another host's dispute does not hold this stake
    await host.request_unregister()
    await net.time_travel(3601)
    await arbitrator.resolve_dispute(first, 10000)
    assert (await host.get_node(host.address)).open_disputes == 1
    await reverts("DisputesOpen", host.withdraw_stake())
    await arbitrator.resolve_dispute(second, 5000)
    await host.withdraw_stake()
    assert (await host.get_node(host.address)).stake == 0
    assert (await host.get_node(net.chain("host2").address)).open_disputes == 1

