"""What the broker says a bench run did: offsets, lag, records and bytes per topic.

Pure arithmetic first (unit-tested in tests/unit/test_bench_offsets.py), then the reads from the
broker it works on. Offsets are dicts ``{(topic, partition): offset}``.

- produced on a partition  = end offset after - end offset before (every record written to it)
- consumed on a partition  = committed offset after - committed offset before, for the app's
  consumer group (records the group read and committed; a partition without a commit counts from
  0: nothing committed yet means nothing read yet)
- lag on a partition       = end offset - committed offset (never below 0)

The embedded broker (Tansu) answers ListOffsets(latest) with the base offset of the last batch + 1
(retail_sync/tansu_compat.py), which is *below* the true end: a cheap check against it can pass
too early, so a lag of zero is confirmed with the true end offsets (a fetch's high watermark).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from retail_sync.tansu_compat import true_end_offsets

TP = tuple[str, int]
Offsets = Mapping[TP, int]


def deltas(before: Offsets, after: Offsets) -> dict[TP, int]:
    """Per partition ``after - before`` (a partition missing before counts from 0; a committed
    offset of -1, "none", counts as 0)."""
    return {tp: max(0, end) - max(0, before.get(tp, 0)) for tp, end in after.items()}


def lag(ends: Offsets, committed: Offsets, partitions: Iterable[TP] | None = None) -> dict[TP, int]:
    """Per partition ``end - committed`` (0 when ahead; no commit yet = the whole partition)."""
    tps = list(partitions) if partitions is not None else list(ends)
    return {tp: max(0, ends.get(tp, 0) - max(0, committed.get(tp, 0))) for tp in tps}


def per_topic(values: Mapping[TP, int | float]) -> dict[str, int | float]:
    """Partition figures summed per topic."""
    out: dict[str, int | float] = {}
    for (topic, _), value in values.items():
        out[topic] = out.get(topic, 0) + value
    return out


def short_name(topic: str, app_id: str) -> str:
    """``<app>.order-events`` -> ``order-events``; ``<app>-stock-changelog`` -> ``stock-changelog``;
    anything else unchanged."""
    for sep in (".", "-"):
        if topic.startswith(app_id + sep):
            return topic[len(app_id) + 1:]
    return topic


def is_changelog(topic: str) -> bool:
    return topic.endswith("-changelog")


@dataclass
class TopicFigures:
    """One topic's figures over a run, per order where ``orders`` is given."""

    topic: str
    produced: int = 0
    consumed: int = 0
    produced_bytes: int = 0

    def per_order(self, orders: int) -> dict[str, float]:
        n = max(1, orders)
        return {"produced": self.produced / n, "consumed": self.consumed / n,
                "bytes_produced": self.produced_bytes / n}


@dataclass
class RunFigures:
    """Record operations of a run: per topic, and the totals the headline is made of."""

    orders: int
    topics: dict[str, TopicFigures] = field(default_factory=dict)

    @property
    def produced(self) -> int:
        return sum(t.produced for t in self.topics.values())

    @property
    def consumed(self) -> int:
        return sum(t.consumed for t in self.topics.values())

    @property
    def produced_bytes(self) -> int:
        return sum(t.produced_bytes for t in self.topics.values())

    @property
    def ops_per_order(self) -> float:
        """Record operations per order: records produced + records consumed, over every topic."""
        return (self.produced + self.consumed) / max(1, self.orders)


def run_figures(orders: int, app_id: str, ends_before: Offsets, ends_after: Offsets,
                committed_before: Offsets, committed_after: Offsets,
                bytes_by_tp: Mapping[TP, int] | None = None) -> RunFigures:
    """Everything per topic (short names) from the four offset snapshots and the bytes read."""
    figures = RunFigures(orders)
    produced = per_topic(deltas(ends_before, ends_after))
    consumed = per_topic(deltas(committed_before, committed_after))
    sizes = per_topic(bytes_by_tp or {})
    for topic in sorted(set(produced) | set(consumed)):
        name = short_name(topic, app_id)
        figures.topics[name] = TopicFigures(name, int(produced.get(topic, 0)),
                                            int(consumed.get(topic, 0)), int(sizes.get(topic, 0)))
    return figures


# --- reads from the broker -------------------------------------------------------------------


class OffsetReader:
    """End and committed offsets of an app's topics, read from the broker (one admin client and
    one consumer kept open for the run)."""

    def __init__(self, bootstrap: str, app_id: str, tansu: bool) -> None:
        self.bootstrap = bootstrap
        self.app_id = app_id
        self.group = app_id  # Faust's consumer group is the app id
        self.tansu = tansu
        self.admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        self.consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
        self.partitions: list[TP] = []

    async def start(self) -> OffsetReader:
        await self.admin.start()
        await self.consumer.start()
        return self

    async def close(self) -> None:
        await self.consumer.stop()
        await self.admin.close()

    async def discover(self) -> list[TP]:
        """Every partition of every topic of the app (``<app>.*`` and ``<app>-*``)."""
        names = [t for t in await self.admin.list_topics()
                 if t.startswith((self.app_id + ".", self.app_id + "-"))]
        await self.consumer._client.force_metadata_update()  # noqa: SLF001 - no public call
        out: list[TP] = []
        for name in sorted(names):
            self.consumer._client.add_topic(name)  # noqa: SLF001
        await self.consumer._client.force_metadata_update()  # noqa: SLF001
        for name in sorted(names):
            for p in sorted(self.consumer.partitions_for_topic(name) or ()):
                out.append((name, p))
        self.partitions = out
        return out

    async def ends(self, true: bool = True, partitions: Iterable[TP] | None = None) -> dict[TP, int]:
        """End offsets; ``true=False`` takes the broker's ListOffsets answer as it is (cheap; on
        Tansu it can be below the true end)."""
        tps = [TopicPartition(t, p) for t, p in (partitions or self.partitions)]
        if not tps:
            return {}
        answer = await self.consumer.end_offsets(tps)
        if true and self.tansu:
            answer = await true_end_offsets(self.bootstrap, answer)
        return {(tp.topic, tp.partition): int(end) for tp, end in answer.items()}

    async def committed(self, partitions: Iterable[TP] | None = None) -> dict[TP, int]:
        """The group's committed offsets (-1 where it has none). Partitions are named: Tansu
        does not answer the "every partition of the group" form of OffsetFetch."""
        tps = [TopicPartition(t, p) for t, p in (partitions or self.partitions)]
        if not tps:
            return {}
        answer = await self.admin.list_consumer_group_offsets(self.group, partitions=tps)
        return {(tp.topic, tp.partition): int(meta.offset) for tp, meta in answer.items()}

    async def lag(self, consumed: Iterable[TP], exact: bool = True) -> dict[TP, int]:
        """Lag on ``consumed`` partitions: against the true end offsets, or with ``exact=False``
        against the broker's ListOffsets answer as it is (cheap; on Tansu it can read low, never
        high: a non-zero cheap lag is a real one, a zero needs the exact check)."""
        consumed = list(consumed)
        committed = await self.committed(consumed)
        return lag(await self.ends(true=exact, partitions=consumed), committed, consumed)


async def read_range(bootstrap: str, start: Offsets, end: Offsets,
                     timeout_s: float = 60.0) -> tuple[dict[TP, int], dict[TP, int], dict[TP, float]]:
    """Read every record in ``[start, end)`` per partition: (bytes of key + value, records read,
    newest record timestamp in seconds), each per partition (no timestamp for a partition without
    records). Records compacted away (Apache Kafka, compacted changelogs) are not there to count."""
    todo = {tp: (max(0, start.get(tp, 0)), stop) for tp, stop in end.items()
            if stop > max(0, start.get(tp, 0))}
    sizes = {tp: 0 for tp in end}
    counts = {tp: 0 for tp in end}
    latest: dict[TP, float] = {}
    if not todo:
        return sizes, counts, latest
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                                max_partition_fetch_bytes=4 * 1024 * 1024)
    try:
        await consumer.start()
        tps = {TopicPartition(t, p): (t, p) for t, p in todo}
        consumer.assign(list(tps))
        for tp, key in tps.items():
            consumer.seek(tp, todo[key][0])
        pending = set(tps)
        deadline = time.monotonic() + timeout_s
        while pending and time.monotonic() < deadline:
            batch = await consumer.getmany(*pending, timeout_ms=500)
            for tp, records in batch.items():
                key = tps[tp]
                stop = todo[key][1]
                for record in records:
                    if record.offset >= stop:
                        break
                    sizes[key] += len(record.key or b"") + len(record.value or b"")
                    counts[key] += 1
                    latest[key] = max(latest.get(key, 0.0), record.timestamp / 1000)
            for tp in list(pending):
                if await consumer.position(tp) >= todo[tps[tp]][1]:
                    pending.discard(tp)
        return sizes, counts, latest
    finally:
        await consumer.stop()
