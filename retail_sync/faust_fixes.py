"""A fix to Faust's offset commit: never past a message that is not acknowledged.

Faust commits, per partition, the end of the first run of consecutive acknowledged offsets
(``Consumer._new_offset``). Its guard against a gap at the head of that run (faust-streaming
PR #313) is off by one and skipped when nothing was committed yet:

- ``_committed_offset[tp]`` is the next offset to read (Kafka's convention: what was committed is
  ``last processed + 1``), but the guard returns early only when ``min(acked) - committed > 1``.
  With the message at ``committed`` still in flight and the next ones acknowledged (agents with
  several actors on one stream, the ERP dispatch agent's 16, acknowledge out of order), it
  commits past the one in flight; a crash before it finishes then loses it.
- ``if committed_offset:`` is false for ``None`` (nothing committed yet) and for ``0``, so a
  partition's first commit has no guard at all.

Here the run must start at the committed offset when one is known (also 0). With none known (a
consumer group's very first commit on a partition) and where Faust knows of gaps (transaction
markers), Faust's own rules apply. ``install()`` patches the consumer class once per process;
the worker calls it at start (``retail_sync/app.py``), for any broker (the defect is Faust's, not
the embedded broker's). tests/unit/test_faust_fixes.py drives a real Faust consumer.
"""

from __future__ import annotations

from typing import Any

from faust.transport import consumer as faust_consumer

_MARK = "_retail_sync_commit_fix"


def first_unacked_gap(acked: list[int], start: int | None) -> bool:
    """True when the acknowledged offsets do not begin at ``start`` (the next offset to read):
    a message before them is still in flight, so nothing may be committed yet."""
    return start is not None and bool(acked) and min(acked) > start


def install() -> None:
    """Patch ``faust.transport.consumer.Consumer._new_offset`` (idempotent)."""
    cls: Any = faust_consumer.Consumer
    if getattr(cls, _MARK, False):
        return
    original = cls._new_offset

    def _new_offset(self: Any, tp: Any) -> int | None:
        acked = self._acked[tp]
        if acked:
            gaps = self._gap.get(tp) if hasattr(self._gap, "get") else None
            start = self._committed_offset[tp]
            # Faust's gap intervals (transaction markers) fill holes it knows are empty: let its
            # own code merge them first when there are any
            if not gaps and first_unacked_gap(acked, start):
                return None
        return original(self, tp)  # type: ignore[no-any-return]

    cls._new_offset = _new_offset
    setattr(cls, _MARK, True)
