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

Here the run must start at the committed offset when one is known; with none known (a consumer
group's first commit on a partition, and a committed 0, which Faust's ``perform_seek`` stores as
none) at the first offset the fetch loop handed over since the partition was assigned. Before
that second rule the first records of every partition of a new consumer group had no guard: an
ERP post retrying at offset 0 of an erp-requests partition was committed past once later orders
of the partition were posted, and a worker dying then lost it for good (its state erp_pending,
nothing to post it again): tests/integration/test_first_commit.py, and test_stop_mid_load's
broker cut under load (erp-requests offset 0 holding the three orders not in the ERP).
Where Faust knows of gaps (transaction markers), Faust's own rules apply.
``install()`` patches the consumer class once per process;
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
handed over. Here every seek that moves a partition is numbered where it happens, on aiokafka's
fetcher in the consumer's thread (``Fetcher.seek_to``: ``seek``, ``seek_to_committed`` for a
committed offset above 0, Faust's ``seek_wait``; a seek that raises moves nothing), and each
fetched batch is stamped there with the last number before it (the driver thread's
``_fetch_records``, no await between): a record of a partition moved after its batch was fetched
is skipped, not marked read, and read again from where the seek points. While
Faust's ``perform_seek`` runs (the seek to committed at a rebalance's end, then Faust's read
marks set to the committed offsets) nothing is handed over.

Numbering the seek on the event loop (after ``seek_to_committed`` returned, as this fix first
did) lost records: the seek moves the partitions one by one in the consumer's thread, and a
batch fetched there from a moved partition's new position reached the fetch loop before the
seek returned; counted after the seek, the rest of it was skipped as stale though nothing would
fetch it again, and the next record read as a jump past it (SIGKILL restart: offsets 53-62 of a
stock-events partition, 21 orders left waiting for stock; failover: 13-27 of order-events).
Also: a record whose hand-over the suspension beat, or that no stream took (an agent's streams
not subscribed yet), is sought back to (``refetch``, ``unsubscribed``); the announcement of a
rebalance's seek lasts until Faust resumes its flow control, which clears every stream's queue;
and after that seek a partition with nothing committed is sought back to the first offset handed
over since it was assigned. The rest of the method is Faust 0.15's.
"""

from __future__ import annotations

import asyncio
from typing import Any, cast

from faust.transport import consumer as faust_consumer
from mode import Service

from retail_sync import fetch_log, stall_watch
from retail_sync.first_step import first_step

_MARK = "_retail_sync_commit_fix"


def first_unacked_gap(acked: list[int], start: int | None) -> bool:
    """True when the acknowledged offsets do not begin at ``start`` (the next offset to read):
    a message before them is still in flight, so nothing may be committed yet."""
    return start is not None and bool(acked) and min(acked) > start


def install() -> None:
    """Patch ``faust.transport.consumer.Consumer._new_offset``, ``_drain_messages`` and
    ``perform_seek``, aiokafka's ``Fetcher.seek_to`` and the Faust driver thread's
    ``_fetch_records`` (idempotent)."""
    cls: Any = faust_consumer.Consumer
    if getattr(cls, _MARK, False):
        return
    original = cls._new_offset

    def _new_offset(self: Any, tp: Any) -> int | None:
        acked = self._acked[tp]
        if acked:
            gaps = self._gap.get(tp) if hasattr(self._gap, "get") else None
            start = self._committed_offset[tp]
            if start is None:  # nothing committed: the first offset handed over is the start
                start = first_handed_over(self).get(tp)
            # Faust's gap intervals (transaction markers) fill holes it knows are empty: let its
            # own code merge them first when there are any
            if not gaps and first_unacked_gap(acked, start):
                return None
        return original(self, tp)  # type: ignore[no-any-return]

    cls._new_offset = _new_offset
    cls._drain_messages = _drain_messages
    cls.perform_seek = _announced_seek(cls.perform_seek)
    setattr(cls, _MARK, True)
    from aiokafka.consumer.fetcher import Fetcher
    from faust.transport.drivers import aiokafka as faust_aiokafka

    fetcher_cls: Any = Fetcher
    fetcher_cls.seek_to = _numbered_seek_to(fetcher_cls.seek_to)
    thread: Any = faust_aiokafka.AIOKafkaConsumerThread
    thread._fetch_records = _numbered_fetch(thread._fetch_records)


def first_handed_over(consumer: Any) -> dict[Any, int]:
    """Per partition, the first offset the fetch loop handed over since it was assigned to this
    worker (kept through a rebalance that gives it back: Faust's eager rebalance revokes every
    partition first; forgotten when a rebalance ends without it)."""
    found: dict[Any, int] | None = getattr(consumer, "_rs_first", None)
    if found is None:
        found = consumer._rs_first = {}
    return found


def _numbered_seek_to(method: Any) -> Any:
    """aiokafka's ``Fetcher.seek_to(tp, offset)`` (every seek of a partition: ``seek``,
    ``seek_to_committed`` for a committed offset above 0, Faust's ``seek_wait``) numbered on the
    fetcher once it moved the partition; a seek that raised moved nothing and is not counted."""
    def seek_to(self: Any, tp: Any, offset: int) -> Any:
        result = method(self, tp, offset)
        moved(self, tp)
        return result
    return seek_to


def moved(fetcher: Any, tp: Any) -> None:
    """Number a seek of ``tp`` on ``fetcher`` (aiokafka's, in the consumer's thread)."""
    number = fetcher._rs_seek_n = getattr(fetcher, "_rs_seek_n", 0) + 1
    seeks = getattr(fetcher, "_rs_seek_tp", None)
    if seeks is None:
        seeks = fetcher._rs_seek_tp = {}
    seeks[(tp.topic, tp.partition)] = number


def _numbered_fetch(method: Any) -> Any:
    """The driver thread's ``_fetch_records``: the batch it returns is stamped, in the consumer's
    thread and with no await between, with the number of the fetcher's last seek."""
    async def _fetch_records(self: Any, consumer: Any, active_partitions: Any,
                             timeout: float | None = None,  # noqa: ASYNC109 - Faust's signature
                             max_records: int | None = None) -> Any:
        records = await method(self, consumer, active_partitions, timeout=timeout,
                               max_records=max_records)
        fetched(self.consumer, consumer._fetcher)
        return records
    return _fetch_records


def fetched(consumer: Any, fetcher: Any) -> None:
    """Stamp the batch ``fetcher`` just handed ``consumer`` (Faust's) with its last seek."""
    consumer._rs_fetched = (fetcher, getattr(fetcher, "_rs_seek_n", 0))


def stale(batch: tuple[Any, int] | None, tp: Any) -> bool:
    """Whether ``tp`` was moved by a seek after ``batch`` (a stamp of ``fetched``) was fetched."""
    if batch is None:
        return False
    fetcher, number = batch
    seeks = getattr(fetcher, "_rs_seek_tp", None) or {}
    return bool(seeks.get((tp.topic, tp.partition), 0) > number)


async def unsubscribed(consumer: Any, tp: Any, offset: int) -> None:
    """A record of an agent's topic that no stream took (the topic's streams not subscribed
    yet): Faust's delivery then does nothing, and its fetch loop would mark the record read and
    its commit rule pass it. It is fetched again a little later instead. A guard found reading
    Faust; not seen firing in the runs of 2026-12-05."""
    consumer.log.warning("offset %d of %s reached no stream (its agent's streams are not "
                         "subscribed yet): fetched again", offset, tp)
    await asyncio.sleep(0.05)
    await refetch(consumer, tp, offset)


async def refetch(consumer: Any, tp: Any, offset: int) -> None:
    """Seek ``tp`` back to ``offset``, a record fetched and not handed over, so it is fetched
    again: the rebalance's own seek moves only partitions with a committed offset above 0, and
    may already be over. A partition revoked meanwhile raises: its new owner reads it from the
    committed offset."""
    try:
        await consumer.seek_wait({tp: offset})
    except Exception as exc:  # noqa: BLE001 - revoked, or the consumer is going away
        consumer.log.info("offset %d of %s not handed over and not sought back (%r): its "
                          "owner reads it from the committed offset", offset, tp, exc)


async def _from_first_handed_over(consumer: Any) -> None:
    """After the seek to committed offsets: a partition with none (Faust keeps a committed 0 as
    none), which that seek does not move, is sought back to the first offset handed over since
    it was assigned. The rebalance dropped the records its streams had not taken yet
    (``flow_control.clear()``), and nothing else would read them again; the records between are
    read twice (every agent is idempotent; this is only until a new group's first commit)."""
    first = first_handed_over(consumer)
    assigned = set(consumer.assignment())
    for tp in [tp for tp in first if tp not in assigned]:
        del first[tp]  # another worker's now: it reads from the committed offset
    again = {tp: offset for tp, offset in first.items()
             if consumer._committed_offset.get(tp) is None}
    if again:
        await consumer.seek_wait(again)


def _announced_seek(method: Any) -> Any:
    """``Consumer.perform_seek`` (the seek to committed offsets at a rebalance's end) announced
    while it runs: it moves the partitions in the consumer's thread one by one, then sets
    Faust's read marks to the committed offsets; the fetch loop hands nothing over meanwhile, so
    a record fetched from a new position is not marked read before the marks are reset (which
    would read the next one as a jump, a gap Faust may commit past). At a rebalance's end the
    announcement lasts until Faust resumes its flow control, which clears every stream's queue
    (``FlowControlEvent.resume``): a record handed over between the seek and that resume was
    dropped there, already marked read (a new group's first ERP request, never posted after a
    restart under load)."""
    async def perform_seek(self: Any) -> Any:
        seeking = asyncio.Event()
        self._rs_seeking = seeking
        deferred = False
        try:
            result = await method(self)
            stall_watch.forget(self)  # every partition is read from its committed offset
            await _from_first_handed_over(self)
            if getattr(self.app, "rebalancing", False):  # the flow control resumes next
                _end_on_resume(self.app.flow_control, self, seeking)
                deferred = True
            return result
        finally:
            if not deferred:
                _end(self, seeking)
    return perform_seek


def _end(consumer: Any, seeking: asyncio.Event) -> None:
    if getattr(consumer, "_rs_seeking", None) is seeking:
        consumer._rs_seeking = None
    seeking.set()


def _end_on_resume(flow_control: Any, consumer: Any, seeking: asyncio.Event) -> None:
    """End the announcement ``seeking`` once ``flow_control`` has resumed (and cleared)."""
    pending: list[tuple[Any, asyncio.Event]] = flow_control.__dict__.setdefault(
        "_rs_after_resume", [])
    pending.append((consumer, seeking))
    if flow_control.__dict__.get("_rs_wrapped"):
        return
    original = flow_control.resume

    def resume() -> None:
        original()
        for waiting_consumer, event in pending:
            _end(waiting_consumer, event)
        pending.clear()

    flow_control.resume = resume
    flow_control._rs_wrapped = True


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

    last_handed_over = stall_watch.handed_over(self)
    yield_every = 100
    num_since_yield = 0
    sleep = asyncio.sleep

    try:
        while not (consumer_should_stop() or fetcher_should_stop()):
            set_flag(flag_consumer_fetching)
            batch = None  # (the change) the batch's stamp: the last seek before its fetch
            first = True
            self._rs_batches = getattr(self, "_rs_batches", 0) + 1  # (ours) stall_watch's
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

                    if first:  # (the change) getmany fetches, then yields the batch's first
                        # record without an await: the stamp is this batch's
                        batch, first = getattr(self, "_rs_fetched", None), False
                    seeking = getattr(self, "_rs_seeking", None)
                    if seeking is not None and not self.suspend_flow.is_set():  # a rebalance's
                        # seek: its read marks, and the flow control's resume, come first
                        await self.wait_first(seeking, self.suspend_flow)
                    if stale(batch, tp):  # its partition was moved since it was fetched:
                        fetch_log.dropped(tp, message.offset, None, "fetched before a seek")
                        continue  # read again from where the seek points
                    offset = message.offset
                    r_offset = get_read_offset(tp)
                    if r_offset is None or offset >= r_offset:
                        gap = offset - (r_offset or 0)
                        # We have a gap in income messages
                        if gap > 1 and r_offset:
                            acks_enabled = acks_enabled_for(message.topic)
                            if acks_enabled:
                                # (ours) a gap is committed past: without transactions it is
                                # records never handed over, so it is said where it shows
                                self.log.warning("offsets %d..%d of %s fetched as a gap (read "
                                                 "to %d, then %d): they may be committed past",
                                                 r_offset + 1, offset - 1, tp, r_offset, offset)
                                await self._add_gap(tp, r_offset + 1, offset)
                        if commit_every is not None:
                            if self._n_acked >= commit_every:
                                self._n_acked = 0
                                await self.commit()
                        # --- the change: was ``await self.wait_first(callback(message), ...)``
                        # and ``set_read_offset`` whatever happened
                        # (ours) the hand-over's first step at once: a task and the race
                        # with the suspension only when it waits (retail_sync/first_step.py)
                        if (self.suspend_flow.is_set() or self._stopped.is_set()
                                or self._crashed.is_set()):
                            rest = callback(message)  # all of it raced, as Faust does
                        else:
                            rest = first_step(callback(message))
                        if rest is not None:
                            delivery = asyncio.ensure_future(rest)
                            waited = await self.wait_first(delivery, self.suspend_flow.wait())
                            if delivery not in waited.done:  # a rebalance's suspension (or
                                # the stop) beat it and cancelled it: not read, fetched again
                                if waited.stopped:
                                    break
                                await refetch(self, tp, offset)
                                continue  # the rest of tp's records are stale; the others' too

                        if stale(batch, tp):
                            fetch_log.dropped(tp, offset, None, "sought while handed over")
                            continue  # sought meanwhile: not read; read again from the seek
                        if acks_enabled_for(message.topic):  # an agent's topic
                            if not message.acked and not message.refcount:  # no stream took it
                                await unsubscribed(self, tp, offset)
                                continue
                            # (ours: the start of a partition with nothing committed)
                            if first_handed_over(self).setdefault(tp, offset) == offset:
                                fetch_log.handed_over(tp, offset)
                            last_handed_over[tp] = offset  # (ours) stall_watch's
                        # --- end of the change
                        set_read_offset(tp, offset)
                    else:  # (ours: said, at INFO, where Faust said it at its "dev" level)
                        fetch_log.dropped(tp, offset, r_offset)
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

