import pytest

from marketplace.chain.contracts import JobStatus
from marketplace.chain.errors import ChainError
from marketplace.chain.tx import NOT_YET
from tests.contracts.conftest import ETHER, MODEL, PRICE

FEE_BPS = 250


async def post(net, who="alice", *, max_tokens=100, max_price=2 * PRICE, host=None, ttl=600):
    return await net.chain(who).post_job(
        model=MODEL, prompt_hash=b"\x01" * 32, max_tokens=max_tokens,
        max_price_per_token_wei=max_price, deadline=await net.now() + ttl, host=host)


async def claimed(net, host="host1", **kwargs):
    posted = await post(net, **kwargs)
    await net.chain(host).claim_job(posted.job_id, MODEL)
    return posted


async def submitted(net, host="host1", tokens=40, **kwargs):
    posted = await claimed(net, host, **kwargs)
    await net.chain(host).submit_result(posted.job_id, result_hash=b"\x02" * 32, cid="bafk",
                                        tokens_used=tokens)
    return posted


async def reverts(code, awaitable):
    with pytest.raises(ChainError) as info:
        await awaitable
    assert info.value.code == code, info.value
    # "Not yet" reverts succeed later; every other revert means never.
    assert info.value.permanent is (code not in NOT_YET)


def split(tokens, price, escrow):
    payment = tokens * price
    fee = payment * FEE_BPS // 10000
    return payment - fee, fee, escrow - payment


async def test_posting_escrows_the_worst_case_payment(registered):
    posted = await post(registered)
    job = await registered.chain("alice").get_job(posted.job_id)
    assert job.status == JobStatus.POSTED
    assert posted.escrow_wei == 100 * 2 * PRICE
    balance, escrowed, owed = await registered.chain("alice").escrow_totals()
    assert balance == escrowed == posted.escrow_wei
    assert owed == 0


async def test_the_host_claims_at_its_registered_price(registered):
    posted = await claimed(registered)
    job = await registered.chain("alice").get_job(posted.job_id)
    assert job.status == JobStatus.CLAIMED
    assert job.host == registered.chain("host1").address
    assert job.price_per_token_wei == PRICE


async def test_accepting_pays_the_host_the_fee_and_refunds_the_rest(registered):
    net = registered
    posted = await submitted(net, tokens=40)
    settled = await net.chain("alice").accept_result(posted.job_id)
    host_amount, fee, refund = split(40, PRICE, posted.escrow_wei)
    assert (settled.host_amount, settled.fee, settled.refund) == (host_amount, fee, refund)
    alice = net.chain("alice")
    assert await alice.withdrawable(net.chain("host1").address) == host_amount
    assert await alice.withdrawable(net.treasury) == fee
    assert await alice.withdrawable(alice.address) == refund
    assert (await alice.get_job(posted.job_id)).status == JobStatus.COMPLETED
    node = await alice.get_node(net.chain("host1").address)
    assert (node.completed, node.failed, node.disputed) == (1, 0, 0)


async def test_withdrawing_moves_the_credit_to_the_wallet(registered):
    net = registered
    posted = await submitted(net, tokens=40)
    await net.chain("alice").accept_result(posted.job_id)
    host = net.chain("host1")
    owed = await host.withdrawable(host.address)
    before = await net.w3.eth.get_balance(host.address)
    receipt_hash = await host.withdraw()
    receipt = await net.w3.eth.get_transaction_receipt(receipt_hash)
    gas_cost = receipt["gasUsed"] * receipt["effectiveGasPrice"]
    assert await net.w3.eth.get_balance(host.address) == before + owed - gas_cost
    assert await host.withdrawable(host.address) == 0
    await reverts("NothingToWithdraw", host.withdraw())


async def test_anyone_may_finalize_after_the_dispute_window(registered):
    net = registered
    posted = await submitted(net)
    await reverts("DisputeWindowOpen", net.chain("bob").finalize(posted.job_id))
    await net.time_travel(601)
    settled = await net.chain("bob").finalize(posted.job_id)
    assert settled.host_amount == split(40, PRICE, posted.escrow_wei)[0]


async def test_an_unclaimed_job_is_refunded_after_its_deadline(registered):
    net = registered
    posted = await post(net, ttl=60)
    await reverts("DeadlineNotPassed", net.chain("bob").refund_expired(posted.job_id))
    await net.time_travel(61)
    await net.chain("bob").refund_expired(posted.job_id)
    alice = net.chain("alice")
    assert await alice.withdrawable(alice.address) == posted.escrow_wei
    assert (await alice.get_job(posted.job_id)).status == JobStatus.REFUNDED


async def test_a_claimed_job_without_a_result_is_refunded_and_counts_a_failure(registered):
    net = registered
    posted = await claimed(net, ttl=60)
    await net.time_travel(61)
    await net.chain("alice").refund_expired(posted.job_id)
    alice = net.chain("alice")
    assert await alice.withdrawable(alice.address) == posted.escrow_wei
    node = await alice.get_node(net.chain("host1").address)
    assert node.failed == 1


async def test_a_dispute_goes_to_the_arbitrator_who_may_split(registered):
    net = registered
    posted = await submitted(net, tokens=40)
    await reverts("NotParty", net.chain("bob").dispute(posted.job_id, "junk"))
    await net.chain("alice").dispute(posted.job_id, "junk")
    await reverts("AccessControlUnauthorizedAccount",
                  net.chain("alice").resolve_dispute(posted.job_id, 5000))
    settled = await net.chain("arbitrator").resolve_dispute(posted.job_id, 5000)
    payment = 40 * PRICE // 2
    fee = payment * FEE_BPS // 10000
    assert (settled.host_amount, settled.fee, settled.refund) == (
        payment - fee, fee, posted.escrow_wei - payment)
    node = await net.chain("alice").get_node(net.chain("host1").address)
    assert node.disputed == 1
    assert (await net.chain("alice").get_job(posted.job_id)).status == JobStatus.RESOLVED


async def test_a_dispute_resolved_for_the_client_refunds_everything(registered):
    net = registered
    posted = await submitted(net)
    await net.chain("alice").dispute(posted.job_id, "junk")
    settled = await net.chain("arbitrator").resolve_dispute(posted.job_id, 0)
    assert (settled.host_amount, settled.fee, settled.refund) == (0, 0, posted.escrow_wei)


async def test_disputes_close_with_the_window(registered):
    net = registered
    posted = await submitted(net)
    await net.time_travel(601)
    await reverts("DisputeWindowClosed", net.chain("alice").dispute(posted.job_id, "late"))


async def test_a_job_is_claimed_only_once(registered):
    posted = await claimed(registered)
    await reverts("WrongState", registered.chain("host2").claim_job(posted.job_id, MODEL))
    await reverts("WrongState", registered.chain("host1").claim_job(posted.job_id, MODEL))


async def test_only_a_registered_host_serving_the_model_may_claim(registered):
    posted = await post(registered)
    await reverts("NotServing", registered.chain("mallory").claim_job(posted.job_id, MODEL))


async def test_a_host_dearer_than_the_clients_limit_cannot_claim(registered):
    posted = await post(registered, max_price=PRICE)
    await reverts("PriceTooHigh", registered.chain("host2").claim_job(posted.job_id, MODEL))


async def test_only_the_assigned_host_may_claim(registered):
    net = registered
    posted = await post(net, host=net.chain("host2").address)
    await reverts("NotHost", net.chain("host1").claim_job(posted.job_id, MODEL))
    await net.chain("host2").claim_job(posted.job_id, MODEL)


async def test_a_job_cannot_be_claimed_after_its_deadline(registered):
    posted = await post(registered, ttl=30)
    await registered.time_travel(31)
    await reverts("DeadlinePassed", registered.chain("host1").claim_job(posted.job_id, MODEL))


async def test_only_the_claiming_host_submits_and_before_the_deadline(registered):
    net = registered
    posted = await claimed(net, ttl=60)
    await reverts("NotHost", net.chain("host2").submit_result(
        posted.job_id, result_hash=b"\x02" * 32, cid="x", tokens_used=1))
    await net.time_travel(61)
    await reverts("DeadlinePassed", net.chain("host1").submit_result(
        posted.job_id, result_hash=b"\x02" * 32, cid="x", tokens_used=1))


async def test_a_host_cannot_bill_more_tokens_than_escrowed(registered):
    posted = await claimed(registered, max_tokens=10)
    await reverts("TooManyTokens", registered.chain("host1").submit_result(
        posted.job_id, result_hash=b"\x02" * 32, cid="x", tokens_used=11))


async def test_only_the_client_accepts(registered):
    posted = await submitted(registered)
    await reverts("NotClient", registered.chain("host1").accept_result(posted.job_id))


async def test_wrong_state_transitions_are_refused(registered):
    net = registered
    posted = await post(net)
    await reverts("WrongState", net.chain("alice").accept_result(posted.job_id))
    await reverts("WrongState", net.chain("host1").submit_result(
        posted.job_id, result_hash=b"\x02" * 32, cid="x", tokens_used=1))
    done = await submitted(net)
    await net.chain("alice").accept_result(done.job_id)
    await reverts("WrongState", net.chain("alice").accept_result(done.job_id))
    await reverts("WrongState", net.chain("alice").refund_expired(done.job_id))


async def test_the_payment_must_match_the_terms(registered):
    net = registered
    alice = net.chain("alice")
    fn = alice.market.functions.postJob
    deadline = await net.now() + 600
    await reverts("WrongPayment", alice.sender.transact(
        "JobMarketplace", fn, MODEL, b"\x01" * 32, 10, PRICE, deadline,
        "0x0000000000000000000000000000000000000000", value=10 * PRICE + 1))
    await reverts("BadTerms", alice.sender.transact(
        "JobMarketplace", fn, MODEL, b"\x01" * 32, 0, PRICE, deadline,
        "0x0000000000000000000000000000000000000000", value=0))


async def test_a_blocked_client_cannot_post_and_a_blocked_host_cannot_claim(registered):
    net = registered
    await reverts("AccessControlUnauthorizedAccount",
                  net.chain("alice").set_blocked(net.chain("bob").address, True))
    await net.chain("owner").set_blocked(net.chain("bob").address, True)
    await reverts("AccountBlocked", post(net, "bob"))
    await net.chain("owner").set_blocked(net.chain("host1").address, True)
    posted = await post(net)
    await reverts("NotServing", net.chain("host1").claim_job(posted.job_id, MODEL))


async def test_the_escrow_accepts_funds_only_from_the_marketplace(registered):
    alice = registered.chain("alice")
    await reverts("NotMarketplace", alice.sender.transact(
        "PaymentEscrow", alice.escrow.functions.deposit, value=ETHER))
    await reverts("NotMarketplace", alice.sender.transact(
        "PaymentEscrow", alice.escrow.functions.release, alice.address, 1, 0, alice.address, 0))


async def test_a_host_must_name_the_jobs_model_to_claim_it(registered):
    posted = await post(registered)
    await reverts("WrongModel", registered.chain("host1").claim_job(posted.job_id, "other"))


async def test_the_result_hash_and_cid_are_committed_in_the_submission_event(registered):
    posted = await submitted(registered, tokens=12)
    result = await registered.chain("alice").submitted_result(posted.job_id)
    assert (result.result_hash, result.cid, result.tokens_used) == ("0x" + "02" * 32, "bafk", 12)
    assert result.host == registered.chain("host1").address


async def test_the_client_cancels_a_job_no_host_has_claimed(registered):
    net = registered
    posted = await post(net)
    await reverts("NotClient", net.chain("bob").cancel_job(posted.job_id))
    await net.chain("alice").cancel_job(posted.job_id)
    alice = net.chain("alice")
    assert await alice.withdrawable(alice.address) == posted.escrow_wei
    assert (await alice.get_job(posted.job_id)).status == JobStatus.CANCELLED
    await reverts("WrongState", net.chain("host1").claim_job(posted.job_id, MODEL))
    await reverts("WrongState", alice.cancel_job(posted.job_id))


async def test_a_claimed_job_cannot_be_cancelled(registered):
    posted = await claimed(registered)
    await reverts("WrongState", registered.chain("alice").cancel_job(posted.job_id))


async def test_a_fee_change_applies_to_jobs_posted_after_it(registered):
    net = registered
    owner = net.chain("owner")
    before = await submitted(net, tokens=40)
    await owner.sender.transact("JobMarketplace", owner.market.functions.setFeeBps, 1000)
    after = await submitted(net, tokens=40)
    old = await net.chain("alice").accept_result(before.job_id)
    new = await net.chain("alice").accept_result(after.job_id)
    assert old.fee == 40 * PRICE * FEE_BPS // 10000
    assert new.fee == 40 * PRICE * 1000 // 10000
    await reverts("FeeTooHigh", owner.sender.transact(
        "JobMarketplace", owner.market.functions.setFeeBps, 2001))


@pytest.mark.parametrize("new_fee_bps", [0, 2000])
@pytest.mark.parametrize("settle", ["accept", "finalize", "resolve"])
async def test_a_fee_changed_after_posting_leaves_the_jobs_split_as_agreed(registered, settle,
                                                                          new_fee_bps):
    """The admin changes the fee while a job is in flight, before it is claimed and again
    before it settles: the host and the treasury get the split of the fee at posting."""
    net = registered
    owner, alice = net.chain("owner"), net.chain("alice")
    set_fee = owner.market.functions.setFeeBps
    posted = await post(net)
    await owner.sender.transact("JobMarketplace", set_fee, new_fee_bps)
    await net.chain("host1").claim_job(posted.job_id, MODEL)
    await net.chain("host1").submit_result(posted.job_id, result_hash=b"\x02" * 32, cid="bafk",
                                           tokens_used=37)
    await owner.sender.transact("JobMarketplace", set_fee, 2000 - new_fee_bps)
    assert (await alice.get_job(posted.job_id)).fee_bps == FEE_BPS
    if settle == "accept":
        settled = await alice.accept_result(posted.job_id)
        share_bps = 10000
    elif settle == "finalize":
        await net.time_travel(601)
        settled = await net.chain("bob").finalize(posted.job_id)
        share_bps = 10000
    else:
        await alice.dispute(posted.job_id, "junk")
        share_bps = 7000
        settled = await net.chain("arbitrator").resolve_dispute(posted.job_id, share_bps)
    payment = 37 * PRICE * share_bps // 10000
    fee = payment * FEE_BPS // 10000
    expected = (payment - fee, fee, posted.escrow_wei - payment)
    assert (settled.host_amount, settled.fee, settled.refund) == expected
    assert (await alice.withdrawable(net.chain("host1").address),
            await alice.withdrawable(net.treasury),
            await alice.withdrawable(alice.address)) == expected


async def test_the_dispute_window_is_fixed_when_the_result_is_submitted(registered):
    net = registered
    owner = net.chain("owner")
    posted = await submitted(net)
    await owner.sender.transact("JobMarketplace", owner.market.functions.setDisputeWindow, 10)
    await net.time_travel(60)
    await reverts("DisputeWindowOpen", net.chain("bob").finalize(posted.job_id))
    await net.chain("alice").dispute(posted.job_id, "still inside the agreed window")


async def test_the_arbitrator_cannot_give_the_host_more_than_all(registered):
    net = registered
    posted = await submitted(net)
    await reverts("WrongState", net.chain("arbitrator").resolve_dispute(posted.job_id, 10000))
    await net.chain("alice").dispute(posted.job_id, "junk")
    await reverts("BadShare", net.chain("arbitrator").resolve_dispute(posted.job_id, 10001))
