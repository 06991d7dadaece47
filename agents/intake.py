"""The order agent's intake: how many orders this worker took from orders-raw and still waits for
the stock agent's answer on (``Intake``), and how many raw records it fetched and has not yet
handled (``in_hand``: in Faust's queues or a batch still filling). While the two together reach
``limit`` the wiring stops fetching orders-raw (retail_sync/intake_hold.py): the orders already
taken get their answers, ERP requests and state writes first, so the orders in flight stay few
(their decoded states stay in the table's cache, their latency stays low) instead of a backlog
being read in whole before the first of it is finished. Counting the records in hand from the
fetch on keeps the bound when the agent's batches wait longer (a busy worker, agents/take.py):
otherwise each fetch made while a batch fills looks at a count that has not grown yet.

An order (or a fetched record) that waits longer than ``expiry_s`` no longer counts (its answer
may never come here: the stock agent's worker died): the intake is slowed, never stopped. The
orders of a partition this worker gives up in a rebalance stop counting at once (``forget``: their
answers go to the new owner), so a worker that keeps its other partitions does not hold their
intake for them; a fetched record Faust never delivers (its partition revoked meanwhile) leaves
by its age.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any


class Intake:
    """Orders waiting for their stock answer, oldest first (per worker, in memory)."""

    def __init__(self, limit: int, expiry_s: float = 10.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.limit, self.expiry_s, self._clock = limit, expiry_s, clock
        #: order key -> (when it began waiting, its partition); oldest first
        self._since: dict[str, tuple[float, int | None]] = {}
        #: (partition, offset) of a fetched raw record not yet handled -> when fetched; oldest first
        self._fetched: dict[tuple[int, int], float] = {}

    def fetched(self, partition: int, offsets: Iterable[int]) -> None:
        """A fetch handed over the raw records at ``offsets`` of ``partition``."""
        at, fetched = self._clock(), self._fetched
        for offset in offsets:
            fetched[(partition, offset)] = at

    def handled(self, partition: int, offset: int) -> None:
        """The raw record at ``offset`` of ``partition`` was handled (its order waits, if it
        does, by ``waiting``)."""
        self._fetched.pop((partition, offset), None)

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
            self._fetched = {tp: at for tp, at in self._fetched.items()
                             if tp[0] not in partitions}

    def count(self) -> int:
        """Orders waiting, those waiting longer than ``expiry_s`` dropped."""
        return self._expire(self._since, lambda entry: entry[0])

    def in_hand(self) -> int:
        """Raw records fetched and not yet handled, those older than ``expiry_s`` dropped."""
        return self._expire(self._fetched, lambda at: at)

    def _expire(self, entries: dict[Any, Any], since: Callable[[Any], float]) -> int:
        """Drop the oldest-first ``entries`` whose time (``since(value)``) is older than
        ``expiry_s``; how many are left."""
        if entries:
            oldest = self._clock() - self.expiry_s
            while entries:
                key, value = next(iter(entries.items()))
                if since(value) >= oldest:
                    break
                del entries[key]
        return len(entries)

    def full(self) -> bool:
        """True while the intake should take no more orders (``limit`` 0: never)."""
        return self.limit > 0 and self.count() + self.in_hand() >= self.limit
