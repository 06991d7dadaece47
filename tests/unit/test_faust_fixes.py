"""Faust's offset commit never passes a message still in flight (retail_sync/faust_fixes.py),
on a real Faust consumer (the aiokafka driver's, not started: the commit arithmetic only)."""

from __future__ import annotations

import faust
from faust.types import TP

from retail_sync import faust_fixes

TOPIC = TP("orders-raw", 0)


def _consumer() -> object:
    faust_fixes.install()
    app = faust.App("fix-test", broker="kafka://127.0.0.1:1", autodiscover=False)
    return app.consumer


def _acked(consumer: object, committed: int | None, offsets: list[int]) -> int | None:
    consumer._committed_offset[TOPIC] = committed  # type: ignore[attr-defined]
    consumer._acked[TOPIC] = list(offsets)  # type: ignore[attr-defined]
    consumer._acked_index[TOPIC] = set(offsets)  # type: ignore[attr-defined]
    return consumer._new_offset(TOPIC)  # type: ignore[attr-defined, no-any-return]


def test_no_commit_past_the_one_message_in_flight_at_the_committed_offset() -> None:
    consumer = _consumer()
    # 31 is the next offset to read (committed); 32.. are done, 31 is not: nothing to commit
    # (Faust alone answered 35: a crash then loses 31)
    assert _acked(consumer, 31, [32, 33, 34]) is None
    assert _acked(consumer, 31, [34, 35]) is None  # a wider gap: Faust's own guard
    assert _acked(consumer, 0, [1, 2]) is None  # committed 0 is a committed offset too


def test_a_run_from_the_committed_offset_is_committed_up_to_its_first_gap() -> None:
    consumer = _consumer()
    assert _acked(consumer, 31, [31, 32, 33]) == 34
    assert _acked(consumer, 31, [31, 32, 34, 35]) == 33
    assert _acked(consumer, 0, [0, 1]) == 2
    assert _acked(consumer, None, [5, 6]) == 7  # nothing committed yet: Faust's rule
    assert _acked(consumer, 31, []) is None


def test_install_is_idempotent() -> None:
    faust_fixes.install()
    patched = faust.transport.consumer.Consumer._new_offset
    faust_fixes.install()
    assert faust.transport.consumer.Consumer._new_offset is patched
    assert faust_fixes.first_unacked_gap([32], 31) and not faust_fixes.first_unacked_gap([31], 31)
