"""Settling attempts the client walked away from (a dead or stalled host).

Past the deadline, an attempt whose host never delivered a result is refunded in full
through the contract's timeout path; one whose host submitted a result after we had moved
on is disputed, since we never received that text.
"""

from __future__ import annotations

import logging

from asgiref.sync import sync_to_async

from marketplace import jobs as job_services
from marketplace.chain.contracts import Chain, JobStatus
from marketplace.chain.errors import ChainError
from marketplace.models import AttemptState, JobAttempt

log = logging.getLogger(__name__)


def _abandoned() -> list[tuple[int, int]]:
    return list(JobAttempt.objects.filter(state=AttemptState.ABANDONED,
                                          chain_job_id__isnull=False)
                .values_list("pk", "chain_job_id"))


async def refund_abandoned(chain: Chain) -> int:
    """Refund or dispute every abandoned attempt whose deadline has passed; returns how many."""
    settled = 0
    now = await chain.block_time()
    for attempt_id, chain_job_id in await sync_to_async(_abandoned)():
        job = await chain.get_job(chain_job_id)
        try:
            if job.status in (JobStatus.POSTED, JobStatus.CLAIMED) and now > job.deadline:
                tx = await chain.refund_expired(chain_job_id)
                await sync_to_async(job_services.attempt_update)(
                    attempt_id=attempt_id, state=AttemptState.REFUNDED,
                    refund_wei=job.escrow_wei, tx={"refund": tx})
                settled += 1
            elif job.status == JobStatus.SUBMITTED:
                tx = await chain.dispute(chain_job_id, "result submitted after the client "
                                                       "had to fail over")
                await sync_to_async(job_services.attempt_update)(
                    attempt_id=attempt_id, state=AttemptState.DISPUTED, tx={"dispute": tx})
                settled += 1
            elif job.status == JobStatus.REFUNDED:
                await sync_to_async(job_services.attempt_update)(
                    attempt_id=attempt_id, state=AttemptState.REFUNDED,
                    refund_wei=job.escrow_wei)
        except ChainError as exc:
            log.warning("could not settle abandoned job %s: %s", chain_job_id, exc)
    return settled
