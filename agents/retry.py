"""Retrying a call to an external system: transient errors with full-jitter backoff, up to a
limit from settings (one policy for the ERP and the warehouse, one for the marketplaces)."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from retail_sync.connectors.errors import RetryableError
from retail_sync.settings import Settings

T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int
    base_s: float
    max_s: float

    @classmethod
    def erp(cls, settings: Settings) -> RetryPolicy:
        return cls(settings.erp_max_attempts, settings.erp_backoff_base_s, settings.erp_backoff_max_s)

    @classmethod
    def marketplace(cls, settings: Settings) -> RetryPolicy:
        return cls(settings.marketplace_max_attempts, settings.marketplace_backoff_base_s,
                   settings.marketplace_backoff_max_s)

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        """Full-jitter exponential backoff, never shorter than the service's own Retry-After."""
        cap = min(self.max_s, self.base_s * 2 ** (attempt - 1))
        return max(random.uniform(0, cap), retry_after or 0.0)  # noqa: S311 - jitter, not crypto


def backoff_delay(attempt: int, settings: Settings, retry_after: float | None = None,
                  policy: RetryPolicy | None = None) -> float:
    return (policy or RetryPolicy.erp(settings)).delay(attempt, retry_after)


async def retry(call: Callable[[], Awaitable[T]], policy: RetryPolicy,
                attempts: int | None = None) -> T:
    """``call()`` until it succeeds, raises a PermanentError, or ``attempts`` transient failures
    (default: the policy's) have passed; the last RetryableError is raised then."""
    limit = attempts or policy.attempts
    for attempt in range(1, limit + 1):
        try:
            return await call()
        except RetryableError as exc:
            if attempt == limit:
                raise
            await asyncio.sleep(policy.delay(attempt, exc.retry_after))
    raise AssertionError("unreachable")  # pragma: no cover


async def call_with_retries(call: Callable[[], Awaitable[T]], settings: Settings,
                            attempts: int | None = None, policy: RetryPolicy | None = None) -> T:
    """``retry`` with ``policy``, the ERP's from ``settings`` unless given."""
    return await retry(call, policy or RetryPolicy.erp(settings), attempts)
