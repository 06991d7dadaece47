"""Retrying a call to an external system: transient errors with full-jitter backoff."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from typing import TypeVar

from connectors.errors import RetryableError
from retail_sync.settings import Settings

T = TypeVar("T")


def backoff_delay(attempt: int, settings: Settings, retry_after: float | None = None) -> float:
    """Full-jitter exponential backoff, never shorter than the service's own Retry-After."""
    cap = min(settings.erp_backoff_max_s, settings.erp_backoff_base_s * 2 ** (attempt - 1))
    delay = random.uniform(0, cap)  # noqa: S311 - jitter, not crypto
    return max(delay, retry_after or 0.0)


async def call_with_retries(call: Callable[[], Awaitable[T]], settings: Settings,
                            attempts: int | None = None) -> T:
    """``call()`` until it succeeds, raises a PermanentError, or ``attempts`` transient failures
    (default ``erp_max_attempts``) have passed; the last RetryableError is raised then."""
    limit = attempts or settings.erp_max_attempts
    for attempt in range(1, limit + 1):
        try:
            return await call()
        except RetryableError as exc:
            if attempt == limit:
                raise
            await asyncio.sleep(backoff_delay(attempt, settings, exc.retry_after))
    raise AssertionError("unreachable")  # pragma: no cover
