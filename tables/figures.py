"""Figures over a table kept up to date by its writes, per partition, instead of a scan per read.

A figure is a sum over the table's records of each record's *contribution* (a flat
``{name: number}``; ``contribution(key, value)``). The store (tables/rocks.py) tells a
``PartitionFigures`` of every write and delete with the value before and after, in the
partition of the event being processed; the figures subtract the old contribution and add the
new one. A partition whose content changed any other way (assigned to this worker, recovered or
fed from the changelog as a standby) is *stale*: its figures are rebuilt by one scan of that
partition at the next read. A revoked partition's figures leave with it. ``total`` sums the
partitions the worker holds active, so a worker reports the partitions it owns (as a scan of
``table.items()`` did).

Contributions are integers where the figure must stay exact whatever the order of the writes
(a float sum would depend on it): a duration is summed in microseconds.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

Contribution = dict[Any, int]


class PartitionFigures:
    """The sum of ``contribution(key, value)`` over each partition's records."""

    def __init__(self, contribution: Callable[[Any, Any], Contribution]) -> None:
        self.contribution = contribution
        self.partitions: dict[int, dict[Any, int]] = {}  # only partitions known to be current
        self.scans = 0  # partition scans done (tests, and a check that reads stay cheap)

    def change(self, partition: int, key: Any, old: Any, new: Any) -> None:
        """``key`` in ``partition`` went from ``old`` to ``new`` (None: absent)."""
        sums = self.partitions.get(partition)
        if sums is None:
            return  # stale: the next read scans the partition, this write included
        if old is not None:
            for name, n in self.contribution(key, old).items():
                left = sums.get(name, 0) - n
                if left:
                    sums[name] = left
                else:
                    sums.pop(name, None)
        if new is not None:
            for name, n in self.contribution(key, new).items():
                sums[name] = sums.get(name, 0) + n

    def stale(self, partition: int) -> None:
        """``partition`` changed without ``change`` (assigned, recovered, standby, revoked)."""
        self.partitions.pop(partition, None)

    def clear(self) -> None:
        self.partitions.clear()

    def total(self, active: Iterable[int], items_of: Callable[[int], Iterable[tuple[Any, Any]]]
              ) -> dict[Any, int]:
        """The sums over the ``active`` partitions; a stale one is scanned once
        (``items_of(partition)``: its decoded (key, value) pairs)."""
        out: dict[Any, int] = {}
        for partition in active:
            sums = self.partitions.get(partition)
            if sums is None:
                sums = scan(self.contribution, items_of(partition))
                self.partitions[partition] = sums
                self.scans += 1
            for name, n in sums.items():
                out[name] = out.get(name, 0) + n
        return {name: n for name, n in out.items() if n}


def scan(contribution: Callable[[Any, Any], Contribution],
         items: Iterable[tuple[Any, Any]]) -> dict[Any, int]:
    """The sums over ``items`` (what a full scan computes)."""
    sums: dict[Any, int] = {}
    for key, value in items:
        if value is None:
            continue
        for name, n in contribution(key, value).items():
            sums[name] = sums.get(name, 0) + n
    return {name: n for name, n in sums.items() if n}
