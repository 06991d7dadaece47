"""A circuit breaker per external system (a marketplace, the ERP, the warehouse).

After ``failures`` consecutive failed calls the breaker opens: callers wait (``wait_ready``) for
``cool_down_s`` instead of calling, so a system that is down is not hammered and the work waits
where it is — for the engine's agents, in Kafka, because an agent that waits consumes nothing
more. After the cool-down one call goes through (half-open): success closes the breaker, failure
opens it for another cool-down (doubled, up to ``max_cool_down_s``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

log = logging.getLogger(__name__)


class CircuitBreaker:
    def __init__(self, name: str, *, failures: int = 5, cool_down_s: float = 5.0,
                 max_cool_down_s: float = 120.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.name, self.failures_to_open = name, failures
        self.base_cool_down_s, self.max_cool_down_s = cool_down_s, max_cool_down_s
        self.clock = clock
        self.failures = 0
        self.opened_at: float | None = None
        self.cool_down_s = cool_down_s
        self.opened_count = 0

    @property
    def state(self) -> str:
        if self.opened_at is None:
            return "closed"
        return "open" if self.clock() < self.opened_at + self.cool_down_s else "half_open"

    def wait_time(self) -> float:
        if self.opened_at is None:
            return 0.0
        return max(0.0, self.opened_at + self.cool_down_s - self.clock())

    async def wait_ready(self) -> None:
        """Return when a call may be made (at once while closed)."""
        while (delay := self.wait_time()) > 0:
            await asyncio.sleep(delay)

    def record_success(self) -> None:
        if self.opened_at is not None:
            log.warning("circuit %s closed again", self.name)
        self.failures, self.opened_at, self.cool_down_s = 0, None, self.base_cool_down_s

    def record_failure(self) -> None:
        self.failures += 1
        if self.opened_at is not None:  # the half-open probe failed: longer this time
            self.cool_down_s = min(self.max_cool_down_s, self.cool_down_s * 2)
            self.opened_at = self.clock()
        elif self.failures >= self.failures_to_open:
            self.opened_at = self.clock()
            self.opened_count += 1
            log.warning("circuit %s open after %d failures: calls wait %.0f s", self.name,
                        self.failures, self.cool_down_s)
