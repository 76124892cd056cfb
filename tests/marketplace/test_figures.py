"""Each host's figures from our own jobs and probes over the recent window, host by host
(marketplace.figures). Hosts of known speed on the devnet are in
tests/gateway/test_models.py."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from marketplace.figures import HostFigures, host_figures, host_probes_record
from marketplace.jobs import attempt_create, attempt_update, job_create
from marketplace.models import AttemptState, HostProbe, JobAttempt

pytestmark = pytest.mark.django_db

HOST, OTHER = "0x" + "a" * 40, "0x" + "b" * 40
WINDOW_S = 600


@pytest.fixture(autouse=True)
def window(settings):
    settings.MARKETPLACE_FIGURES_WINDOW_S = WINDOW_S


def attempt(state: str = AttemptState.ACCEPTED, *, host: str = HOST, ttft: float | None = None,
            tps: float | None = None, answered: bool = True, code: str = "",
            age_s: float = 0) -> None:
    job = job_create(model="m", prompt="p", max_tokens=8, temperature=0.0)
    made = attempt_create(job_id=job.id, host_address=host, host_url="http://h",
                          price_per_token_wei=1, start_index=0)
    if answered:
        attempt_update(attempt_id=made.pk, state=AttemptState.CLAIMED)
    attempt_update(attempt_id=made.pk, state=state, ttft_ms=ttft, tokens_per_s=tps,
                   error_code=code)
    if age_s:
        JobAttempt.objects.filter(pk=made.pk).update(
            created=timezone.now() - timedelta(seconds=age_s))


def test_ttft_and_speed_are_medians_so_one_stall_does_not_move_them():
    for ttft, tps in [(100.0, 50.0), (120.0, 40.0), (5000.0, 1.0)]:
        attempt(ttft=ttft, tps=tps)

    figures = host_figures([HOST])[HOST]

    assert (figures.ttft_p50_ms, figures.tokens_per_s) == (120.0, 40.0)


def test_only_the_window_counts():
    attempt(ttft=100.0, tps=50.0)
    attempt(AttemptState.FAILED, code="HOST_MALFORMED", ttft=9000.0, tps=1.0,
            age_s=WINDOW_S + 60)

    figures = host_figures([HOST])[HOST]

    assert figures == HostFigures(ttft_p50_ms=100.0, tokens_per_s=50.0, success_rate=1.0,
                                  attempts=1)


def test_each_host_has_its_own_figures_and_an_unmeasured_one_has_none():
    attempt(ttft=100.0, tps=50.0)
    attempt(host=OTHER, ttft=400.0, tps=25.0)
    stranger = "0x" + "c" * 40

    found = host_figures([HOST, OTHER, stranger])

    assert found[HOST].ttft_p50_ms == 100.0 and found[OTHER].ttft_p50_ms == 400.0
    assert found[stranger] == HostFigures()


def test_success_rate_counts_failures_only_where_the_host_had_the_stream():
    attempt(ttft=100.0)
    attempt(ttft=100.0)
    attempt(ttft=100.0)
    attempt(AttemptState.DISPUTED)  # its result was refused: the host had the stream
    attempt(AttemptState.ABANDONED, code="HOST_MALFORMED", answered=False)  # its bytes
    # Never proven to be the host's: nothing answered, or our own refusal to connect.
    attempt(AttemptState.ABANDONED, code="HOST_UNAVAILABLE", answered=False)
    attempt(AttemptState.REFUNDED, answered=False)

    figures = host_figures([HOST])[HOST]

    assert figures.attempts == 5 and figures.success_rate == 0.6


def test_uptime_is_the_share_of_our_probes_in_the_window_the_host_answered():
    host_probes_record({HOST: 12.0, OTHER: None})
    host_probes_record({HOST: None, OTHER: None})
    host_probes_record({HOST: 11.0})
    host_probes_record({HOST: 10.0})
    HostProbe.objects.create(host_address=OTHER, ok=True, ms=1.0,
                             checked_at=timezone.now() - timedelta(seconds=WINDOW_S + 1))

    found = host_figures([HOST, OTHER])

    assert (found[HOST].uptime, found[HOST].probes) == (0.75, 4)
    assert (found[OTHER].uptime, found[OTHER].probes) == (0.0, 2)


def test_probes_older_than_the_window_are_deleted_as_new_ones_come():
    old = timezone.now() - timedelta(seconds=WINDOW_S + 1)
    HostProbe.objects.bulk_create(HostProbe(host_address=HOST, ok=True, ms=1.0, checked_at=old)
                                  for _ in range(5))

    host_probes_record({HOST: 3.0})

    assert HostProbe.objects.filter(host_address=HOST).count() == 1
