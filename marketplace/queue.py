"""Sending Celery tasks by name, so that a service which queues work need not import the
task module that wraps it (tasks import services; services never import tasks)."""

from __future__ import annotations

import logging

from celery import current_app

log = logging.getLogger(__name__)

PROCESS_JOB = "marketplace.tasks.process_job"
RECOVER_JOB = "marketplace.tasks.recover_job"
DELIVER_WEBHOOK = "marketplace.tasks.deliver_webhook"


def send(task: str, *args, **options) -> None:
    """Queue `task` (a registered task's name) with `args`; raises when the broker refuses."""
    current_app.signature(task, args=args, **options).delay()


def enqueue(task: str, *args) -> bool:
    """Send a task; a broker outage must not fail the caller, the sweep re-sends it."""
    try:
        send(task, *args)
    except Exception as exc:  # kombu raises its own family per transport; all mean "not sent"
        log.warning("could not enqueue %s%r: %s", task, args, exc)
        return False
    return True
