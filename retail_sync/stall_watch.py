"""Partitions nobody reads: found, said and read again (a safety net under the fetch loop).

A partition whose records wait on the broker while the worker hands none of them to its agent is
an order nobody syncs, and nothing else notices: the consumer's lag shows it only as "behind",
the commit never passes it, and a restart is what would read it again. The open failure of
tests/integration/test_first_commit.py was that: a restarted worker with a valid position on
erp-requests[0], not paused, fetched, no record dropped that the fetch loop saw, and none handed
over in 45 s (docs/ARCHITECTURE.md §15); its cause is not known.

Every ``CHECK_S`` the watch looks at each input partition assigned here that Faust's fetch loop
asks records for (active, not paused, its stream's buffer not full, not held by the intake:
retail_sync/intake_hold.py), with a position in aiokafka. One whose last record handed over
(``handed_over``, kept by the fetch loop in retail_sync/faust_fixes.py) has not changed for
``STALL_S`` while the fetch loop went on fetching is a candidate; it is *stalled* when the broker
holds records past what it should read next: the offset after its last record handed over, else
its committed offset, else (nothing committed) the broker's first. A stalled partition is said
(WARNING, ``retail_sync_partition_stalls_total``) and sought to that offset, so it is fetched
again from there (records between are read twice at most: every agent is idempotent).

Nothing is judged while a rebalance runs, while the flow is stopped, while the broker is
unreachable (retail_sync/broker_watch.py: nothing can be fetched, and quiet time starts again
once it answers), or while the fetch loop is blocked handing a record over (a full stream queue,
the flow control): then no partition moves and none is at fault. A rebalance's seek
(``forget``) starts every partition afresh.

``RETAIL_SYNC_TEST_DROP_FETCHED=<topic suffix>:<partition>:<count>`` (a test fault, nothing is
installed without it) makes the worker's fetch loop drop that many records of that partition
after aiokafka returned them: the stall the watch is for, on purpose
(tests/integration/test_stall_watch.py).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterable
from typing import Any

from retail_sync import broker_watch, fetch_log, intake_hold

log = logging.getLogger("retail_sync.fetch")

CHECK_S = 5.0
STALL_S = 20.0
ENV_DROP = "RETAIL_SYNC_TEST_DROP_FETCHED"


def handed_over(consumer: Any) -> dict[Any, int]:
    """Per partition of an agent's topic, the last offset the fetch loop handed over since the
    last rebalance's seek (faust_fixes' fetch loop writes it)."""
    found: dict[Any, int] | None = getattr(consumer, "_rs_last", None)
    if found is None:
        found = consumer._rs_last = {}
    return found


def forget(consumer: Any) -> None:
    """A rebalance's seek moved every partition to its committed offset: start afresh."""
    handed_over(consumer).clear()


class StallWatch:
    """Finds stalled partitions of ``topics`` on ``consumer`` (Faust's) and reads them again."""

    def __init__(self, app: Any, topics: Callable[[], set[str]], *, stall_s: float = STALL_S,
                 clock: Callable[[], float] = time.monotonic,
                 on_stall: Callable[[Any], None] = lambda tp: None) -> None:
        self.app, self.topics, self.stall_s, self.clock = app, topics, stall_s, clock
        self.on_stall = on_stall
        self._seen: dict[Any, int | None] = {}  # last handed over, at the last look
        self._quiet_since: dict[Any, float] = {}
        self._batches: int | None = None  # the fetch loop's fetches, at the last look

    async def check(self) -> list[tuple[Any, int]]:
        """One look; returns the partitions found stalled and the offset each was sought to."""
        consumer = self.app.consumer
        batches = getattr(consumer, "_rs_batches", 0)
        alive, self._batches = self._batches is not None and batches != self._batches, batches
        watch = broker_watch.watch_of(self.app)
        broker_down = watch is not None and watch.reachable is False
        if (getattr(self.app, "rebalancing", False) or not consumer.flow_active or not alive
                or broker_down):
            self._seen.clear()  # nothing is judged now, and quiet time starts again after
            self._quiet_since.clear()
            return []
        now, last = self.clock(), handed_over(consumer)
        quiet = []
        for tp in self._fetched(consumer):
            offset = last.get(tp)
            if tp not in self._seen or self._seen[tp] != offset:
                self._seen[tp], self._quiet_since[tp] = offset, now
            elif now - self._quiet_since[tp] >= self.stall_s:
                quiet.append(tp)
        return await self._read_again(consumer, quiet, last) if quiet else []

    def _fetched(self, consumer: Any) -> Iterable[Any]:
        """The input partitions the fetch loop asks records for, with a position in aiokafka,
        and not held by the intake."""
        tps = [tp for tp, why in fetch_log.fetch_states(consumer, self.topics()) if why is None]
        held = intake_hold.held(self.app, tps)
        return [tp for tp in tps if tp not in held]

    async def _read_again(self, consumer: Any, quiet: list[Any],
                          last: dict[Any, int]) -> list[tuple[Any, int]]:
        ends = await consumer.highwaters(*quiet)
        start: dict[Any, int | None] = {
            tp: last[tp] + 1 if tp in last else consumer._committed_offset.get(tp)
            for tp in quiet}
        unknown = [tp for tp, offset in start.items() if offset is None]
        if unknown:  # nothing committed (Faust keeps a committed 0 as none): the broker's first
            start.update(await consumer.earliest_offsets(*unknown))
        stalled = {tp: offset for tp, offset in start.items()
                   if offset is not None and (ends.get(tp) or 0) > offset}
        now = self.clock()
        for tp, offset in stalled.items():
            log.warning("%s[%d] stalled: records %d..%d wait on the broker and none was handed "
                        "over for %.0f s (position %s): read again from %d", tp.topic,
                        tp.partition, offset, ends[tp] - 1, now - self._quiet_since[tp],
                        fetch_log.position(consumer, tp), offset)
            self.on_stall(tp)
            self._quiet_since[tp] = now
        if stalled:
            await consumer.seek_wait(stalled)
        return list(stalled.items())


def register(ctx: Any) -> None:
    """The watch on this worker's input topics, every ``CHECK_S``."""
    watch = StallWatch(ctx.app, lambda: {t.get_topic_name() for t in ctx.topics.all()},
                       on_stall=lambda tp: ctx.metrics.partition_stalls.labels(
                           topic=tp.topic).inc())

    @ctx.app.timer(interval=CHECK_S)  # type: ignore[untyped-decorator]  # Faust: @no_type_check
    async def _stall_watch() -> None:
        try:
            await watch.check()
        except Exception as exc:  # noqa: BLE001 - a timer that raises stops the worker
            log.warning("stall watch: %r", exc)


def inject_drops() -> None:
    """With ``RETAIL_SYNC_TEST_DROP_FETCHED`` set: Faust's ``Consumer.getmany`` drops the first
    ``count`` records of the partition it names, fetched and never handed over (a test fault)."""
    spec = os.environ.get(ENV_DROP)
    if not spec:
        return
    from faust.transport import consumer as faust_consumer

    suffix, partition, count = spec.rsplit(":", 2)
    left = [int(count)]
    cls: Any = faust_consumer.Consumer
    original = cls.getmany

    async def getmany(self: Any, timeout: float) -> Any:  # noqa: ASYNC109 - Faust's signature
        async for tp, message in original(self, timeout):
            if left[0] > 0 and tp.topic.endswith(suffix) and tp.partition == int(partition):
                left[0] -= 1
                log.warning("test fault (%s): offset %d of %s fetched and dropped", ENV_DROP,
                            message.offset, tp)
                continue
            yield tp, message

    cls.getmany = getmany
