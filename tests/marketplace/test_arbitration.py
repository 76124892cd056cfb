"""The arbitrator ends our disputes on the verifier's evidence, with its own key: a cheat
caught by the re-score is paid nothing and slashed; a result that passed is paid."""

from __future__ import annotations

import pytest

from marketplace.arbitration import disputes_resolve, verdict
from marketplace.chain.contracts import JobStatus
from marketplace.models import AttemptState, JobAttempt, VerificationRecord, VerificationState
from marketplace.services import JobSpec, run_job
from marketplace.verifier.service import GATES_FAILED
from marketplace.wallet import arbitrator_chain, platform_chain
from tests.conftest import MODEL


def record(state: str, reason: str = "") -> VerificationRecord:
    return VerificationRecord(state=state, reason=reason)


def test_a_failed_re_score_takes_all_and_slashes():
    decided = verdict(record(VerificationState.FAILED, "position 3: log-probability differs"))
    assert (decided.host_share_bps, decided.slash) == (0, True)
    assert "log-probability differs" in decided.reason


def test_a_bill_for_tokens_never_sent_is_bad_faith_too():
    decided = verdict(record(VerificationState.SKIPPED, GATES_FAILED))
    assert (decided.host_share_bps, decided.slash) == (0, True)


def test_a_result_that_passed_is_paid_in_full():
    assert verdict(record(VerificationState.PASSED)).host_share_bps == 10_000
    assert not verdict(record(VerificationState.PASSED)).slash


@pytest.mark.parametrize("found", [None, record(VerificationState.SKIPPED, "not sampled"),
                                   record(VerificationState.ERROR, "decode failed")])
def test_without_evidence_of_bad_faith_nothing_is_paid_and_nothing_slashed(found):
    decided = verdict(found)
    assert (decided.host_share_bps, decided.slash) == (0, False)


@pytest.mark.django_db(transaction=True)
async def test_a_cheat_caught_by_the_verifier_is_slashed_by_the_arbitrator(network):
    cheat, honest = network.start_hosts({"host-1": 10**9, "host-2": 2 * 10**9},
                                        args={"host-1": ["--behaviour", "junk"]})
    outcome = await run_job(JobSpec(model=MODEL, prompt="Name three kinds of tree.",
                                    max_tokens=32, temperature=0.0))
    assert outcome.host == honest.address
    caught = await JobAttempt.objects.aget(job_id=outcome.job_id, host_address=cheat.address)
    assert caught.state == AttemptState.DISPUTED
    platform = await platform_chain()
    arbitrator = await arbitrator_chain()
    assert arbitrator.address != platform.address  # the wallet that pays never judges
    stake_before = (await platform.get_node(cheat.address)).stake
    slashed_before = await platform.registry.functions.slashedBalance().call()
    refund_before = await platform.withdrawable(platform.address)

    assert await disputes_resolve(arbitrator) == 1
    assert await disputes_resolve(arbitrator) == 0  # once only

    job = await platform.get_job(caught.chain_job_id)
    assert job.status == JobStatus.RESOLVED
    slash = min(stake_before, 10 * job.escrow_wei)
    node = await platform.get_node(cheat.address)
    assert node.stake == stake_before - slash and node.open_disputes == 0
    assert await platform.withdrawable(cheat.address) == 0
    # Held for the treasury (NodeRegistry.withdrawSlashed).
    assert await platform.registry.functions.slashedBalance().call() - slashed_before == slash
    # The whole escrow comes back to the platform wallet: the user paid for none of it.
    assert await platform.withdrawable(platform.address) - refund_before == job.escrow_wei
    await caught.arefresh_from_db()
    assert "resolve" in caught.tx_hashes and caught.paid_wei == 0
    assert caught.refund_wei == job.escrow_wei
