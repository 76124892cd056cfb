"""Reputation from evidence nobody can buy or forge: our own record, where a failure counts
only when we proved we were there, and the chain's history weighted by value paid by
distinct payers (marketplace.reputation). The attacks themselves, on anvil, are in
test_reputation_attacks.py."""

from __future__ import annotations

import pytest
from django.utils import timezone

from marketplace.jobs import attempt_create, attempt_update, job_create
from marketplace.models import AttemptState
from marketplace.reputation import (
    CHAIN_CAP,
    MIN_PAID_TOKENS,
    REFERENCE_TOKENS,
    ChainHistory,
    chain_credit,
    local_record,
)

HOST, OTHER = "0x" + "a" * 40, "0x" + "b" * 40
PRICE = 10**9
UNIT = PRICE * REFERENCE_TOKENS  # a reference job at the market's price


def payer(n: int) -> str:
    return "0x" + f"{n:040x}"


def history_of(*jobs: tuple[str, str, int, str]) -> ChainHistory:
    """Jobs as (client, host, tokens paid, how it ended), folded in as their events."""
    history = ChainHistory(first_block=0)
    for job_id, (client, host, tokens, end) in enumerate(jobs, start=1):
        history.apply("JobPosted", {"jobId": job_id, "client": client})
        history.apply("JobClaimed", {"jobId": job_id, "host": host, "price": PRICE})
        paid = tokens * PRICE
        if end == "completed":
            history.apply("JobCompleted", {"jobId": job_id, "host": host,
                                           "hostAmount": paid - paid // 40, "fee": paid // 40,
                                           "refund": 0})
        elif end == "expired":  # disputed, and the arbitrator let the deadline pass
            history.apply("DisputeExpired", {"jobId": job_id, "hostAmount": paid - paid // 40,
                                             "fee": paid // 40, "refund": 0})
        elif end == "refunded":
            history.apply("JobRefunded", {"jobId": job_id, "client": client,
                                          "amount": paid, "hostFailed": True})
        elif end.startswith("lost"):
            history.apply("DisputeResolved", {"jobId": job_id, "hostShareBps": 0,
                                              "hostAmount": 0, "fee": 0, "refund": paid})
    return history


def credit(history: ChainHistory, host: str = HOST, **kwargs) -> tuple[float, float]:
    return chain_credit(history.hosts.get(host.lower()), unit_wei=UNIT, **kwargs)


def test_a_full_job_paid_by_a_stranger_counts_as_one_job():
    assert credit(history_of((payer(1), HOST, REFERENCE_TOKENS, "completed"))) == (1.0, 0.0)


def test_jobs_that_paid_for_almost_nothing_count_for_nothing_however_many():
    tiny = [(payer(n % 5 + 1), HOST, 1, "completed") for n in range(500)]
    assert credit(history_of(*tiny)) == (0.0, 0.0)
    below = [(payer(1), HOST, MIN_PAID_TOKENS - 1, "completed")] * 50
    assert credit(history_of(*below)) == (0.0, 0.0)


def test_a_host_paying_itself_from_its_own_address_counts_for_nothing():
    assert credit(history_of(*[(HOST, HOST, 1000, "completed")] * 10)) == (0.0, 0.0)


def test_one_payer_vouches_for_at_most_one_job_however_much_it_pays():
    many = [(payer(1), HOST, 10 * REFERENCE_TOKENS, "completed")] * 20
    assert credit(history_of(*many)) == (1.0, 0.0)


def test_many_payers_together_vouch_for_at_most_the_chain_cap():
    crowd = [(payer(n), HOST, REFERENCE_TOKENS, "completed") for n in range(1, 50)]
    assert credit(history_of(*crowd)) == (CHAIN_CAP, 0.0)


def test_our_own_payments_are_left_to_our_own_record():
    ours = payer(7)
    history = history_of((ours, HOST, REFERENCE_TOKENS, "completed"))
    assert credit(history, exclude=frozenset({ours})) == (0.0, 0.0)


def test_a_dispute_left_to_expire_counts_as_the_job_it_paid_for():
    assert credit(history_of((payer(1), HOST, REFERENCE_TOKENS, "expired"))) == (1.0, 0.0)


def test_refunds_count_for_nothing_but_a_dispute_the_arbitrator_decided_counts_against():
    refunded = history_of(*[(payer(n), HOST, REFERENCE_TOKENS, "refunded")
                            for n in range(1, 20)])
    assert credit(refunded) == (0.0, 0.0)
    lost = history_of((payer(1), HOST, REFERENCE_TOKENS, "lost"),
                      (payer(1), HOST, REFERENCE_TOKENS, "lost"),
                      (payer(2), HOST, REFERENCE_TOKENS, "lost"))
    assert credit(lost) == (0.0, 4.0)  # two payers, each capped, disputes weigh double


def test_the_history_remembers_a_bounded_number_of_open_jobs(monkeypatch):
    from marketplace import reputation

    monkeypatch.setattr(reputation, "MAX_OPEN_JOBS", 3)
    history = ChainHistory(first_block=0)
    for job_id in range(1, 11):
        history.apply("JobPosted", {"jobId": job_id, "client": payer(job_id)})
    assert list(history.jobs) == [8, 9, 10]


async def post_one(chain) -> int:
    posted = await chain.post_job(model="m", prompt_hash=b"\x01" * 32, max_tokens=1,
                                  max_price_per_token_wei=1,
                                  deadline=await chain.block_time() + 600)
    return posted.job_id


async def test_the_chain_is_read_incrementally_at_most_every_refresh_and_in_bounded_steps(
        on_anvil, monkeypatch):
    from marketplace import reputation

    reputation.forget()
    chain = on_anvil.chain("platform")
    history = await reputation.chain_history(chain)
    first = await post_one(chain)

    # Within REFRESH_S nothing is read: discovery never waits on the chain twice.
    assert await reputation.chain_history(chain) is history and first not in history.jobs
    assert first in (await reputation.chain_history(chain, fresh=True)).jobs

    monkeypatch.setattr(reputation, "REFRESH_S", 0.0)
    monkeypatch.setattr(reputation, "MAX_BLOCKS_PER_READ", 1)
    later = [await post_one(chain) for _ in range(3)]  # one block each on anvil
    await reputation.chain_history(chain)
    assert later[0] in history.jobs and later[1] not in history.jobs  # one block a read
    await reputation.chain_history(chain)
    await reputation.chain_history(chain)
    assert all(job in history.jobs for job in later)


# ---- our own record --------------------------------------------------------------------


def attempt(state: str, *, answered: bool = False, tokens: int = 0, code: str = "",
            host: str = HOST) -> None:
    job = job_create(model="m", prompt="p", max_tokens=8, temperature=0.0)
    made = attempt_create(job_id=job.id, host_address=host, host_url="http://h",
                          price_per_token_wei=PRICE, start_index=0)
    if answered:
        attempt_update(attempt_id=made.pk, state=AttemptState.CLAIMED)
    attempt_update(attempt_id=made.pk, state=state, tokens=tokens, error_code=code)


@pytest.mark.django_db
def test_the_attempt_remembers_that_the_host_answered_after_its_state_moves_on():
    attempt(AttemptState.ABANDONED, answered=True, code="HOST_UNAVAILABLE")
    from marketplace.models import JobAttempt

    (only,) = JobAttempt.objects.all()
    assert only.state == AttemptState.ABANDONED
    assert only.answered_at is not None and only.answered_at <= timezone.now()


@pytest.mark.django_db
def test_a_failure_counts_only_where_the_client_proved_it_was_there():
    attempt(AttemptState.ACCEPTED, answered=True, tokens=8)
    attempt(AttemptState.ACCEPTED, answered=True, tokens=8)
    # Never reached: our network, our process, or a host we could not prove anything of.
    attempt(AttemptState.ABANDONED, code="HOST_UNAVAILABLE")
    attempt(AttemptState.REFUNDED)
    # Proven: the host answered and then failed; sent bytes the protocol refuses;
    # streamed and never submitted; delivered a result we disputed.
    attempt(AttemptState.REFUNDED, answered=True)
    attempt(AttemptState.ABANDONED, code="HOST_MALFORMED")
    attempt(AttemptState.ABANDONED, code="NO_RESULT", tokens=5)
    attempt(AttemptState.DISPUTED, answered=True, tokens=8)
    attempt(AttemptState.ACCEPTED, answered=True, host=OTHER)

    assert local_record([HOST, OTHER]) == {HOST: (2, 1 + 1 + 1 + 2), OTHER: (1, 0)}
