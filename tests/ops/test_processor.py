"""The job processor: after-work of finished jobs, recovery of jobs whose process died,
stale reservations, dead letters."""

from __future__ import annotations

import json
import threading
from datetime import timedelta

import pytest
import redis
from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import connections
from django.utils import timezone

from accounts.models import ReservationState
from accounts.selectors import ledger_invariant_violations
from accounts.services import account_get_or_create, balance_reserve
from marketplace import processor, webhooks
from marketplace.jobs import job_create, job_transition
from marketplace.models import (
    DeadLetter,
    Job,
    JobProcessing,
    JobState,
    ProcessingState,
    UsageStats,
    WebhookDelivery,
    WebhookEndpoint,
)
from marketplace.services import JobSpec, run_job
from marketplace.tasks import deliver_webhook
from tests.conftest import MODEL

pytestmark = pytest.mark.django_db(transaction=True)


def finished_job(owner, *, state=JobState.COMPLETED, tokens=12, paid=12 * 10**9):
    job = job_create(model=MODEL, prompt="p", max_tokens=32, temperature=0.0,
                     owner_id=owner.pk if owner else None)
    job_transition(job_id=job.id, to=JobState.FAILED if state == JobState.FAILED
                   else JobState.POSTED)
    if state == JobState.COMPLETED:
        for step in (JobState.CLAIMED, JobState.PROCESSING, JobState.STREAMING):
            job_transition(job_id=job.id, to=step)
        job_transition(job_id=job.id, to=JobState.COMPLETED, tokens=tokens, paid_wei=paid,
                       text="x" * tokens)
    return Job.objects.get(pk=job.id)


def test_a_finished_job_is_counted_once_however_often_it_is_processed(alice, receiver):
    endpoint = WebhookEndpoint.objects.create(owner=alice, url=receiver.url)
    job = finished_job(alice)
    processor.job_finished(job_id=job.id)
    assert processor.job_process(job_id=str(job.id)) == ProcessingState.DONE
    # A second message for the same job (a redelivery, the sweep) finds nothing to do.
    assert processor.job_process(job_id=str(job.id)) == "not-due"
    JobProcessing.objects.filter(pk=job.id).update(state=ProcessingState.PENDING,
                                                   next_attempt_at=timezone.now())
    assert processor.job_process(job_id=str(job.id)) == ProcessingState.DONE
    stats = UsageStats.objects.get(user=alice)
    assert (stats.jobs, stats.tokens, int(stats.cost_wei), stats.failures) == (
        1, 12, 12 * 10**9, 0)
    (delivery,) = WebhookDelivery.objects.all()
    assert delivery.idempotency_key == f"job.completed:{job.id}:{endpoint.pk}"
    assert deliver_webhook(str(delivery.id)) == "DELIVERED"
    (request,) = receiver.requests
    assert request["json"]["job_id"] == str(job.id)
    assert request["json"]["tokens"] == 12
    assert webhooks.webhook_verify(secret=endpoint.secret,
                                   header=request["headers"]["X-Inkmarket-Signature"],
                                   body=request["body"])


def test_two_workers_processing_one_job_at_once_count_it_once(alice):
    jobs = [finished_job(alice) for _ in range(5)] + [finished_job(alice, state=JobState.FAILED)]
    for job in jobs:
        processor.job_finished(job_id=job.id)
    barrier = threading.Barrier(2)

    def work():
        barrier.wait()
        try:
            for job in jobs:
                processor.job_process(job_id=str(job.id))
        finally:
            connections.close_all()

    threads = [threading.Thread(target=work) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stats = UsageStats.objects.get(user=alice)
    assert (stats.jobs, stats.failures, stats.tokens) == (6, 1, 5 * 12)
    assert set(JobProcessing.objects.values_list("state", flat=True)) == {ProcessingState.DONE}


def test_a_job_that_is_not_finished_is_left_for_the_watcher(alice):
    job = job_create(model=MODEL, prompt="p", max_tokens=8, temperature=0.0, owner_id=alice.pk)
    processor.job_finished(job_id=job.id)
    assert processor.job_process(job_id=str(job.id)) == ProcessingState.PENDING
    row = JobProcessing.objects.get(pk=job.id)
    assert row.next_attempt_at > timezone.now() + timedelta(seconds=60)
    assert not UsageStats.objects.filter(user=alice).exists()


def test_a_job_whose_processing_keeps_dying_becomes_a_dead_letter(alice):
    job = finished_job(alice)
    JobProcessing.objects.create(job=job, state=ProcessingState.RUNNING,
                                 attempts=processor.MAX_CLAIMS, last_error="killed",
                                 next_attempt_at=timezone.now() - timedelta(seconds=1))
    assert processor.job_process(job_id=str(job.id)) == ProcessingState.FAILED
    (letter,) = DeadLetter.objects.all()
    assert letter.args == [str(job.id)] and "gave up after 12 runs: killed" in letter.error
    assert not UsageStats.objects.filter(user=alice).exists()
    assert processor.processing_due() == []


def test_the_sweep_finds_rows_whose_message_was_lost_or_whose_worker_died(alice):
    lost = finished_job(alice)
    held = finished_job(alice)
    later = finished_job(alice)
    JobProcessing.objects.create(job=lost, next_attempt_at=timezone.now())
    JobProcessing.objects.create(job=held, state=ProcessingState.RUNNING,
                                 next_attempt_at=timezone.now() - timedelta(seconds=1))
    JobProcessing.objects.create(job=later,
                                 next_attempt_at=timezone.now() + timedelta(minutes=5))
    assert set(processor.processing_due()) == {str(lost.id), str(held.id)}


def test_money_held_for_a_job_that_never_ended_goes_back(alice, settings):
    settings.OPS_RESERVATION_MAX_AGE_S = 60
    account = account_get_or_create(alice)
    old = balance_reserve(account, amount_wei=5000, reference="writer:dead")
    fresh = balance_reserve(account, amount_wei=700, reference="writer:alive")
    type(old).objects.filter(pk=old.pk).update(created_at=timezone.now() - timedelta(hours=1))
    assert processor.reservations_release_stale() == 1
    old.refresh_from_db()
    fresh.refresh_from_db()
    assert (old.state, fresh.state) == (ReservationState.RELEASED, ReservationState.HELD)
    account.refresh_from_db()
    assert account.held_wei == 700
    assert ledger_invariant_violations() == []


def test_a_dead_letter_is_replayed_from_a_clean_start(alice):
    job = finished_job(alice)
    JobProcessing.objects.create(job=job, state=ProcessingState.FAILED, attempts=9)
    letter = DeadLetter.objects.create(task="marketplace.tasks.process_job",
                                       args=[str(job.id)], error="ChainError: down")
    queue = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    queue.delete("celery")
    try:
        assert processor.dead_letter_replay(dead_letter_id=letter.pk) is True
        assert processor.dead_letter_replay(dead_letter_id=letter.pk) is False
        (message,) = [json.loads(m) for m in queue.lrange("celery", 0, -1)]
        assert message["headers"]["task"] == "marketplace.tasks.process_job"
        assert str(job.id) in message["headers"]["argsrepr"]
    finally:
        queue.delete("celery")
        queue.close()
    row = JobProcessing.objects.get(pk=job.id)
    assert (row.state, row.attempts) == (ProcessingState.PENDING, 0)
    letter.refresh_from_db()
    assert letter.resolved
    assert processor.job_process(job_id=str(job.id)) == ProcessingState.DONE


def test_a_job_still_written_to_is_no_orphan_and_a_silent_one_is_closed(alice, settings):
    job = job_create(model=MODEL, prompt="p", max_tokens=8, temperature=0.0, owner_id=alice.pk)
    for step in (JobState.POSTED, JobState.CLAIMED, JobState.PROCESSING, JobState.STREAMING):
        job_transition(job_id=job.id, to=step)
    assert processor.jobs_orphaned() == []
    assert processor.job_recover(job_id=str(job.id)) == "not-orphaned"
    settings.OPS_ORPHAN_AFTER_S = 0
    assert processor.jobs_orphaned() == [str(job.id)]
    assert processor.job_recover(job_id=str(job.id)) == JobState.FAILED
    job.refresh_from_db()
    assert (job.error_code, job.finished_at is not None) == ("INTERRUPTED", True)
    assert JobProcessing.objects.get(pk=job.id).state == ProcessingState.PENDING
    assert processor.job_recover(job_id=str(job.id)) == "not-orphaned"  # closed: no orphan
    assert processor.job_process(job_id=str(job.id)) == ProcessingState.DONE
    assert UsageStats.objects.get(user=alice).failures == 1


async def test_a_job_run_by_the_runner_is_queued_for_processing(network, alice):
    network.start_hosts({"host-1": 10**9})
    outcome = await run_job(JobSpec(model=MODEL, prompt="Name a colour.", max_tokens=8,
                                    temperature=0.0, owner_id=alice.pk))
    row = await JobProcessing.objects.aget(pk=outcome.job_id)
    assert row.state == ProcessingState.PENDING
    assert await sync_to_async(processor.job_process)(job_id=str(outcome.job_id)) == "DONE"
    stats = await UsageStats.objects.aget(user=alice)
    assert (stats.jobs, stats.tokens, int(stats.cost_wei)) == (1, outcome.tokens,
                                                              outcome.cost_wei)
