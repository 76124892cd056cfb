"""Per-tier request limits in Redis, shared by processes, with an in-process fallback."""

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from accounts.ratelimit import rate_limit_clear, rate_limit_hit

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def key_id():
    """A key id no other test (or earlier run) has counted against."""
    key = uuid.uuid4().int % 10**12
    yield key
    for tier in ("free", "basic", "premium"):
        rate_limit_clear(tier=tier, account_id=key)


def test_the_tests_count_in_redis(settings):
    assert settings.ACCOUNTS_RATELIMIT_STORAGE_URL.startswith("redis://")


def test_a_free_key_gets_ten_requests_a_minute_and_the_eleventh_is_refused(key_id):
    answers = [rate_limit_hit(tier="free", account_id=key_id) for _ in range(11)]
    assert [a.allowed for a in answers] == [True] * 10 + [False]
    assert [a.remaining for a in answers] == [9, 8, 7, 6, 5, 4, 3, 2, 1, 0, 0]
    refused = answers[-1]
    assert refused.limit == 10
    assert 55 <= refused.reset_s <= 60
    headers = refused.headers()
    assert headers["X-RateLimit-Limit"] == "10"
    assert headers["X-RateLimit-Remaining"] == "0"
    assert 55 <= int(headers["Retry-After"]) <= 60
    assert "Retry-After" not in answers[0].headers()


def test_a_basic_key_gets_a_hundred(key_id):
    answers = [rate_limit_hit(tier="basic", account_id=key_id) for _ in range(101)]
    assert sum(a.allowed for a in answers) == 100
    assert answers[0].limit == 100


def test_keys_and_addresses_are_counted_separately(key_id):
    for _ in range(10):
        rate_limit_hit(tier="free", account_id=key_id)
    assert not rate_limit_hit(tier="free", account_id=key_id).allowed
    address = f"203.0.113.{key_id % 250}"
    try:
        assert rate_limit_hit(tier="free", client_ip=address).allowed
        assert rate_limit_hit(tier="free", account_id=key_id + 1).allowed
    finally:
        rate_limit_clear(tier="free", client_ip=address)
        rate_limit_clear(tier="free", account_id=key_id + 1)


def test_a_request_with_neither_key_nor_address_cannot_be_limited():
    with pytest.raises(ValueError):
        rate_limit_hit(tier="free")


HIT_SCRIPT = """
import json, sys, django
django.setup()
from accounts.ratelimit import rate_limit_hit
key, count = int(sys.argv[1]), int(sys.argv[2])
sys.stdin.readline()  # start together
print(json.dumps([rate_limit_hit(tier="free", account_id=key).allowed for _ in range(count)]))
"""


def test_the_limit_holds_across_two_processes(key_id):
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings.test",
           "PYTHONPATH": str(ROOT)}
    procs = [subprocess.Popen([sys.executable, "-c", HIT_SCRIPT, str(key_id), "8"], cwd=ROOT,
                              env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              text=True) for _ in range(2)]
    for proc in procs:
        proc.stdin.write("go\n")
        proc.stdin.flush()
    results = [json.loads(proc.communicate(timeout=60)[0]) for proc in procs]
    assert all(proc.returncode == 0 for proc in procs)
    assert sum(sum(r) for r in results) == 10
    assert all(any(r) for r in results)  # both processes got some through
    assert not rate_limit_hit(tier="free", account_id=key_id).allowed


def test_without_redis_it_counts_in_process_memory(settings, key_id):
    settings.ACCOUNTS_RATELIMIT_STORAGE_URL = "memory://"
    answers = [rate_limit_hit(tier="free", account_id=key_id) for _ in range(11)]
    assert [a.allowed for a in answers] == [True] * 10 + [False]


def test_when_redis_is_unreachable_requests_go_through_and_it_is_logged(settings, caplog,
                                                                       unused_port):
    settings.ACCOUNTS_RATELIMIT_STORAGE_URL = f"redis://127.0.0.1:{unused_port}/0"
    answer = rate_limit_hit(tier="free", account_id=1)
    assert answer.allowed
    assert "rate limit store unreachable" in caplog.text


def test_a_refused_request_is_counted_for_metrics_by_its_tier(key_id):
    from observability.metrics import rate_limit_counts

    rate_limit_counts.flush()
    before = rate_limit_counts.read().get("basic", 0)
    for _ in range(101):
        rate_limit_hit(tier="basic", account_id=key_id)
    rate_limit_counts.flush()
    assert rate_limit_counts.read().get("basic", 0) == before + 1


async def test_the_event_loop_path_counts_in_the_same_window_as_the_threads(key_id):
    from accounts.ratelimit import rate_limit_clients_close, rate_limit_hit_async

    try:
        for _ in range(4):
            rate_limit_hit(tier="free", account_id=key_id)
        answers = [await rate_limit_hit_async(tier="free", account_id=key_id)
                   for _ in range(7)]
        assert [a.allowed for a in answers] == [True] * 6 + [False]
        assert [a.remaining for a in answers] == [5, 4, 3, 2, 1, 0, 0]
        assert 55 <= answers[-1].reset_s <= 60
        assert not rate_limit_hit(tier="free", account_id=key_id).allowed
    finally:
        await rate_limit_clients_close()


async def test_the_event_loop_path_lets_requests_through_when_redis_is_down(
        settings, caplog, unused_port):
    from accounts.ratelimit import rate_limit_clients_close, rate_limit_hit_async

    settings.ACCOUNTS_RATELIMIT_STORAGE_URL = f"redis://127.0.0.1:{unused_port}/0"
    try:
        answer = await rate_limit_hit_async(tier="free", account_id=1)
    finally:
        await rate_limit_clients_close()
    assert answer.allowed and answer.remaining == 10
    assert "rate limit store unreachable" in caplog.text
