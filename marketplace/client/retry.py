"""Retries for calls to hosts and the chain: 3 attempts, exponential backoff from 1 s,
never for an error that says retrying cannot help."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

from tenacity import (
    AsyncRetrying,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential,
)

T = TypeVar("T")
ATTEMPTS = 3
FIRST_DELAY_S = 1.0


def _retryable(exc: BaseException) -> bool:
    permanent = getattr(exc, "permanent", None)
    if permanent is not None:
        return not permanent
    return isinstance(exc, OSError | TimeoutError)


async def with_retries(
    call: Callable[[], Awaitable[T]], *, attempts: int = ATTEMPTS,
    first_delay_s: float = FIRST_DELAY_S,
) -> T:
    """Run `call`; on a retryable error wait 1 s, 2 s, ... and try again, up to `attempts`."""
    async for attempt in AsyncRetrying(
        stop=stop_after_attempt(attempts),
        wait=wait_exponential(multiplier=first_delay_s, min=first_delay_s, max=30),
        retry=retry_if_exception(_retryable),
        reraise=True,
    ):
        with attempt:
            return await call()
    raise AssertionError("unreachable: tenacity re-raises the last error")
