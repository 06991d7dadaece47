"""A batch handler's changelog records, sent as one Kafka record batch per changelog partition
(issue 16).

Faust sends every table write's changelog record on its own: ``Table.on_key_set`` ->
``send_changelog`` -> ``Topic.send_soon`` makes a ``FutureMessage``, Faust's producer buffer
publishes it from a background task, aiokafka appends it to its record batch and hands back a
future per record. About 7 % of the worker's CPU went there at ~8 changelog records per order
(py-spy, docs/BENCHMARKS.md, fifth step).

Inside ``collecting(batch)`` (the order and stock agents' batches: ``agents/outbox.Outbox``) a
table write still goes to RocksDB at once (so reads in the batch see it) and still passes
through Faust's ``on_key_set`` (sensors, key TTLs); only its changelog record is kept here, in
write order per partition. ``ChangelogBatch.send`` builds one aiokafka record batch per changelog
partition from them and queues it with the producer (``AIOKafkaProducer.send_batch``), at the end
of the input batch, before the handler returns and Faust acknowledges the input.

What keeps the guarantees:

- **Nothing is acknowledged unsent.** The batches are in the producer's queue before the input
  is acknowledged, and Faust flushes the producer (``Producer.flush``: its buffer, then aiokafka's
  queue, which holds these batches too) before it commits any input offset; a failure to queue
  raises into ``agents/guard.finished_or_exit``, which exits before the acknowledgement. A batch
  the broker refuses later is the same loss a refused single record was to Faust (its callback
  only logged): here the worker logs and exits (``EXIT_UNFINISHED``), and the input it had not
  committed is read again.
- **Order per partition.** The records of one partition are appended in write order into one
  batch (or consecutive batches, each queued after the one before); Faust's own changelog sends
  for a partition (outside a batch handler) are queued ahead of ours when they happened first
  (``send`` flushes Faust's buffer first), so the changelog holds a key's writes in the order
  they were made, which is what recovery and the stock crash reading (``streams.rules.stock``)
  rely on.
- **Persisted offsets.** When a batch is acknowledged its last offset becomes the partition's
  persisted changelog offset (what Faust's ``_on_changelog_sent`` does per record).
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from aiokafka.errors import MessageSizeTooLargeError
from faust.exceptions import ProducerSendError
from faust.types import TP

log = logging.getLogger(__name__)

_current: ContextVar[ChangelogBatch | None] = ContextVar("retail_sync_changelog_batch",
                                                           default=None)

#: the status the worker exits with when the broker refused a changelog batch (EX_SOFTWARE, as
#: agents/guard.py ``EXIT_UNFINISHED``; not imported from there: tables do not depend on agents)
EXIT_UNSENT = 70


@dataclass
class Kept:
    """What ``Table.on_key_set`` reads of the future ``send_changelog`` returns."""

    @dataclass
    class _Message:
        partition: int

    message: _Message


#: a changelog record: key, value, headers (None: none)
Record = tuple[bytes | None, bytes | None, list[tuple[str, bytes]] | None]


@dataclass
class _Partition:
    table: Any
    topic: str
    partition: int
    records: list[Record] = field(default_factory=list)


class ChangelogBatch:
    """The changelog records of one input batch, per changelog topic and partition, in write
    order; ``send`` queues them with the producer (see the module docstring)."""

    def __init__(self) -> None:
        self._parts: dict[tuple[str, int], _Partition] = {}

    def __len__(self) -> int:
        return sum(len(p.records) for p in self._parts.values())

    def keep(self, table: Any, partition: int, key: bytes | None, value: bytes | None,
             headers: list[tuple[str, bytes]] | None = None) -> Kept:
        topic = table.changelog_topic.get_topic_name()
        part = self._parts.get((topic, partition))
        if part is None:
            part = self._parts[topic, partition] = _Partition(table, topic, partition)
        part.records.append((key, value, headers))
        return Kept(Kept._Message(partition))

    async def send(self, app: Any) -> int:
        """Queue every kept record with the producer, one record batch per partition (more when
        one would pass the producer's batch size); returns how many records. Empties the
        batch."""
        parts, self._parts = self._parts, {}
        if not parts:
            return 0
        await app.producer.buffer.flush()  # Faust's own sends made before these go first
        producer = app.producer._ensure_producer()  # noqa: SLF001 - aiokafka's, Faust-private
        sent = 0
        for part in parts.values():
            records = part.records
            while records:
                batch = producer.create_batch()
                taken = 0
                for key, value, headers in records:
                    if batch.append(key=key, value=value, timestamp=None,
                                    headers=headers or []) is None:
                        break
                    taken += 1
                _check_size(producer, records[0], taken)
                batch.close()  # no linger: the batch is complete
                future = await producer.send_batch(batch, part.topic, partition=part.partition)
                future.add_done_callback(_persisted(part.table, TP(part.topic, part.partition),
                                                    taken))
                records = records[taken:]
                sent += taken
        return sent


def _check_size(producer: Any, first: Record, taken: int) -> None:
    """A record alone larger than the producer's request size: refused as aiokafka's ``send``
    refuses it (a batch always takes its first record, whatever its size)."""
    if taken != 1:
        return
    size = len(first[0] or b"") + len(first[1] or b"")
    limit = producer._max_request_size  # noqa: SLF001 - aiokafka's setting
    if size > limit:
        raise ProducerSendError(f"a changelog record of {size} bytes is larger than the "
                                f"producer's request size ({limit})") from \
            MessageSizeTooLargeError(f"The message is {size} bytes when serialized")


def _persisted(table: Any, tp: TP, count: int) -> Any:
    def done(future: asyncio.Future[Any]) -> None:
        if future.cancelled() or future.exception() is not None:
            error = "cancelled" if future.cancelled() else repr(future.exception())
            log.critical("the broker did not take a changelog batch of %d records for %s: %s; "
                         "exiting (status %d) so the uncommitted input is read again",
                         count, tp, error, EXIT_UNSENT)
            for handler in logging.getLogger().handlers:
                handler.flush()
            os._exit(EXIT_UNSENT)
        table.data.set_persisted_offset(tp, future.result().offset + count - 1)
    return done


@contextmanager
def collecting(batch: ChangelogBatch) -> Iterator[None]:
    """Table writes in this context (this task) keep their changelog records in ``batch``."""
    token = _current.set(batch)
    try:
        yield
    finally:
        _current.reset(token)


def current() -> ChangelogBatch | None:
    return _current.get()
