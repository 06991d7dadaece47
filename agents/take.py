"""``take_batches``: Faust's ``Stream.take_events`` with a wait that follows the load.

Faust's ``take_events(max_, within)`` hands over a batch when it holds ``max_`` events or when
``within`` has passed since it began waiting; its background reader, which moves events from
the stream's queue into the batch one at a time, is held while a batch is handled. On one busy
thread that reader moves what comes in ``within``: with 5 ms a batch of the order agent held
~7 records on this machine under a backlog (issue 16, ninth step), and every batch costs records
of its own (each SKU's record, one stock-events record per partition, one answer record per
order partition, ...). A longer ``within`` makes a backlog's batches larger, but every record of
a trickle would wait it at every hop.

Here the wait follows how busy the worker is (issue 16, session 28): while the worker process
uses less than ``BUSY_LOW`` of a core, a batch waits ``within`` (a trickle's records are not held
at every hop: the CPU a larger batch would save is not needed); from ``BUSY_HIGH`` on it waits
``within_max``, in between in proportion. The busy share is the process's CPU time over wall time
(``Load``: every thread of it, so the consumer's too; under the GIL one core is its ceiling),
sampled at most every ``Load.EVERY_S`` and smoothed. A busy worker thus takes larger batches,
which cost fewer records and less CPU per order, so it is less busy; an idle one holds a
record ``within`` per hop.
An earlier rule followed what the last wait gathered (4+ events doubled the next wait up to
``within_max``, 0-1 halved it): at 300 webhooks/s it kept the waits short while the worker was
95 % busy (docs/BENCHMARKS.md, session 28). A batch that fills to ``max_``
is handed over at once. Everything else is Faust's: the acknowledgements (after the batch is
handled, in order), the strict ``max_``, the reader held while a batch is handled, so rebalances
and commits see what they saw with ``take_events``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from faust.types import EventT
from mode.utils.aiter import aiter
from mode.utils.futures import notify

#: below this share of a core the worker is not busy: the shortest wait
BUSY_LOW = 0.6
#: from this share on the worker is busy: the longest wait
BUSY_HIGH = 0.9


class Load:
    """The worker process's recent CPU share: CPU seconds (every thread) per wall second,
    sampled at most every ``EVERY_S`` and smoothed (half the last sample, half before)."""

    EVERY_S = 0.25

    def __init__(self, clock: Callable[[], float] = time.monotonic,
                 cpu: Callable[[], float] = time.process_time) -> None:
        self._clock, self._cpu = clock, cpu
        self._at, self._used = clock(), cpu()
        self.share = 0.0

    def now(self) -> float:
        at = self._clock()
        if at - self._at >= self.EVERY_S:
            used = self._cpu()
            sample = min(1.0, max(0.0, (used - self._used) / (at - self._at)))
            self.share = (self.share + sample) / 2
            self._at, self._used = at, used
        return self.share


#: the process's load, shared by its batch takers
LOAD = Load()


class Wait:
    """How long the next batch waits to fill: ``within`` .. ``within_max`` by the worker's load
    (see the module docstring)."""

    def __init__(self, within: float, within_max: float, load: Load | None = None) -> None:
        self.low, self.high = within, max(within, within_max)
        self.load = load or LOAD
        self.now = within

    def next(self) -> float:
        """The wait of the next batch (and ``now``)."""
        busy = (self.load.now() - BUSY_LOW) / (BUSY_HIGH - BUSY_LOW)
        self.now = self.low + (self.high - self.low) * min(1.0, max(0.0, busy))
        return self.now


async def take_batches(stream: Any, max_: int, within: float,
                       within_max: float) -> AsyncIterator[list[EventT[Any]]]:
    """Batches of at most ``max_`` events of ``stream`` (see the module docstring)."""
    buffer: list[EventT[Any]] = []
    full = asyncio.Event()
    consumed = asyncio.Event()
    consuming: asyncio.Future[None] | None = None
    wait = Wait(within, within_max)
    enable_acks = stream.enable_acks
    channel_it = aiter(stream.channel)

    async def add_to_buffer(value: Any) -> Any:
        nonlocal consuming
        try:
            if consuming is not None:  # a batch is being handled: wait for it
                try:
                    await consuming
                finally:
                    consuming = None
            event = stream.current_event
            if event is None:
                raise RuntimeError("take_batches found current_event is None")
            buffer.append(event)
            if len(buffer) >= max_:
                full.set()
                consumed.clear()
                await stream.wait(consumed)  # strict: never more than max_ in a batch
        except asyncio.CancelledError:  # pragma: no cover
            raise
        except Exception as exc:  # noqa: BLE001 - as Faust's take_events: the stream crashes
            stream.log.exception("Error adding to take buffer: %r", exc)
            await stream.crash(exc)
        return value

    stream.enable_acks = False  # acknowledged here, after the batch is handled
    stream.add_processor(add_to_buffer)
    stream._enable_passive(channel_it)  # noqa: SLF001 - Faust's own take_events does this
    try:
        while not stream.should_stop:
            await stream.wait_for_stopped(full, timeout=wait.next())
            if not buffer:
                continue
            consuming = asyncio.get_running_loop().create_future()
            try:
                yield list(buffer)
            finally:
                events = list(buffer)
                buffer.clear()
                for event in events:
                    await stream.ack(event)
                notify(consuming)
                full.clear()
                consumed.set()
    finally:
        stream.enable_acks = enable_acks
        stream._processors.remove(add_to_buffer)  # noqa: SLF001
