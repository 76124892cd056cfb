"""The guarantees every Celery task of ours makes, checked on the registered tasks
themselves: late acks, time limits Celery accepts, a dead letter for what fails for good,
and log lines that name the task and the job."""

from __future__ import annotations

import json
import logging

import pytest
from django.conf import settings

from config.celery import app
from marketplace.jobs import attempt_create, attempt_update
from marketplace.models import AttemptState, DeadLetter, JobProcessing, ProcessingState
from marketplace.tasks import OpsTask, process_job
from observability.logging import JsonFormatter
from tests.ops.test_processor import finished_job

pytestmark = pytest.mark.django_db(transaction=True)


def our_tasks():
    app.loader.import_default_modules()
    return {name: task for name, task in app.tasks.items()
            if name.startswith(("marketplace.tasks.", "marketplace.gateway.tasks."))}


def test_every_task_acks_late_and_has_limits_celery_accepts():
    tasks = our_tasks()
    assert {"marketplace.tasks.process_job", "marketplace.tasks.recover_job",
            "marketplace.tasks.sweep_processing", "marketplace.tasks.watch_orphaned_jobs",
            "marketplace.tasks.deliver_webhook", "marketplace.gateway.tasks.batch_items_run",
            "marketplace.gateway.tasks.batch_items_sweep"} <= set(tasks)
    for name, task in tasks.items():
        assert task.acks_late, name
        hard = task.time_limit or settings.CELERY_TASK_TIME_LIMIT
        soft = task.soft_time_limit or settings.CELERY_TASK_SOFT_TIME_LIMIT
        assert soft <= hard, f"{name}: soft limit {soft} s over the hard {hard} s"


def test_every_periodic_task_is_a_registered_task():
    tasks = set(app.tasks)
    for entry in settings.CELERY_BEAT_SCHEDULE.values():
        assert entry["task"] in tasks, entry["task"]


def test_the_processor_tasks_are_requeued_when_their_worker_is_lost():
    for task in (process_job,):
        assert isinstance(task, OpsTask)
        assert task.reject_on_worker_lost and task.max_retries == 8


def test_a_job_that_cannot_be_settled_ends_as_a_dead_letter(alice, settings, unused_port):
    settings.CHAIN_RPC = f"http://127.0.0.1:{unused_port}"  # the chain never answers
    job = finished_job(alice)
    attempt = attempt_create(job_id=job.id, host_address="0x" + "1" * 40,
                             host_url="http://127.0.0.1:1", price_per_token_wei=1,
                             start_index=0)
    attempt_update(attempt_id=attempt.pk, state=AttemptState.SUBMITTED, chain_job_id=7)
    JobProcessing.objects.create(job=job, next_attempt_at=job.created)
    result = process_job.apply(args=[str(job.id)], retries=process_job.max_retries)
    assert result.failed()
    (letter,) = DeadLetter.objects.all()
    assert letter.task == "marketplace.tasks.process_job" and letter.args == [str(job.id)]
    assert "chain unavailable" in letter.error
    row = JobProcessing.objects.get(pk=job.id)
    assert row.state == ProcessingState.FAILED and "chain unavailable" in row.last_error


class Lines(logging.Handler):
    """Formats each record as it is emitted, inside the task."""

    def __init__(self):
        super().__init__()
        self.setFormatter(JsonFormatter())
        self.lines: list[dict] = []

    def emit(self, record):
        self.lines.append(json.loads(self.format(record)))


def test_a_tasks_log_lines_name_the_task_and_the_job(alice):
    job = finished_job(alice)
    JobProcessing.objects.create(job=job, next_attempt_at=job.created)
    lines = Lines()
    logger = logging.getLogger("marketplace.processor")
    logger.addHandler(lines)
    logger.setLevel(logging.INFO)
    try:
        result = process_job.apply(args=[str(job.id)], task_id="task-42")
    finally:
        logger.removeHandler(lines)
    assert result.get() == ProcessingState.DONE
    (line,) = [line for line in lines.lines if line["message"] == "job processed"]
    assert (line["task"], line["task_id"], line["job_id"]) == (
        "marketplace.tasks.process_job", "task-42", str(job.id))
    assert line["state"] == "COMPLETED"
