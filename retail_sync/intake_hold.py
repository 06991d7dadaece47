"""Holding the fetch of some topics while a condition lasts (the order agent's intake,
agents/intake.py): the Kafka consumer is asked only for the other partitions' records.

Faust asks its consumer for records of its *active* partitions (assigned, not paused);
``install`` wraps the aiokafka driver's ``_getmany`` so the partitions of a held topic are left
out of that request while the hold's condition is true. Nothing else changes: no pause, no
seek, no offset bookkeeping, so rebalances and commits are Faust's as before; records aiokafka
already prefetched for a held partition stay in its buffer and come with a later fetch. While a
hold leaves partitions out the fetch waits at most ``RECHECK_S`` for records of the others, so
a hold that ends by itself (its orders answered elsewhere, or expired) is noticed soon. A hold
may be told what each fetch hands over of its topics (``fetched``): the intake counts those
records from then until they are handled, so the fetches made while a batch still fills see them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from typing import Any

from faust.transport.drivers import aiokafka as faust_aiokafka

RECHECK_S = 0.05
_MARK = "_retail_sync_holds"


Fetched = Callable[[int, list[int]], None]  # (partition, offsets) a fetch handed over


def hold(app: Any, topics: Iterable[str], when: Callable[[], bool],
         fetched: Fetched | None = None) -> None:
    """Fetch nothing from ``topics`` while ``when()`` is true (for ``app``'s consumer); tell
    ``fetched`` the offsets each fetch hands over of them."""
    install()
    holds: list[tuple[frozenset[str], Callable[[], bool], Fetched | None]] = (
        app.__dict__.setdefault(_MARK, []))
    holds.append((frozenset(topics), when, fetched))


def held(app: Any, partitions: Iterable[Any]) -> set[Any]:
    """The partitions among ``partitions`` whose topic is held now."""
    holds = app.__dict__.get(_MARK)
    if not holds:
        return set()
    topics = {t for names, when, _ in holds if when() for t in names}
    return {tp for tp in partitions if tp.topic in topics} if topics else set()


def _tell(app: Any, records: Any) -> None:
    """Tell each hold's ``fetched`` what ``records`` (a fetch's, by partition) hold of its
    topics."""
    for names, _, fetched in app.__dict__.get(_MARK, ()):
        if fetched is not None:
            for tp, batch in records.items():
                if tp.topic in names and batch:
                    fetched(tp.partition, [record.offset for record in batch])


def install() -> None:
    """Wrap the aiokafka driver consumer's ``_getmany`` (idempotent)."""
    cls: Any = faust_aiokafka.Consumer
    if getattr(cls, _MARK, False):
        return
    original = cls._getmany

    async def _getmany(self: Any, active_partitions: Any,
                       timeout: float) -> Any:  # noqa: ASYNC109 - Faust's signature
        if active_partitions:
            left_out = held(self.app, active_partitions)
            if left_out:
                active_partitions = set(active_partitions) - left_out
                timeout = min(timeout, RECHECK_S)
                if not active_partitions:
                    await asyncio.sleep(timeout)
                    return {}
        records = await original(self, active_partitions, timeout)
        if records:
            _tell(self.app, records)
        return records

    cls._getmany = _getmany
    setattr(cls, _MARK, True)
