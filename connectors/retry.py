"""The one retry helper, built on tenacity: calls to external systems tried again on transient
errors (``RetryableError``) with full-jitter exponential backoff never shorter than the service's
own Retry-After, or tried again while their answer says so (e.g. a 429 that a shared budget
already waits out)."""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable
from typing import TypeVar

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    retry_if_result,
    stop_after_attempt,
    wait_none,
)

from retail_sync.connectors.errors import RetryableError

T = TypeVar("T")


def jitter_backoff(base_s: float, max_s: float) -> Callable[[RetryCallState], float]:
    """A tenacity wait: full jitter over ``min(max_s, base_s * 2**(attempt-1))``, never shorter
    than the failed call's ``retry_after``."""

    def wait(state: RetryCallState) -> float:
        cap = min(max_s, base_s * 2 ** (state.attempt_number - 1))
        exc = state.outcome.exception() if state.outcome is not None else None
        retry_after = getattr(exc, "retry_after", None) or 0.0
        return max(random.uniform(0, cap), retry_after)  # noqa: S311 - jitter, not crypto

    return wait


async def on_transient(call: Callable[[], Awaitable[T]], *, attempts: int, base_s: float,
                       max_s: float) -> T:
    """``call()`` until it succeeds, raises anything but a RetryableError, or ``attempts``
    transient failures have passed (the last RetryableError is raised then)."""
    retrying = AsyncRetrying(stop=stop_after_attempt(attempts), wait=jitter_backoff(base_s, max_s),
                             retry=retry_if_exception_type(RetryableError), reraise=True)
    return await retrying(_awaiting(call))


def _awaiting(call: Callable[[], Awaitable[T]]) -> Callable[[], Awaitable[T]]:
    """``call`` as a coroutine function: tenacity awaits only what it recognises as one, so a
    lambda returning a coroutine would come back unawaited (the call silently skipped)."""

    async def attempt() -> T:
        return await call()

    return attempt


async def while_result(call: Callable[[], Awaitable[T]], again: Callable[[T], bool], *,
                       attempts: int) -> T:
    """``call()`` again at once (the caller's own pacing waits) while ``again(result)``, at most
    ``attempts`` calls; returns the last result, whatever it says."""
    # (the ignore: tenacity types outcome Optional; it is set once an attempt has run)
    retrying = AsyncRetrying(stop=stop_after_attempt(attempts), wait=wait_none(),
                             retry=retry_if_result(again),
                             retry_error_callback=lambda state: state.outcome.result()  # type: ignore[union-attr]
                             )
    return await retrying(_awaiting(call))
