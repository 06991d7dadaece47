"""Sends held until the end of an input batch, the small ones grouped per partition (issue 16).

A batch handler (the order, stock, ERP dispatch and warehouse agents) collects what its events
send here and sends it when the batch is done, before Faust acks the batch's input records
(``take_batches``, as Faust's ``take_events``, acks after the loop body; a plain stream acks a
record after its iteration), so a crash never acks an input whose effects were not handed to
the producer: the batch is the unit of at-least-once, as an event was. Held table writes
(``BatchWrites``, the stock agent's ``SkuWrites``) are written first, then the records go out.

The records of the hot path are grouped by topic and by the partition of their key
(``streams.topics.partition_of``) into one batch record per partition: stock commands into a
``StockBatch``, order events into ``OrderEvents``, ERP requests into an ``ErpBatch``, warehouse
commands into a ``WmsBatch``. Each is keyed by its first item's key, so it lands on the
partition of every item and its reader handles each item under its own key (a table write goes
to that key's changelog partition: the record's). A group of one is sent as the plain record.
Order is kept within a group (one partition of one topic), the only order Kafka ever kept for
these records; other records go out as they were added.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar, cast

import faust
from aiokafka.errors import MessageSizeTooLargeError
from faust.exceptions import ProducerSendError
from faust.types import EventT
from pydantic import BaseModel

from retail_sync.agents.deps import AgentDeps
from retail_sync.agents.exceptions import record_exception
from retail_sync.streams.commands import (
    MAX_BATCH_ITEMS,
    ErpBatch,
    StockBatch,
    WmsBatch,
)
from retail_sync.streams.events import OrderEvents
from retail_sync.streams.models import ExceptionKind
from retail_sync.streams.topics import Topics, partition_of
from retail_sync.tables import changelog

H = TypeVar("H")
Batcher = Callable[[list[Any]], BaseModel]


def batchers(topics: Topics) -> dict[str, Batcher]:
    """topic name -> how a group of its records becomes one batch record."""
    return {
        topics.stock_events.get_topic_name(): lambda items: StockBatch(items=items),
        topics.order_events.get_topic_name(): lambda items: OrderEvents(events=items),
        topics.erp_requests.get_topic_name(): lambda items: ErpBatch(requests=items),
        topics.wms_requests.get_topic_name(): lambda items: WmsBatch(commands=items),
    }


class Outbox:
    """What one batch sends; ``flush`` sends it (and empties the outbox). ``grouped=False``: every
    record is sent on its own, in the order added, and table writes are not held (one event
    handled outside a batch)."""

    def __init__(self, topics: Topics, partitions: int, *, grouped: bool = True) -> None:
        self.topics, self.partitions, self.grouped = topics, partitions, grouped
        self._batchers = batchers(topics) if grouped else {}
        self._plain: list[tuple[faust.TopicT, str | None, Any]] = []
        self._groups: dict[tuple[str, int], tuple[faust.TopicT, list[tuple[str, Any]]]] = {}
        self._held: dict[Any, Any] = {}  # held table writes, flushed before the sends
        #: the batch's changelog records (tables/changelog.py), sent before the other records
        self.changelog = changelog.ChangelogBatch() if grouped else None

    def add(self, topic: faust.TopicT, key: str | None, value: Any) -> None:
        """A record to send: grouped with its partition's if its topic is batched, else as it
        is, in the order added."""
        name = topic.get_topic_name()
        if key is None or name not in self._batchers:
            self._plain.append((topic, key, value))
            return
        group = (name, partition_of(key, self.partitions))
        self._groups.setdefault(group, (topic, []))[1].append((key, value))

    def table(self, table: Any) -> BatchWrites:
        """``table`` as this batch reads and writes it: a write is held and only the key's last
        value is written, at the end of the batch (``grouped=False``: written at once)."""
        return self.held(id(table), lambda: BatchWrites(table, hold=self.grouped))

    def held(self, name: Any, factory: Callable[[], H]) -> H:
        """The batch's one ``name`` writer (made by ``factory`` on first use); its ``flush()`` is
        called at the end of the batch, before anything is sent."""
        found = self._held.get(name)
        if found is None:
            found = self._held[name] = factory()
        return cast(H, found)

    def __len__(self) -> int:
        return len(self._plain) + sum(len(items) for _, items in self._groups.values())

    @contextmanager
    def collecting(self) -> Iterator[None]:
        """The batch's table writes keep their changelog records in ``changelog`` (none kept
        with ``grouped=False``: Faust sends each)."""
        if self.changelog is None:
            yield
            return
        with changelog.collecting(self.changelog):
            yield

    async def flush(self) -> int:
        """Write the held table values, queue the batch's changelog records, then send
        everything held; returns how many records went out (changelog records not counted)."""
        with self.collecting():
            for writer in self._held.values():
                writer.flush()
        self._held = {}
        if self.changelog is not None and len(self.changelog):
            await self.changelog.send(self.topics.order_events.app)
        plain, self._plain = self._plain, []
        groups, self._groups = self._groups, {}
        sent = 0
        for topic, key, value in plain:
            await topic.send(key=key, value=value)
            sent += 1
        for (name, _), (topic, items) in groups.items():
            for start in range(0, len(items), MAX_BATCH_ITEMS):
                sent += await self._send_group(name, topic, items[start:start + MAX_BATCH_ITEMS])
        return sent

    async def _send_group(self, name: str, topic: faust.TopicT,
                          chunk: list[tuple[str, Any]]) -> int:
        """One batch record of ``chunk`` (a group of one: the plain record). A batch record
        larger than the producer's request size (``producer_max_request_bytes``: a few orders
        of hundreds of lines) is sent as two, halving until each fits, in order; returns how
        many records went out."""
        value = chunk[0][1] if len(chunk) == 1 else self._batchers[name]([v for _, v in chunk])
        try:
            await topic.send(key=chunk[0][0], value=value)
            return 1
        except ProducerSendError as exc:
            if len(chunk) == 1 or not isinstance(exc.__cause__, MessageSizeTooLargeError):
                raise
        half = len(chunk) // 2
        return (await self._send_group(name, topic, chunk[:half])
                + await self._send_group(name, topic, chunk[half:]))


class BatchWrites:
    """One table as a batch handler sees it: ``get`` reads the batch's own held value first,
    ``set`` holds the value with the event it came from; ``flush`` writes each key's last value
    once, in that event's context (so to the key's own changelog partition). An order that gets
    two stock answers in one batch costs one state write instead of two. Intermediate values
    never reach the changelog; the batch is the unit of at-least-once (its input is acked after
    the flush)."""

    def __init__(self, table: Any, *, hold: bool = True) -> None:
        self.table, self.hold = table, hold
        self._held: dict[str, tuple[Any, EventT[Any] | None]] = {}

    def get(self, key: str) -> Any:
        if key in self._held:
            return self._held[key][0]
        return self.table.get(key)

    def set(self, key: str, value: Any) -> None:
        if not self.hold:
            self.table[key] = value
            return
        self._held.pop(key, None)  # re-inserted: flushed in the order of last writes
        self._held[key] = (value, faust.streams.current_event())

    def settle(self, key: str) -> None:
        """Write ``key``'s held value now (before something else touches the table's key)."""
        held = self._held.pop(key, None)
        if held is not None:
            self._write(key, *held)

    def flush(self) -> None:
        held, self._held = self._held, {}
        for key, (value, event) in held.items():
            self._write(key, value, event)

    def _write(self, key: str, value: Any, event: EventT[Any] | None) -> None:
        write_in(self.table, key, value, event)


def write_in(table: Any, key: str, value: Any, event: EventT[Any] | None) -> None:
    """``table[key] = value`` in ``event``'s context (the changelog partition of the event that
    made the value); ``event`` None: in the current context, as Faust would have it."""
    if event is None:
        table[key] = value
        return
    with in_event(event):
        table[key] = value


@contextmanager
def in_event(event: EventT[Any]) -> Iterator[None]:
    """Handle ``event`` of a ``take_events`` batch as Faust handles the event of a plain stream
    iteration: its RocksDB store reads the event's partition and a table write goes to the
    event's changelog partition. Faust keeps the current event in a context variable of
    ``faust.streams`` (private; ``Stream._set_current_event`` sets it too, but on the stream,
    which the batch's background reader shares)."""
    token = faust.streams._current_event.set(weakref.ref(event))  # noqa: SLF001
    try:
        yield
    finally:
        faust.streams._current_event.reset(token)  # noqa: SLF001


async def misplaced(ctx: AgentDeps, key: str, item: BaseModel, partition: int | None,
                    topic: faust.TopicT) -> bool:
    """Whether a batch item's key belongs to another partition than its record's (a record not
    written by our batch senders): recorded as an exception and not applied, because its table
    writes would go to the wrong changelog partition."""
    if partition is None or partition_of(key, ctx.settings.partitions) == partition:
        return False
    await record_exception(
        ctx, kind=ExceptionKind.STATE_CONFLICT, payload=item.model_dump_json(),
        exc=f"{key!r} arrived in a batch record on partition {partition}, but its key's "
            f"partition is {partition_of(key, ctx.settings.partitions)}: not applied",
        order_key=getattr(item, "order_key", None), source_key=key,
        source_topic=topic.get_topic_name())
    return True
