"""The order agent's intake: how many orders this worker took from orders-raw and still waits for
the stock agent's answer on (``Intake``). While they reach ``limit`` the wiring stops fetching
orders-raw (retail_sync/intake_hold.py): the orders already taken get their answers, ERP requests
and state writes first, so the orders in flight stay few (their decoded states stay in the
table's cache, their latency stays low) instead of a backlog being read in whole before the first
of it is finished.

An order that waits longer than ``expiry_s`` no longer counts (its answer may never come here: the
stock agent's worker died): the intake is slowed, never stopped. The orders of a partition this
worker gives up in a rebalance stop counting at once (``forget``: their answers go to the new
owner), so a worker that keeps its other partitions does not hold their intake for them.
"""

from __future__ import annotations

import time
from collections.abc import Callable


class Intake:
    """Orders waiting for their stock answer, oldest first (per worker, in memory)."""

    def __init__(self, limit: int, expiry_s: float = 10.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.limit, self.expiry_s, self._clock = limit, expiry_s, clock
        #: order key -> (when it began waiting, its partition); oldest first
        self._since: dict[str, tuple[float, int | None]] = {}

    def waiting(self, key: str, partition: int | None = None) -> None:
        """``key`` (on ``partition`` of the order agent's input) asked the stock agent and waits
        for its answer."""
        if key not in self._since:
            self._since[key] = (self._clock(), partition)

    def answered(self, key: str) -> None:
        """``key`` waits no more (answered, cancelled, gone)."""
        self._since.pop(key, None)

    def forget(self, partitions: set[int]) -> None:
        """The orders of ``partitions`` (given up in a rebalance) wait here no more."""
        if partitions:
            self._since = {key: (at, p) for key, (at, p) in self._since.items()
                           if p not in partitions}

    def count(self) -> int:
        """Orders waiting, those waiting longer than ``expiry_s`` dropped."""
        since = self._since
        if since:
            oldest = self._clock() - self.expiry_s
            while since:
                key, (at, _) = next(iter(since.items()))
                if at >= oldest:
                    break
                del since[key]
        return len(since)

    def full(self) -> bool:
        """True while the intake should take no more orders (``limit`` 0: never)."""
        return self.limit > 0 and self.count() >= self.limit
