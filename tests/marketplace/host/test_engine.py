"""The model thread and its batching engine, on the real bundled model."""

import threading
import time

import pytest

from marketplace.host.engine import ThreadTuner
from marketplace.host.worker import Busy, ModelWorker, Token, Work
from tests.marketplace.host.conftest import request_for


class Job:
    """A generation as the model thread sees it, recorded for the test."""

    def __init__(self, prompt: str, max_tokens: int = 24, *, key: int = 7,
                 temperature: float = 0.7):
        self.pieces: list[str] = []
        self.tokens: list[Token] = []
        self.first_at: float | None = None
        self.error: str | None = None
        self.finished = threading.Event()
        request = request_for(prompt, max_tokens=max_tokens).model_copy(
            update={"temperature": temperature})
        self.work = Work(request=request, on_token=self._token, on_done=self._done, key=key)

    def _token(self, token: Token) -> None:
        if self.first_at is None:
            self.first_at = time.monotonic()
        self.pieces.append(token.text)
        self.tokens.append(token)

    def _done(self, error: str | None) -> None:
        self.error = error
        self.finished_at = time.monotonic()
        self.finished.set()

    @property
    def text(self) -> str:
        return "".join(self.pieces)

    def wait(self, timeout: float = 60) -> "Job":
        assert self.finished.wait(timeout), "the generation never finished"
        return self


@pytest.fixture
def worker(llama):
    worker = ModelWorker(llama, capacity=8)
    yield worker
    worker.stop()


PROMPTS = ["Describe the colour blue.", "Write a haiku about rain.", "Explain what rain is.",
           "Give a tip for sleeping well."]


def test_four_generations_run_together_and_each_gets_its_own_text(worker):
    jobs = [Job(p) for p in PROMPTS]
    for job in jobs:
        worker.submit(job.work)
    for job in jobs:
        job.wait()
    assert [job.error for job in jobs] == [None] * 4
    assert all(job.text.strip() for job in jobs)
    assert len({job.text for job in jobs}) == 4
    # Interleaved, not one after another: every job started before any of them ended.
    assert max(job.first_at for job in jobs) < min(job.finished_at for job in jobs)
    assert worker.served == 4


def test_the_job_key_fixes_the_tokens_whatever_runs_beside_them(worker):
    alone = Job(PROMPTS[0], max_tokens=32, key=11)
    worker.submit(alone.work)
    alone.wait()
    together = [Job(PROMPTS[0], max_tokens=32, key=11)] + [Job(p) for p in PROMPTS[1:]]
    for job in together:
        worker.submit(job.work)
    for job in together:
        job.wait()
    other_key = Job(PROMPTS[0], max_tokens=32, key=12)
    worker.submit(other_key.work)
    other_key.wait()
    ids = [t.id for t in alone.tokens]
    assert [t.id for t in together[0].tokens] == ids
    assert [t.id for t in other_key.tokens] != ids
    # Every token carries its id and a log-probability, and the texts are the tokens'.
    assert all(t.id is not None and t.logprob <= 0 for t in alone.tokens)
    assert len(alone.tokens) == len(alone.pieces)


def test_a_generation_stops_at_its_token_limit(worker):
    job = Job("Tell a very long story about a dragon.", max_tokens=5)
    worker.submit(job.work)
    job.wait()
    assert job.error is None
    assert 1 <= len(job.pieces) <= 5


def test_a_cancelled_generation_stops_while_the_others_go_on(worker):
    long = Job("Tell a very long story about a dragon.", max_tokens=200)
    other = Job("Write a haiku about rain.")
    worker.submit(long.work)
    worker.submit(other.work)
    while len(long.pieces) < 3:
        time.sleep(0.005)
    long.work.cancel.set()
    long.wait()
    assert long.error is None and len(long.pieces) < 200
    assert other.wait().error is None and other.text.strip()


def test_a_prompt_longer_than_the_context_ends_with_an_error_and_the_model_serves_on(worker):
    huge = Job("word " * 3000)
    worker.submit(huge.work)
    assert "context" in huge.wait().error
    after = Job("Name a colour.")
    worker.submit(after.work)
    assert after.wait().error is None and after.text.strip()


def test_a_full_queue_refuses_more_work_at_once(llama):
    worker = ModelWorker(llama, capacity=1)
    jobs = []
    try:
        with pytest.raises(Busy):
            for _ in range(10):  # four slots run, one waits, the next is refused
                job = Job("Tell a very long story about a dragon.", max_tokens=300)
                worker.submit(job.work)
                jobs.append(job)
        assert 1 <= len(jobs) <= 5
    finally:
        for job in jobs:
            job.work.cancel.set()
        for job in jobs:
            job.wait()
        worker.stop()


def test_work_cancelled_before_it_starts_never_reaches_the_model(worker):
    job = Job("Name a colour.")
    job.work.cancel.set()
    worker.submit(job.work)
    assert job.wait().error == "cancelled before it started"
    assert job.pieces == []


def test_batched_steps_use_the_thread_count_measured_cheaper_and_retry_the_other():
    tuner = ThreadTuner(n_threads=1, n_threads_batch=2)
    seconds = {1: 0.006, 2: 0.004}
    chosen = []
    for _ in range(200):
        chosen.append(tuner.choose())
        tuner.learn(seconds[tuner.current])
    assert chosen[:2] == [1, 2]  # each measured once first
    assert chosen.count(2) > 190 and chosen.count(1) >= 3
    seconds = {1: 0.006, 2: 0.020}  # another process took the second core
    later = []
    for _ in range(200):
        later.append(tuner.choose())
        tuner.learn(seconds[tuner.current])
    assert later[-100:].count(1) > 95


def test_a_machine_with_one_core_has_a_single_choice():
    tuner = ThreadTuner(n_threads=1, n_threads_batch=1)
    for _ in range(100):
        assert tuner.choose() == 1
        tuner.learn(0.01)
