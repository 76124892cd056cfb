"""The arbitrator: ends the disputes our jobs raise, on the verifier's evidence.

It runs with its own key (`wallet.arbitrator_chain`, never the paying wallet) on Celery
beat (`marketplace.tasks.resolve_disputes`), and must act within the contract's
arbitration window: past it, anyone may expire the dispute and the host is paid what it
billed. The verdict is a pure function of what we recorded (`verdict`):

- the verifier re-scored the result and it failed (a cheat the record's evidence shows),
  or the host billed tokens we never received or committed a text other than the one it
  streamed: the host gets nothing and `MARKETPLACE_SLASH_MULTIPLE` times the job's escrow
  is slashed from its stake (at most the stake);
- the result passed the re-score (a dispute the host raised, or one raised before the
  verdict was in): the host gets all it billed;
- anything else (a host we left for another that submitted afterwards, a text score
  below the threshold with no re-score): nothing is paid and nothing slashed, since
  nothing shows bad faith.

A job paid through a payment channel has no dispute on chain: the vouchers paid the host
as the tokens arrived. When its result then fails the same way, the arbitrator slashes
the host's stake directly (NodeRegistry.slash), `MARKETPLACE_SLASH_MULTIPLE` times what
the vouchers paid, at most the stake (`channel_slashes`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from asgiref.sync import sync_to_async
from django.conf import settings

from marketplace import jobs as job_services
from marketplace.chain.contracts import Chain, JobStatus
from marketplace.chain.errors import ChainError
from marketplace.models import AttemptState, JobAttempt, VerificationRecord, VerificationState
from marketplace.verifier.service import GATES_FAILED

log = logging.getLogger(__name__)

CHEATED = "the result failed verification"


@dataclass(frozen=True)
class Verdict:
    host_share_bps: int
    slash: bool
    reason: str


def verdict(record: VerificationRecord | None) -> Verdict:
    if record is None:
        return Verdict(0, False, "no re-score on record: the host's result was not accepted")
    if record.state == VerificationState.FAILED:
        return Verdict(0, True, f"{CHEATED}: {record.reason}")
    if record.state == VerificationState.SKIPPED and record.reason == GATES_FAILED:
        return Verdict(0, True, "the host billed tokens it never sent, or committed another "
                                "text than it streamed")
    if record.state == VerificationState.PASSED:
        return Verdict(10_000, False, "the result passed verification")
    return Verdict(0, False, f"no verdict on the result ({record.get_state_display()})")


def _open_disputes() -> list[tuple[int, int]]:
    return list(JobAttempt.objects.filter(state=AttemptState.DISPUTED,
                                          chain_job_id__isnull=False)
                .exclude(tx_hashes__has_key="resolve")
                .values_list("pk", "chain_job_id"))


async def disputes_resolve(arbitrator: Chain) -> int:
    """Resolve every open dispute of ours on chain; returns how many were resolved."""
    resolved = 0
    for attempt_id, chain_job_id in await sync_to_async(_open_disputes)():
        job = await arbitrator.get_job(chain_job_id)
        if job.status != JobStatus.DISPUTED:
            # Resolved or expired already (by us before a crash, or by anyone past the
            # deadline): record that nothing is left to do.
            await sync_to_async(job_services.attempt_update)(
                attempt_id=attempt_id, tx={"resolve": f"settled on chain ({job.status.name})"})
            continue
        record = await VerificationRecord.objects.filter(attempt_id=attempt_id).afirst()
        decided = verdict(record)
        slash = 0
        if decided.slash:
            stake = (await arbitrator.get_node(job.host)).stake
            slash = min(stake, settings.MARKETPLACE_SLASH_MULTIPLE * job.escrow_wei)
        try:
            settled = await arbitrator.resolve_dispute(chain_job_id, decided.host_share_bps,
                                                       slash)
        except ChainError as exc:
            log.warning("could not resolve the dispute of job %s: %s", chain_job_id, exc)
            continue
        log.info("dispute of job %s resolved: host share %s bps, %s wei slashed (%s)",
                 chain_job_id, decided.host_share_bps, slash, decided.reason)
        await sync_to_async(job_services.attempt_update)(
            attempt_id=attempt_id, paid_wei=settled.paid_wei, refund_wei=settled.refund,
            tx={"resolve": settled.tx_hash})
        resolved += 1
    return resolved


def _channel_disputes() -> list[tuple[int, str, int]]:
    return list(JobAttempt.objects.filter(state=AttemptState.DISPUTED,
                                          chain_job_id__isnull=True, channel__isnull=False)
                .exclude(tx_hashes__has_key="slash")
                .values_list("pk", "host_address", "voucher_wei"))


async def channel_slashes(arbitrator: Chain) -> int:
    """Slash the hosts of channel jobs whose results failed the check; returns how many
    were slashed. Each attempt is judged once (its "slash" entry records the outcome)."""
    slashed = 0
    for attempt_id, host, paid in await sync_to_async(_channel_disputes)():
        record = await VerificationRecord.objects.filter(attempt_id=attempt_id).afirst()
        decided = verdict(record)
        outcome = "no slash: " + decided.reason
        if decided.slash:
            stake = (await arbitrator.get_node(host)).stake
            amount = min(stake, settings.MARKETPLACE_SLASH_MULTIPLE * int(paid))
            if amount > 0:
                try:
                    outcome = await arbitrator.slash(host, amount, decided.reason[:200])
                except ChainError as exc:
                    log.warning("could not slash %s for attempt %s: %s", host, attempt_id,
                                exc)
                    continue
                log.info("slashed %s wei of %s for attempt %s (%s)", amount, host,
                         attempt_id, decided.reason)
                slashed += 1
        await sync_to_async(job_services.attempt_update)(attempt_id=attempt_id,
                                                         tx={"slash": outcome[:200]})
    return slashed
