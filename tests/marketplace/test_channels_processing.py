"""What follows a job paid through a payment channel: nothing to settle on chain. An
attempt a crash left streaming is abandoned (the user is not charged for it) with what
its vouchers paid kept as the platform's cost, and the per-job sweeps (refunds, the
arbitrator) pass channel attempts by."""

from __future__ import annotations

import pytest
from django.utils import timezone
from eth_utils import to_checksum_address

from marketplace import processor
from marketplace.arbitration import disputes_resolve
from marketplace.channels import channel_lease, channel_pay, channels_reconcile
from marketplace.client.refunds import refund_abandoned
from marketplace.jobs import attempt_create, attempt_update, job_create, job_transition
from marketplace.models import (
    AttemptState,
    Job,
    JobAttempt,
    JobState,
    PaymentChannel,
    PaymentChannelState,
    ProcessingState,
)
from tests.conftest import MODEL

pytestmark = pytest.mark.django_db(transaction=True)

HOST = to_checksum_address("0x" + "ab" * 20)
CONTRACT = to_checksum_address("0x" + "cd" * 20)
KEY = bytes(range(1, 33))


def channel_attempt(*, state: str = AttemptState.STREAMING, paid: int = 5 * 10**11):
    job = job_create(model=MODEL, prompt="p", max_tokens=32, temperature=0.0)
    for step in (JobState.POSTED, JobState.CLAIMED, JobState.PROCESSING, JobState.STREAMING):
        job_transition(job_id=job.id, to=step)
    attempt = attempt_create(job_id=job.id, host_address=HOST, host_url="http://127.0.0.1:1",
                             price_per_token_wei=10**9, start_index=0)
    channel, _ = PaymentChannel.objects.get_or_create(
        chain_id=31337, contract=CONTRACT, host_address=HOST,
        defaults={"channel_id": 1, "payer_address": "0x" + "ef" * 20,
                  "state": PaymentChannelState.OPEN, "deposit_wei": 10**16,
                  "last_used_at": timezone.now()})
    lease = channel_lease(chain_id=31337, contract=CONTRACT, host_address=HOST, need_wei=paid)
    channel_pay(lease=lease, attempt_id=attempt.pk, add_wei=paid, private_key=KEY)
    attempt_update(attempt_id=attempt.pk, state=state)
    return Job.objects.get(pk=job.id), JobAttempt.objects.get(pk=attempt.pk)


def test_a_channel_attempt_a_crash_left_streaming_is_abandoned_and_not_charged(settings):
    job, attempt = channel_attempt()
    settings.OPS_ORPHAN_AFTER_S = 0

    assert processor.job_recover(job_id=str(job.id)) == JobState.FAILED

    attempt.refresh_from_db()
    job.refresh_from_db()
    assert attempt.state == AttemptState.ABANDONED and attempt.finished_at is not None
    # What the vouchers paid stays on the attempt: the platform's cost, not the user's.
    assert (int(attempt.voucher_wei), attempt.channel.host_address) == (5 * 10**11, HOST)
    assert int(job.paid_wei) == 0 and job.error_code == "INTERRUPTED"
    assert processor.job_process(job_id=str(job.id)) == ProcessingState.DONE
    assert channels_reconcile() == []


def test_processing_a_finished_job_abandons_its_unfinished_channel_attempts():
    job, attempt = channel_attempt(state=AttemptState.CLAIMED)
    job_transition(job_id=job.id, to=JobState.FAILED)
    processor.job_finished(job_id=job.id)

    assert processor.job_process(job_id=str(job.id)) == ProcessingState.DONE

    attempt.refresh_from_db()
    assert attempt.state == AttemptState.ABANDONED and int(attempt.voucher_wei) == 5 * 10**11


async def test_the_refund_and_dispute_sweeps_pass_channel_attempts_by(on_anvil):
    from asgiref.sync import sync_to_async

    _, abandoned = await sync_to_async(channel_attempt)(state=AttemptState.ABANDONED)
    _, disputed = await sync_to_async(channel_attempt)(state=AttemptState.DISPUTED)

    assert await refund_abandoned(on_anvil.chain("platform")) == 0
    assert await disputes_resolve(on_anvil.chain("arbitrator")) == 0

    await abandoned.arefresh_from_db()
    await disputed.arefresh_from_db()
    assert (abandoned.state, disputed.state) == (AttemptState.ABANDONED,
                                                 AttemptState.DISPUTED)
    assert abandoned.tx_hashes == {} and disputed.tx_hashes == {}
