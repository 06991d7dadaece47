"""Where the consumer starts reading each partition, and the records its fetch loop drops as
read before: logged at INFO, a diagnostic for the open ``test_first_commit`` failure
(docs/ARCHITECTURE.md §15: a restarted worker with a valid position on a partition whose offset
0 it had to read again handed none of its records to the agent).

- ``install`` wraps aiokafka's ``Fetcher._update_fetch_positions`` (run when a partition has no
  position: after an assignment or a seek to the beginning or end) and logs each partition that
  got one there: ``reading <app>.erp-requests[0] from offset 0 (...)``. Once per partition
  per assignment; partitions that keep their position through a rebalance log nothing.
- ``dropped`` is called by the fetch loop (retail_sync/faust_fixes.py) for a record it drops
  because its offset is below what was read already, or because a seek moved its partition
  after it was fetched: normal after a seek, so at most one line per partition and reason every
  ``DROPPED_EVERY_S``; ``handed_over`` for the first record of a partition it hands to a stream
  after an assignment.
"""

from __future__ import annotations

import logging
import time
from typing import Any

log = logging.getLogger("retail_sync.fetch")

_MARK = "_retail_sync_fetch_log"
DROPPED_EVERY_S = 10.0
_dropped_at: dict[Any, float] = {}


def install() -> None:
    """Wrap aiokafka's ``Fetcher._update_fetch_positions`` (idempotent)."""
    from aiokafka.consumer.fetcher import Fetcher

    cls: Any = Fetcher
    if getattr(cls, _MARK, False):
        return
    original = cls._update_fetch_positions

    async def _update_fetch_positions(self: Any, assignment: Any, node_id: Any, tps: Any) -> Any:
        before = {tp: assignment.state_value(tp).has_valid_position for tp in tps}
        result = await original(self, assignment, node_id, tps)
        for tp, had in before.items():
            if not had:
                started(tp, assignment.state_value(tp))
        return result

    cls._update_fetch_positions = _update_fetch_positions
    setattr(cls, _MARK, True)


def started(tp: Any, state: Any) -> None:
    """Log where ``tp`` is read from now (``state``: aiokafka's, after the position update)."""
    if state.has_valid_position:  # else not yet: the next update logs it
        log.info("reading %s[%d] from offset %d (its committed offset; the broker's earliest "
                 "when none)", tp.topic, tp.partition, state.position)


def dropped(tp: Any, offset: int, read_to: int | None, why: str = "") -> None:
    """A record at ``offset`` of ``tp`` dropped by the fetch loop: read to ``read_to`` already,
    or (``why``) skipped because a seek moved its partition after it was fetched."""
    now = time.monotonic()
    if now - _dropped_at.get((tp, why), -DROPPED_EVERY_S) < DROPPED_EVERY_S:
        return
    _dropped_at[(tp, why)] = now
    reason = why or f"read to {read_to} already"
    log.info("offset %d of %s dropped by the fetch loop: %s (read again from the partition's "
             "position; lines for this are held for %g s)", offset, tp, reason, DROPPED_EVERY_S)


def handed_over(tp: Any, offset: int) -> None:
    """The first record of ``tp`` the fetch loop handed to a stream since it was assigned."""
    log.info("first record handed over of %s[%d]: offset %d", tp.topic, tp.partition, offset)
