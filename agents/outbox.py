"""Sends held until the end of an input batch, the small ones grouped per partition (issue 16).

A batch handler (the order agent, the stock agent) collects what its events send here and sends
it when the batch is done, before Faust acks the batch's input records (``take_events`` acks
after the loop body), so a crash never acks an input whose effects were not handed to the
producer: the batch is the unit of at-least-once, as an event was.

Stock commands, stock answers and index entries are grouped by the partition of their key
(``streams.topics.partition_of``) into one record per partition: ``StockBatch``, ``StockAnswers``,
``IndexEntries``, keyed by the first item's key, so the record lands on the partition of every
item and the reader writes each item's table records to its key's own changelog partition. A
group of one is sent as the plain record. Order is kept within a group (one partition of one
topic), which is the only order Kafka ever kept for these records; everything else goes out in
the order it was added.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

import faust
from faust.types import EventT
from pydantic import BaseModel

from retail_sync.agents.deps import AgentDeps
from retail_sync.agents.exceptions import record_exception
from retail_sync.streams.commands import (
    MAX_BATCH_ITEMS,
    CommitStock,
    ForgetLines,
    IndexEntries,
    IndexEntry,
    ReleaseStock,
    ReserveStock,
    StockBatch,
)
from retail_sync.streams.events import StockAnswered, StockAnswers
from retail_sync.streams.models import ExceptionKind
from retail_sync.streams.topics import Topics, partition_of

StockCommand = ReserveStock | ReleaseStock | CommitStock | ForgetLines
T = TypeVar("T", bound=BaseModel)


class Outbox:
    """What one batch sends; ``flush`` sends it (and empties the outbox). ``grouped=False``: every
    record is sent on its own, in the order added (one event handled outside a batch)."""

    def __init__(self, topics: Topics, partitions: int, *, grouped: bool = True) -> None:
        self.topics, self.partitions, self.grouped = topics, partitions, grouped
        self._plain: list[tuple[faust.TopicT, str | None, Any]] = []
        self._stock: dict[int, list[StockCommand]] = {}
        self._answers: dict[int, list[StockAnswered]] = {}
        self._index: dict[int, list[IndexEntry]] = {}

    def send(self, topic: faust.TopicT, key: str | None, value: Any) -> None:
        """A record sent as it is, in the order added."""
        self._plain.append((topic, key, value))

    def stock(self, command: StockCommand) -> None:
        if not self.grouped:
            return self.send(self.topics.stock_events, command.sku, command)
        self._stock.setdefault(partition_of(command.sku, self.partitions), []).append(command)

    def answer(self, answer: StockAnswered) -> None:
        if not self.grouped:
            return self.send(self.topics.order_events, answer.order_key, answer)
        self._answers.setdefault(partition_of(answer.order_key, self.partitions), []).append(answer)

    def index(self, entry: IndexEntry) -> None:
        if not self.grouped:
            return self.send(self.topics.index_updates, entry.external_id, entry)
        self._index.setdefault(partition_of(entry.external_id, self.partitions), []).append(entry)

    def __len__(self) -> int:
        return len(self._plain) + sum(len(g) for groups in (self._stock, self._answers, self._index)
                                      for g in groups.values())

    async def flush(self) -> int:
        """Send everything held; returns how many records went out."""
        plain, self._plain = self._plain, []
        stock, self._stock = self._stock, {}
        answers, self._answers = self._answers, {}
        index, self._index = self._index, {}
        sent = 0
        for topic, key, value in plain:
            await topic.send(key=key, value=value)
            sent += 1
        sent += await _grouped(self.topics.stock_events, stock, lambda c: c.sku,
                               lambda items: StockBatch(items=list(items)))
        sent += await _grouped(self.topics.order_events, answers, lambda a: a.order_key,
                               lambda items: StockAnswers(answers=list(items)))
        sent += await _grouped(self.topics.index_updates, index, lambda e: e.external_id,
                               lambda items: IndexEntries(entries=list(items)))
        return sent


async def _grouped(topic: faust.TopicT, groups: dict[int, list[T]], key: Callable[[T], str],
                   batch: Callable[[Sequence[T]], BaseModel]) -> int:
    sent = 0
    for items in groups.values():
        for start in range(0, len(items), MAX_BATCH_ITEMS):
            chunk = items[start:start + MAX_BATCH_ITEMS]
            value = chunk[0] if len(chunk) == 1 else batch(chunk)
            await topic.send(key=key(chunk[0]), value=value)
            sent += 1
    return sent


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
