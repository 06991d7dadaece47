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
- ``fetch_states``: each assigned partition and why it is not fetched now, by aiokafka's state
  and by Faust's (which partitions its fetch loop asks aiokafka for); ``not_fetching`` (``GET
  /health``) lists those not fetched, the stall watch (retail_sync/stall_watch.py) looks at the
  others.
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


def assignment_of(consumer: Any) -> Any:
    """aiokafka's assignment under Faust's ``consumer`` (read from outside the consumer's
    thread: for diagnostics and the stall watch), or None when not started or between
    assignments."""
    try:
        return consumer._thread._ensure_consumer()._subscription.subscription.assignment
    except Exception:  # noqa: BLE001 - not started, or between assignments: nothing to say
        return None


def position(consumer: Any, tp: Any) -> int | None:
    """aiokafka's position of ``tp``, or None (no assignment, or no valid position)."""
    assignment = assignment_of(consumer)
    state = assignment.state_value(tp) if assignment is not None else None
    return state.position if state is not None and state.has_valid_position else None


def fetch_states(consumer: Any, topics: set[str]) -> list[tuple[Any, str | None]]:
    """Each assigned partition of ``topics`` (sorted) and why the consumer does not fetch it
    now, None when it does. aiokafka's state: ``no position`` (waiting for its committed offset
    or a reset), ``awaiting reset`` (to the earliest or latest offset) or ``paused``; Faust's,
    which decides what its fetch loop asks aiokafka for: ``paused by Faust`` (a rebalance pauses
    every partition until its recovery resumes the streams), ``buffer full`` (its stream's queue
    is under pressure) or ``not active`` (neither, and still not asked for)."""
    assignment = assignment_of(consumer)
    if assignment is None:
        return []
    paused = set(getattr(consumer, "_paused_partitions", ()) or ())
    buffered = set(getattr(consumer, "_buffered_partitions", ()) or ())
    active = getattr(consumer, "_active_partitions", None)
    found: list[tuple[Any, str | None]] = []
    for tp in sorted(assignment.tps):
        if tp.topic not in topics:
            continue
        state = assignment.state_value(tp)
        why = ("paused" if state.paused else "awaiting reset" if state.awaiting_reset
               else None if state.has_valid_position else "no position")
        if why is None and active is not None and tp not in active:
            why = ("paused by Faust" if tp in paused else "buffer full" if tp in buffered
                   else "not active")
        found.append((tp, why))
    return found


def not_fetching(consumer: Any, topics: set[str]) -> list[dict[str, Any]]:
    """The assigned partitions of ``topics`` that the consumer does not fetch now, and why
    (``fetch_states``). For ``GET /health``: a partition that stays here is a partition nobody
    reads."""
    return [{"topic": tp.topic, "partition": tp.partition, "state": why}
            for tp, why in fetch_states(consumer, topics) if why is not None]
