"""Work-around for one difference of the embedded broker (Tansu) from Apache Kafka.

Tansu answers ListOffsets(latest) with *the base offset of the last record batch + 1* instead of
the offset after the last record: after a batch of three records at offsets 3..5 it says 4, while
its fetch responses report the right high watermark (6). Faust's table recovery reads end offsets
through ListOffsets, so a worker restarted after writing a multi-record changelog batch stops
with ConsistencyError ("persisted offset is higher than the last offset"), and a worker taking a
partition over would stop recovery before the end of the last batch.

A second difference: a fetch covering several partitions is not woken when data arrives on one
of them; it waits the full ``fetch_max_wait_ms``, which Faust hard-codes to 1500 ms. Every hop
through a topic then costs up to 1.5 s (measured: p50 1.8 s webhook -> ERP at 5 orders/s). With
``FETCH_MAX_WAIT_MS`` the worker polls often instead; Apache Kafka needs neither change.

`true_end_offsets` asks ListOffsets, then fetches the last batch and takes the fetch response's
high watermark. `install()` makes Faust's consumer use it; it is switched on only when we run
the embedded broker (setting ``tansu_compat``), never against Apache Kafka.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
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
    try:
        await consumer.start()  # inside: a start that fails (broker away) is stopped too
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


FETCH_MAX_WAIT_MS = 20


def install() -> None:
    """Patch Faust's aiokafka consumer for Tansu: true end offsets for table recovery and a
    short fetch wait (idempotent)."""
    from faust.transport.drivers import aiokafka as driver

    thread_cls = driver.AIOKafkaConsumerThread
    if getattr(thread_cls, "_retail_sync_tansu_compat", False):
        return
    original = thread_cls._highwaters

    async def _highwaters(self: Any, partitions: list[Any]) -> Mapping[Any, int]:
        ends = await original(self, partitions)
        client = self._ensure_consumer()._client
        return await true_end_offsets(client._bootstrap_servers, ends)

    create_consumer = thread_cls._create_worker_consumer

    def _create_worker_consumer(self: Any, transport: Any) -> Any:
        consumer = create_consumer(self, transport)
        consumer._fetch_max_wait_ms = FETCH_MAX_WAIT_MS  # read when the consumer starts
        return consumer

    # patching Faust's consumer class is this module's purpose
    thread_cls._highwaters = _highwaters  # type: ignore[method-assign]
    thread_cls._create_worker_consumer = _create_worker_consumer  # type: ignore[method-assign]
    thread_cls._retail_sync_tansu_compat = True  # type: ignore[attr-defined]
