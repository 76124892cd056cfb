"""Writes to jobs and attempts. State changes are conditional updates: a job moves only
from the state the caller saw, so two writers can never both move it."""

from __future__ import annotations

import hashlib
import uuid
from typing import Any

from django.db import transaction
from django.utils import timezone

from marketplace.models import (
    TERMINAL_STATES,
    TRANSITIONS,
    AttemptState,
    Job,
    JobAttempt,
    JobState,
)


class IllegalTransition(Exception):
    def __init__(self, job_id: uuid.UUID, current: str, wanted: str):
        super().__init__(f"job {job_id}: {current} -> {wanted} is not allowed")
        self.current = current
        self.wanted = wanted


def prompt_hash(prompt: str) -> str:
    return hashlib.sha256(prompt.encode("utf-8")).hexdigest()


def job_create(
    *, model: str, prompt: str, max_tokens: int, temperature: float,
    owner_id: int | None = None, max_price_per_token_wei: int | None = None,
    job_id: uuid.UUID | None = None,
) -> Job:
    return Job.objects.create(
        id=job_id or uuid.uuid4(), owner_id=owner_id, model=model, prompt=prompt,
        prompt_hash=prompt_hash(prompt), max_tokens=max_tokens, temperature=temperature,
        max_price_per_token_wei=max_price_per_token_wei,
    )


@transaction.atomic
def job_transition(*, job_id: uuid.UUID, to: str, **fields: Any) -> Job:
    """Move a job to `to` if its current state allows it; other fields are saved with it."""
    job = Job.objects.select_for_update().get(pk=job_id)
    if to != job.state and to not in TRANSITIONS[job.state]:
        raise IllegalTransition(job_id, job.state, to)
    job.state = to
    for name, value in fields.items():
        setattr(job, name, value)
    if to in TERMINAL_STATES and job.finished_at is None:
        job.finished_at = timezone.now()
    job.save()
    return job


def job_record_progress(*, job_id: uuid.UUID, text: str, tokens: int) -> None:
    """Persist the text delivered so far; only ever moves forward."""
    updates: dict[str, Any] = {"text": text, "tokens": tokens, "updated": timezone.now()}
    Job.objects.filter(pk=job_id, tokens__lte=tokens).update(**updates)
    if tokens:
        Job.objects.filter(pk=job_id, first_token_at__isnull=True).update(
            first_token_at=timezone.now()
        )


def job_rewind(*, job_id: uuid.UUID, text: str, tokens: int) -> None:
    """Take the text back to what was kept (a failed host's part is dropped): the one
    write that moves the text backwards."""
    Job.objects.filter(pk=job_id).update(text=text, tokens=tokens, updated=timezone.now())


def attempt_create(*, job_id: uuid.UUID, host_address: str, host_url: str,
                   price_per_token_wei: int, start_index: int) -> JobAttempt:
    with transaction.atomic():
        Job.objects.select_for_update().get(pk=job_id)
        number = JobAttempt.objects.filter(job_id=job_id).count() + 1
        return JobAttempt.objects.create(
            job_id=job_id, number=number, host_address=host_address, host_url=host_url,
            price_per_token_wei=price_per_token_wei, start_index=start_index,
        )


# The states an attempt reaches only once the host has answered the client on the stream.
ANSWERED_STATES = frozenset({AttemptState.CLAIMED, AttemptState.STREAMING})


def attempt_update(*, attempt_id: int, tx: dict[str, str] | None = None, **fields: Any) -> None:
    with transaction.atomic():
        attempt = JobAttempt.objects.select_for_update().get(pk=attempt_id)
        for name, value in fields.items():
            setattr(attempt, name, value)
        if attempt.answered_at is None and fields.get("state") in ANSWERED_STATES:
            attempt.answered_at = timezone.now()
        if tx:
            attempt.tx_hashes = {**attempt.tx_hashes, **tx}
        attempt.save()


def job_is_terminal(state: str) -> bool:
    return state in TERMINAL_STATES or state == JobState.COMPLETED
