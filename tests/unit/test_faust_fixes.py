"""Faust's offset commit never passes a message still in flight (retail_sync/faust_fixes.py),
on a real Faust consumer (the aiokafka driver's, not started: the commit arithmetic only)."""

from __future__ import annotations

from typing import Any

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


class _Message:
    def __init__(self, offset: int) -> None:
        self.offset, self.topic, self.key, self.value = offset, TOPIC.topic, b"k", b"v"


async def test_a_message_the_flows_suspension_beat_is_fetched_again_not_dropped() -> None:
    """What lost one order in 240 after a SIGKILL (tests/integration/test_order_path.py): a batch
    fetched before a rebalance is iterated while the flow is suspended, and the rebalance's seek
    to the committed offset lands in the middle of it. Faust marked every message of the batch
    read without handing it over, so the records fetched again from the committed offset were
    dropped as already read: only the batch's last one was delivered."""
    import asyncio

    import mode

    consumer: Any = _consumer()
    fetcher = mode.Service()
    delivered: list[int] = []
    calls = [0]

    async def callback(message: _Message) -> None:  # hands the message to the stream
        while consumer.suspend_flow.is_set():  # the stream's buffer is full while it rebalances
            await asyncio.sleep(0.05)
        delivered.append(message.offset)

    async def getmany(timeout: float) -> Any:  # noqa: ASYNC109 - Faust's signature
        calls[0] += 1
        if calls[0] == 1:  # fetched before the rebalance, handed over while it runs
            yield TOPIC, _Message(24)
            consumer._read_offset[TOPIC] = 24  # the rebalance's seek to the committed offset
            for offset in (25, 26, 27):
                yield TOPIC, _Message(offset)
        elif calls[0] == 2:  # the rebalance is over: the flow resumes, fetched again from 24
            consumer.suspend_flow.clear()
            for offset in (24, 25, 26, 27):
                yield TOPIC, _Message(offset)
        else:
            fetcher._stopped.set()  # the fetcher stops: the loop ends

    consumer.callback, consumer.getmany = callback, getmany
    consumer._read_offset[TOPIC] = 24  # the committed offset
    consumer.suspend_flow.set()  # a rebalance has begun
    await asyncio.wait_for(faust.transport.consumer.Consumer._drain_messages(consumer, fetcher),
                           timeout=10)
    assert delivered == [24, 25, 26, 27]  # Faust alone: [27] (24, 25, 26 dropped for good)
    assert consumer._read_offset[TOPIC] == 27
