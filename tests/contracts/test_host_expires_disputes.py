"""A dispute nobody rules on does not lock the host's pay: the host watches its disputes
(marketplace.host.disputes) and, once the arbitration deadline has passed on chain, expires
them itself. What it knows survives a restart."""

from marketplace.chain.contracts import JobStatus
from marketplace.host.disputes import DisputeWatch
from tests.contracts.conftest import ARBITRATION_WINDOW_S, PRICE
from tests.contracts.test_disputes import disputed
from tests.contracts.test_job_marketplace import split


async def test_the_host_expires_its_dispute_past_the_deadline_and_not_before(registered, tmp_path):
    net = registered
    host = net.chain("host1")
    state = tmp_path / "disputes.json"
    watch = DisputeWatch(host, state)
    posted = await disputed(net, tokens=40)

    assert await watch.step() == []  # the arbitrator still has time
    assert watch.open == {posted.job_id: (await host.get_job(posted.job_id)).dispute_until}

    await net.time_travel(ARBITRATION_WINDOW_S + 1)
    assert await DisputeWatch(host, state).step() == [posted.job_id]  # after a restart

    assert (await host.get_job(posted.job_id)).status == JobStatus.RESOLVED
    host_amount, _fee, _refund = split(40, PRICE, posted.escrow_wei)
    assert await host.withdrawable(host.address) == host_amount
    again = DisputeWatch(host, state)
    assert again.open == {} and await again.step() == []


async def test_other_hosts_disputes_and_resolved_ones_are_left_alone(registered, tmp_path):
    net = registered
    theirs = await disputed(net, host="host2")
    mine = await disputed(net)
    watch = DisputeWatch(net.chain("host1"), tmp_path / "disputes.json")
    await watch.step()
    assert set(watch.open) == {mine.job_id}
    # The arbitrator rules in time: nothing is left to expire.
    await net.chain("arbitrator").resolve_dispute(mine.job_id, 10_000)
    await net.time_travel(ARBITRATION_WINDOW_S + 1)
    assert await watch.step() == [] and watch.open == {}
    assert (await net.chain("alice").get_job(theirs.job_id)).status == JobStatus.DISPUTED


async def test_an_unreadable_state_file_means_reading_the_chain_again(registered, tmp_path):
    net = registered
    posted = await disputed(net)
    state = tmp_path / "disputes.json"
    state.write_text("{not json")
    watch = DisputeWatch(net.chain("host1"), state)
    await net.time_travel(ARBITRATION_WINDOW_S + 1)
    assert await watch.step() == [posted.job_id]
