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

A second fix, to Faust's delivery (``Consumer._drain_messages``, ``_drain_messages`` below). The
fetch loop marks each fetched message read (``_read_offset``) once it has tried to hand it to the
streams, and drops a later record at or below that mark as already read; a jump between the mark
and a record becomes a *gap* (offsets Faust may commit past, meant for transaction markers). A
rebalance seeks every partition to its committed offset and resets the marks, but a batch fetched
before the seek went on being handed over after it. Instrumented, one lost order after a SIGKILL
and restart (tests/integration/test_order_path.py, about one run in three that day) was: the new
worker fetched offsets 12.. of a partition before its first seek to the committed 9; the seek
landed while that batch was handed over; the next record (16) read as a jump from 9, so 10-15
became a gap, and the batch marked everything up to 55 read; the records fetched again from 9 were
dropped as read, and the commit passed 15, which the rebalance had discarded unprocessed: lost for
good. Also, a message the flow's suspension (a rebalance) beat was marked read without being
handed over. Here every seek that moved partitions is numbered (``seek`` moves the one it is
given; ``seek_to_committed``, what ``perform_seek`` does, moves those aiokafka moves: a committed
offset above 0; a seek that fails moves nothing): a record fetched before its partition was last
moved is skipped, not marked read, and read again from where the seek points; a message the
suspension beat is not marked read and ends its batch (the rebalance ends with a seek). The rest
of the method is Faust 0.15's.
"""

from __future__ import annotations

import asyncio
from typing import Any, cast

from faust.transport import consumer as faust_consumer
from mode import Service

_MARK = "_retail_sync_commit_fix"


def first_unacked_gap(acked: list[int], start: int | None) -> bool:
    """True when the acknowledged offsets do not begin at ``start`` (the next offset to read):
    a message before them is still in flight, so nothing may be committed yet."""
    return start is not None and bool(acked) and min(acked) > start


def install() -> None:
    """Patch ``faust.transport.consumer.Consumer._new_offset`` and ``_drain_messages``
    (idempotent)."""
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
    cls._drain_messages = _drain_messages
    cls.seek = _counting_seek(cls.seek)
    setattr(cls, _MARK, True)
    from faust.transport.drivers import aiokafka as faust_aiokafka

    driver: Any = faust_aiokafka.Consumer
    driver.seek_to_committed = _counting_seek_to_committed(driver.seek_to_committed)


def _counting_seek(method: Any) -> Any:
    """``Consumer.seek(partition, offset)`` numbered once it moved the partition: a record of it
    fetched before is stale. A seek that fails (the broker away) moved nothing and is not
    counted: the records fetched before it are still the next ones."""
    async def seek(self: Any, partition: Any, offset: int) -> Any:
        result = await method(self, partition, offset)
        _moved(self, [partition])
        return result
    return seek


def _counting_seek_to_committed(method: Any) -> Any:
    """The driver's ``seek_to_committed`` (what ``perform_seek`` does at the end of a rebalance)
    numbered for the partitions it moved: aiokafka moves only those with a committed offset
    above 0; the others keep their position, and their records fetched before are not stale."""
    async def seek_to_committed(self: Any) -> Any:
        committed = await method(self)
        _moved(self, [tp for tp, offset in committed.items() if offset and offset > 0])
        return committed
    return seek_to_committed


def _moved(consumer: Any, tps: list[Any]) -> None:
    number = consumer._rs_seek_n = getattr(consumer, "_rs_seek_n", 0) + 1
    by_tp = _seeks_by_tp(consumer)
    for tp in tps:
        by_tp[faust_consumer.ensure_TP(tp)] = number


def _seeks_by_tp(consumer: Any) -> dict[Any, int]:
    found: dict[Any, int] | None = getattr(consumer, "_rs_seek_tp", None)
    if found is None:
        found = consumer._rs_seek_tp = {}
    return found


def stale(consumer: Any, tp: Any, fetched_after: int) -> bool:
    """Whether ``tp`` was moved by a seek numbered after ``fetched_after``, the last one before
    its record was fetched."""
    return _seeks_by_tp(consumer).get(tp, 0) > fetched_after


async def _drain_messages(self: Any, fetcher: Any) -> None:  # noqa: C901 - Faust's, one change
    """Faust 0.15's ``Consumer._drain_messages`` with one change (marked): a record fetched before
    a seek of its partition is skipped, not marked read, and a message the flow's suspension beat
    is not marked read and ends its batch (module docstring)."""
    callback = self.callback
    getmany = self.getmany
    consumer_should_stop = cast(Service, self)._stopped.is_set
    fetcher_should_stop = cast(Service, fetcher)._stopped.is_set

    get_read_offset = self._read_offset.__getitem__
    set_read_offset = self._read_offset.__setitem__
    flag_consumer_fetching = faust_consumer.CONSUMER_FETCHING
    set_flag = self.diag.set_flag
    unset_flag = self.diag.unset_flag
    commit_every = self._commit_every
    acks_enabled_for = self.app.topics.acks_enabled_for

    yield_every = 100
    num_since_yield = 0
    sleep = asyncio.sleep

    try:
        while not (consumer_should_stop() or fetcher_should_stop()):
            set_flag(flag_consumer_fetching)
            fetched_after = None  # (the change) the last seek before this batch was fetched
            ait = getmany(timeout=1.0)

            # Sleeping because sometimes getmany is called in a loop
            # never releasing to the event loop
            await self.sleep(0)
            if not self.should_stop:
                async for tp, message in ait:
                    num_since_yield += 1
                    if num_since_yield > yield_every:
                        await sleep(0)
                        num_since_yield = 0

                    if fetched_after is None:  # (the change) getmany fetches, then yields the
                        # batch's first record without an await: no seek came between
                        fetched_after = getattr(self, "_rs_seek_n", 0)
                    elif stale(self, tp, fetched_after):  # its partition was moved since it
                        continue  # was fetched: read again from where the seek points
                    offset = message.offset
                    r_offset = get_read_offset(tp)
                    if r_offset is None or offset >= r_offset:
                        gap = offset - (r_offset or 0)
                        # We have a gap in income messages
                        if gap > 1 and r_offset:
                            acks_enabled = acks_enabled_for(message.topic)
                            if acks_enabled:
                                await self._add_gap(tp, r_offset + 1, offset)
                        if commit_every is not None:
                            if self._n_acked >= commit_every:
                                self._n_acked = 0
                                await self.commit()
                        # --- the change: was ``await self.wait_first(callback(message), ...)``
                        # and ``set_read_offset`` whatever happened
                        delivery = callback(message)
                        waited = await self.wait_first(delivery, self.suspend_flow.wait())
                        if delivery not in waited.done:
                            break  # not handed over: not read; the rebalance ends with a seek
                        if stale(self, tp, fetched_after):
                            continue  # sought meanwhile: not read; read again from the seek
                        # --- end of the change
                        set_read_offset(tp, offset)
                    else:
                        self.log.dev(
                            "DROPPED MESSAGE ROFF %r: k=%r v=%r",
                            offset,
                            message.key,
                            message.value,
                        )
                unset_flag(flag_consumer_fetching)

    except self.consumer_stopped_errors:
        if self.transport.app.should_stop:
            # we're already stopping so ignore
            self.log.info("Broker stopped consumer, shutting down...")
            return
        raise
    except asyncio.CancelledError:
        if self.transport.app.should_stop:
            # we're already stopping so ignore
            self.log.info("Consumer shutting down for user cancel.")
            return
        raise
    except Exception as exc:
        self.log.exception("Drain messages raised: %r", exc)
        raise
    finally:
        unset_flag(flag_consumer_fetching)
