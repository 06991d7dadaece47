"""Reading the order archive (tables/retention.py writes it): a retired order's last state, for
the views (``GET /orders/{key}``, ``/orders/lookup``) and support. One pass over every partition
of the compacted archive topic from the beginning: a support lookup, not a hot path."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from retail_sync.exceptions_view import bootstrap_of
from retail_sync.streams.codecs import decode as codec_decode
from retail_sync.streams.state import OrderState
from retail_sync.tables.retention import archive_topic_name


async def read_archived(bootstrap: str, topic: str, keys: Iterable[str],
                        timeout_s: float = 10.0) -> dict[str, OrderState]:
    """The archived states of ``keys`` (the last record of each), in one pass over every
    partition of the archive topic from the beginning: a support lookup of retired orders, not a
    hot path (compaction keeps one record per retired order)."""
    from retail_sync.stack import _behind, _partitions  # heavy (simulators): only when asked
    from retail_sync.tansu_compat import true_end_offsets

    wanted = {k.encode() for k in keys}
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                                auto_offset_reset="earliest")
    await consumer.start()
    try:
        partitions = await _partitions(consumer, topic, min(timeout_s, 2.0))
        if not partitions or not wanted:
            return {}
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await true_end_offsets(bootstrap, await consumer.end_offsets(tps))
        found: dict[bytes, bytes | None] = {}
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while loop.time() < deadline and await _behind(consumer, ends):
            batch = await consumer.getmany(*tps, timeout_ms=200)
            for msgs in batch.values():
                for m in msgs:
                    if m.key in wanted:
                        found[m.key] = m.value
        return {k.decode(): codec_decode("rs.order_state", v) for k, v in found.items() if v}
    finally:
        await consumer.stop()


async def archived_views(ctx: Any, keys: Iterable[str]) -> list[dict[str, Any]]:
    """Retired orders as the views show them: their last state, marked ``"archived": true``."""
    states = await read_archived(bootstrap_of(ctx.app.conf.broker),
                                 archive_topic_name(ctx.settings.app_id), list(keys))
    return [{**state.model_dump(mode="json"), "archived": True} for state in states.values()]
