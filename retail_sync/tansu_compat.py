"""Work-around for one difference of the embedded broker (Tansu) from Apache Kafka.

Tansu answers ListOffsets(latest) with *the base offset of the last record batch + 1* instead of
the offset after the last record: after a batch of three records at offsets 3..5 it says 4, while
its fetch responses report the right high watermark (6). Faust's table recovery reads end offsets
through ListOffsets, so a worker restarted after writing a multi-record changelog batch stops
with ConsistencyError ("persisted offset is higher than the last offset"), and a worker taking a
partition over would stop recovery before the end of the last batch.

`true_end_offsets` asks ListOffsets, then fetches the last batch and takes the fetch response's
high watermark. `install()` makes Faust's consumer use it; it is switched on only when we run
the embedded broker (setting ``tansu_compat``), never against Apache Kafka.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition


async def true_end_offsets(
    bootstrap: str | list[str], ends: Mapping[Any, int], timeout_s: float = 5.0
) -> dict[Any, int]:
    """Correct ListOffsets answers (``ends``) with the high watermark of a fetch of the last batch."""
    result = dict(ends)
    behind = {tp: end for tp, end in ends.items() if end}
    if not behind:
        return result
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        tps = [TopicPartition(tp.topic, tp.partition) for tp in behind]
        consumer.assign(tps)
        for tp, end in zip(tps, behind.values(), strict=True):
            consumer.seek(tp, end - 1)
        pending = dict(zip(tps, behind, strict=True))
        deadline = time.monotonic() + timeout_s
        while pending and time.monotonic() < deadline:
            await consumer.getmany(*pending, timeout_ms=200)
            for tp in list(pending):
                highwater = consumer.highwater(tp)
                if highwater is not None:
                    original = pending.pop(tp)
                    result[original] = max(result[original], highwater)
        return result
    finally:
        await consumer.stop()


def install() -> None:
    """Patch Faust's aiokafka consumer so table recovery sees true end offsets (idempotent)."""
    from faust.transport.drivers import aiokafka as driver

    thread_cls = driver.AIOKafkaConsumerThread
    if getattr(thread_cls, "_retail_sync_tansu_compat", False):
        return
    original = thread_cls._highwaters

    async def _highwaters(self: Any, partitions: Iterable[Any]) -> Mapping[Any, int]:
        ends = await original(self, partitions)
        client = self._ensure_consumer()._client
        return await true_end_offsets(client._bootstrap_servers, ends)

    thread_cls._highwaters = _highwaters
    thread_cls._retail_sync_tansu_compat = True
