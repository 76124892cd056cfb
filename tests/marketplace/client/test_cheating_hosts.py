"""Hosts that cheat on the work itself, each beside an honest one on the devnet: real host
processes started with `manage.py runhost --behaviour NAME`, anvil, our contracts, the
client's runner and the verifier, which re-scores every result here (the tests' settings
verify all of them). The stream of a cheating host follows the protocol and its result's
hash matches what it streamed, so every text check passes; only the verifier (or, for
`overclaim`, the bill) shows the cheat. The user gets the honest host's answer and pays
for it alone; the cheat is disputed, with the verifier's evidence on record, and ranked
out."""

from __future__ import annotations

import pytest

from marketplace.models import (
    AttemptState,
    Job,
    JobAttempt,
    JobState,
    VerificationRecord,
    VerificationState,
)
from marketplace.services import JobSpec, run_job
from marketplace.wallet import platform_chain
from tests.conftest import MODEL

pytestmark = pytest.mark.django_db(transaction=True)

CHEAP = 10**9  # the cheating host is the cheaper, so the client tries it first
HONEST_PRICE = 2 * 10**9
PROMPTS = ["Write a paragraph about the history of the bicycle.",
           "Give one tip for sleeping well.", "Write a sentence about the sea."]


def start_pair(network, behaviour: str):
    return network.start_hosts({"host-1": CHEAP, "host-2": HONEST_PRICE},
                               args={"host-1": ["--behaviour", behaviour]})


@pytest.mark.parametrize("behaviour, temperature", [
    ("junk", 0.0),  # a fluent advertisement: reads well, answers another prompt
    ("wrong-temperature", 0.0),  # sampled at 0.7
    ("requantized", 0.7),  # the same model id on Q2_K weights
])
async def test_a_cheat_is_caught_by_the_verifier_disputed_unpaid_and_ranked_out(
        network, behaviour, temperature):
    cheat, honest = start_pair(network, behaviour)
    chain = await platform_chain()
    outcomes = [await run_job(JobSpec(model=MODEL, prompt=prompt, max_tokens=64,
                                      temperature=temperature)) for prompt in PROMPTS]

    first = await Job.objects.aget(pk=outcomes[0].job_id)
    caught, good = [a async for a in first.attempts.order_by("number")]
    assert caught.host_address == cheat.address and caught.state == AttemptState.DISPUTED
    record = await VerificationRecord.objects.aget(attempt=caught)
    assert record.state == VerificationState.FAILED, record.reason
    assert record.positions == caught.tokens > 0 and record.evidence and record.reason
    # Every text check passed: only the re-score tells this result from an honest one.
    assert caught.result_hash and caught.tokens_billed == caught.tokens
    assert good.host_address == honest.address and good.state == AttemptState.ACCEPTED
    assert (await VerificationRecord.objects.aget(attempt=good)).state == \
        VerificationState.PASSED
    assert first.state == JobState.COMPLETED and first.text == outcomes[0].text

    for outcome in outcomes:
        assert outcome.host == honest.address and outcome.verified
        # The user pays the honest host's tokens at its price, nothing for the cheat's.
        job = await Job.objects.aget(pk=outcome.job_id)
        accepted = await job.attempts.aget(state=AttemptState.ACCEPTED)
        assert outcome.cost_wei == accepted.tokens_billed * HONEST_PRICE == int(job.paid_wei)
    # Ranked out after its first result: the later jobs never tried it.
    tried = [a.host_address async for a in
             JobAttempt.objects.filter(job_id__in=[o.job_id for o in outcomes[1:]])]
    assert cheat.address not in tried
    assert await chain.withdrawable(cheat.address) == 0
    assert (await chain.get_node(cheat.address)).disputed == 1


async def test_a_host_that_bills_more_tokens_than_it_sent_is_disputed_unchecked(network):
    cheat, honest = start_pair(network, "overclaim")
    # A short answer, well inside its budget: the host bills the whole budget.
    outcome = await run_job(JobSpec(model=MODEL, prompt="Say hello.", max_tokens=200,
                                    temperature=0.0))
    assert outcome.host == honest.address
    job = await Job.objects.aget(pk=outcome.job_id)
    caught, good = [a async for a in job.attempts.order_by("number")]
    assert caught.host_address == cheat.address and caught.state == AttemptState.DISPUTED
    assert caught.tokens_billed == 200 > caught.tokens > 0
    record = await VerificationRecord.objects.aget(attempt=caught)
    # The bill alone condemns it: no re-score is spent on it.
    assert record.state == VerificationState.SKIPPED
    assert outcome.cost_wei == good.tokens_billed * HONEST_PRICE
