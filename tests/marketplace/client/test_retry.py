import time

import pytest

from marketplace.client.errors import ClientError
from marketplace.client.retry import with_retries


async def test_a_passing_fault_is_retried_with_growing_delays():
    calls: list[float] = []

    async def flaky():
        calls.append(time.monotonic())
        if len(calls) < 3:
            raise ClientError("HOST_UNAVAILABLE", "connection refused")
        return "ok"

    assert await with_retries(flaky, first_delay_s=0.05) == "ok"
    gaps = [b - a for a, b in zip(calls, calls[1:], strict=False)]
    assert len(calls) == 3
    assert gaps[0] >= 0.05
    assert gaps[1] >= 0.1


async def test_it_gives_up_after_three_attempts():
    calls = 0

    async def down():
        nonlocal calls
        calls += 1
        raise ClientError("HOST_UNAVAILABLE", "down")

    with pytest.raises(ClientError, match="HOST_UNAVAILABLE"):
        await with_retries(down, first_delay_s=0.01)
    assert calls == 3


@pytest.mark.parametrize("code", ["INSUFFICIENT_FUNDS", "INVALID_MODEL", "QUOTA_EXCEEDED"])
async def test_it_never_retries_a_non_retryable_code(code):
    calls = 0

    async def refused():
        nonlocal calls
        calls += 1
        raise ClientError(code, "no")

    with pytest.raises(ClientError):
        await with_retries(refused, first_delay_s=0.01)
    assert calls == 1


async def test_a_programming_error_is_not_retried():
    calls = 0

    async def broken():
        nonlocal calls
        calls += 1
        raise KeyError("bug")

    with pytest.raises(KeyError):
        await with_retries(broken, first_delay_s=0.01)
    assert calls == 1
