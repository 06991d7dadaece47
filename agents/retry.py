"""Retrying a call to an external system (``connectors.retry``, on tenacity): transient errors
(``RetryableError``) with full-jitter exponential backoff never shorter than the service's own
Retry-After, up to a limit from the settings (one policy for the ERP and the warehouse, one for
the marketplaces); a ``PermanentError`` (or anything else) is never retried; the last error is
raised as it was."""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol, TypeVar

from retail_sync.connectors.retry import on_transient

T = TypeVar("T")


class RetrySettings(Protocol):
    """The settings values the policies come from (``retail_sync.settings.Settings`` has them)."""

    @property
    def erp_max_attempts(self) -> int: ...
    @property
    def erp_backoff_base_s(self) -> float: ...
    @property
    def erp_backoff_max_s(self) -> float: ...
    @property
    def marketplace_max_attempts(self) -> int: ...
    @property
    def marketplace_backoff_base_s(self) -> float: ...
    @property
    def marketplace_backoff_max_s(self) -> float: ...


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int
    base_s: float
    max_s: float

    @classmethod
    def erp(cls, settings: RetrySettings) -> RetryPolicy:
        return cls(settings.erp_max_attempts, settings.erp_backoff_base_s, settings.erp_backoff_max_s)

    @classmethod
    def marketplace(cls, settings: RetrySettings) -> RetryPolicy:
        return cls(settings.marketplace_max_attempts, settings.marketplace_backoff_base_s,
                   settings.marketplace_backoff_max_s)

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        """Full-jitter exponential backoff, never shorter than the service's own Retry-After."""
        cap = min(self.max_s, self.base_s * 2 ** (attempt - 1))
        return max(random.uniform(0, cap), retry_after or 0.0)  # noqa: S311 - jitter, not crypto


def backoff_delay(attempt: int, settings: RetrySettings, retry_after: float | None = None,
                  policy: RetryPolicy | None = None) -> float:
    return (policy or RetryPolicy.erp(settings)).delay(attempt, retry_after)


async def retry(call: Callable[[], Awaitable[T]], policy: RetryPolicy,
                attempts: int | None = None) -> T:
    """``call()`` until it succeeds, raises a PermanentError, or ``attempts`` transient failures
    (default: the policy's) have passed; the last RetryableError is raised then."""
    async def attempt() -> T:  # a coroutine function: tenacity would not await a lambda's result
        return await call()

    return await on_transient(attempt, attempts=attempts or policy.attempts, base_s=policy.base_s,
                              max_s=policy.max_s)


async def call_with_retries(call: Callable[[], Awaitable[T]], settings: RetrySettings,
                            attempts: int | None = None, policy: RetryPolicy | None = None) -> T:
    """``retry`` with ``policy``, the ERP's from ``settings`` unless given."""
    return await retry(call, policy or RetryPolicy.erp(settings), attempts)
