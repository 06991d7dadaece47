"""``take_batches``: Faust's ``Stream.take_events`` with a wait that follows the load.

Faust's ``take_events(max_, within)`` hands over a batch when it holds ``max_`` events or when
``within`` has passed since it began waiting; its background reader, which moves events from
the stream's queue into the batch one at a time, is held while a batch is handled. On one busy
thread that reader moves what comes in ``within``: with 5 ms a batch of the order agent held
~7 records on this machine under a backlog (issue 16, ninth step), and every batch costs records
of its own (each SKU's record, one stock-events record per partition, one answer record per
order partition, ...). A longer ``within`` makes a backlog's batches larger, but every record of
a trickle would wait it at every hop.

Here the wait follows what the last one gathered: ``GROW_AT`` events or more (the input is busy)
double it, up to ``within_max``; one or none (a trickle) halve it, down to ``within``. A batch
that fills to ``max_`` is handed over at once and leaves the wait as it is. Everything else is
Faust's: the acknowledgements (after the batch is handled, in order), the strict ``max_``, the
reader held while a batch is handled, so rebalances and commits see what they saw with
``take_events``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from faust.types import EventT
from mode.utils.aiter import aiter
from mode.utils.futures import notify

#: a batch that gathered at least this many events in its wait makes the next wait longer
GROW_AT = 4


class Wait:
    """How long the next batch waits to fill: ``within`` .. ``within_max`` (see the module
    docstring)."""

    def __init__(self, within: float, within_max: float) -> None:
        self.low, self.high = within, max(within, within_max)
        self.now = within

    def after(self, events: int) -> None:
        """A batch of ``events`` ended on the wait: many came in it, so the input is busy and
        the next wait is longer; one or none came, so the next is shorter."""
        if events >= GROW_AT:
            self.now = min(self.high, self.now * 2)
        elif events <= 1:
            self.now = max(self.low, self.now / 2)


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
            await stream.wait_for_stopped(full, timeout=wait.now)
            if not buffer:
                continue
            if not full.is_set():
                wait.after(len(buffer))
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
