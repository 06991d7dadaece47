"""A batch handler's changelog records as record batches (tables/changelog.py) on the real
broker, through the real Faust producer and the stock table the worker opens: nothing reaches the
changelog before the batch is sent; then every write is there, per partition in write order,
deletes as tombstones; the store's persisted offset becomes each partition's last offset; a record
larger than the producer's request size is refused as aiokafka refuses it."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import faust
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import MessageSizeTooLargeError
from faust.exceptions import ProducerSendError
from faust.types import TP

from retail_sync.settings import Settings
from retail_sync.streams.codecs import decode
from retail_sync.streams.stock import StockState
from retail_sync.tables import changelog
from retail_sync.tables.orders import stock_table
from tests.unit.test_order_index import _In as _InPartition

pytestmark = pytest.mark.integration


class _In(_InPartition):
    """Faust's current event while an agent handles one of ``partition`` of topic ``src``."""

    def __init__(self, partition: int) -> None:
        super().__init__(partition)
        self.event.message.topic = "src"


def _bootstrap(url: str) -> str:
    return ",".join(h.split("://", 1)[-1] for h in url.split(","))


@asynccontextmanager
async def _app_and_table(broker_url: str, tmp_path: Path,
                         **conf: Any) -> AsyncIterator[tuple[Any, Any, str]]:
    """A Faust app (its producer started) on the broker, the stock table the worker opens, and
    that table's changelog topic (2 partitions, created)."""
    app_id = f"clb-{uuid.uuid4().hex[:6]}"
    settings = Settings(app_id=app_id, datadir=tmp_path, partitions=2)
    app = faust.App(app_id, broker=broker_url, store="rocksdb://", datadir=str(tmp_path),
                    autodiscover=False, **conf)
    table = stock_table(app, settings)
    table.data.active_partitions = lambda: sorted(table.data._dbs)
    table._verified_source_topics_for_partitions.add("src")  # our events' topic: no metadata
    topic = table.changelog_topic.get_topic_name()
    admin = AIOKafkaAdminClient(bootstrap_servers=_bootstrap(broker_url))
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, 2, 1)])
    finally:
        await admin.close()
    await app.producer.start()
    try:
        yield app, table, topic
    finally:
        await app.producer.stop()


async def _records(broker_url: str, topic: str, expected: int) -> dict[int, list[Any]]:
    """(offset, key, value) per partition, read from the start until ``expected`` are in."""
    consumer = AIOKafkaConsumer(bootstrap_servers=_bootstrap(broker_url),
                                auto_offset_reset="earliest", enable_auto_commit=False)
    await consumer.start()
    try:
        consumer.assign([TopicPartition(topic, p) for p in (0, 1)])
        out: dict[int, list[Any]] = {0: [], 1: []}
        deadline = asyncio.get_running_loop().time() + 20
        while sum(map(len, out.values())) < expected:
            assert asyncio.get_running_loop().time() < deadline, out
            for tp, records in (await consumer.getmany(timeout_ms=500)).items():
                out[tp.partition] += [(r.offset, r.key, r.value) for r in records]
        return out
    finally:
        await consumer.stop()


def _sku(name: str, held: int) -> StockState:
    return StockState(sku=name, held=held)


async def test_a_batchs_changelog_goes_out_at_its_end_in_write_order(broker_url: str,
                                                                     tmp_path: Path) -> None:
    async with _app_and_table(broker_url, tmp_path) as (app, table, topic):
        batch = changelog.ChangelogBatch()
        with changelog.collecting(batch):
            for i in range(30):  # keys alternate partitions; A0 is written three times
                with _In(i % 2):
                    table[f"A{i % 2}" if i % 10 == 0 else f"K{i}"] = _sku(f"K{i}", i)
            with _In(1):
                del table["K3"]
        assert len(batch) == 31
        assert table.data.persisted_offset(_tp(topic, 0)) is None
        # nothing on the broker yet: the records wait for the end of the batch
        await app.producer.flush()
        assert await _end(broker_url, topic) == {0: 0, 1: 0}

        assert await batch.send(app) == 31 and len(batch) == 0
        await app.producer.flush()
        got = await _records(broker_url, topic, 31)
        want: dict[int, list[tuple[bytes, Any]]] = {0: [], 1: []}
        for i in range(30):
            want[i % 2].append(((f"A{i % 2}" if i % 10 == 0 else f"K{i}").encode(), i))
        want[1].append((b"K3", None))
        for partition in (0, 1):
            assert [r[0] for r in got[partition]] == list(range(len(want[partition])))
            assert [(k, None if v is None else decode("rs.stock_record", v).held)
                    for _, k, v in got[partition]] == want[partition]
        # the store's persisted offsets: the last record of each partition
        await asyncio.sleep(0.2)
        assert table.data.persisted_offset(_tp(topic, 0)) == len(want[0]) - 1
        assert table.data.persisted_offset(_tp(topic, 1)) == len(want[1]) - 1
        # what RocksDB holds is what the changelog says
        with _In(1):
            assert table.get("K3") is None and table.get("K5").held == 5


async def test_more_than_a_record_batch_holds_goes_out_in_order(broker_url: str,
                                                                tmp_path: Path) -> None:
    async with _app_and_table(broker_url, tmp_path, producer_max_batch_size=2048) as (
            app, table, topic):
        producer = app.producer._ensure_producer()
        queued: list[int] = []
        send_batch = producer.send_batch

        async def counted(batch: Any, topic: str, *, partition: int) -> Any:
            queued.append(batch.record_count())
            return await send_batch(batch, topic, partition=partition)
        producer.send_batch = counted
        batch = changelog.ChangelogBatch()
        with changelog.collecting(batch), _In(0):
            for i in range(40):  # ~150 bytes each: several record batches of at most 2 KiB
                table[f"K{i:03d}"] = _sku(f"K{i:03d}-" + "x" * 80, i)
        assert await batch.send(app) == 40
        assert len(queued) > 1 and sum(queued) == 40
        await app.producer.flush()
        got = await _records(broker_url, topic, 40)
        assert [k for _, k, _ in got[0]] == [f"K{i:03d}".encode() for i in range(40)]
        await asyncio.sleep(0.2)
        assert table.data.persisted_offset(_tp(topic, 0)) == 39


async def test_a_record_over_the_request_size_is_refused(broker_url: str,
                                                         tmp_path: Path) -> None:
    async with _app_and_table(broker_url, tmp_path, producer_max_request_size=4096) as (
            app, table, _):
        batch = changelog.ChangelogBatch()
        with changelog.collecting(batch), _In(0):
            table["BIG"] = StockState(sku="BIG", recent=["r" * 100] * 60)
        with pytest.raises(ProducerSendError) as refused:
            await batch.send(app)
        assert isinstance(refused.value.__cause__, MessageSizeTooLargeError)


async def test_outside_a_batch_faust_sends_each_record(broker_url: str, tmp_path: Path) -> None:
    async with _app_and_table(broker_url, tmp_path) as (app, table, topic):
        assert changelog.current() is None
        with _In(0):
            table["ONE"] = _sku("ONE", 1)
        await app.producer.flush()
        got = await _records(broker_url, topic, 1)
        assert [k for _, k, _ in got[0]] == [b"ONE"]


def _tp(topic: str, partition: int) -> TP:
    return TP(topic, partition)


async def _end(broker_url: str, topic: str) -> dict[int, int]:
    consumer = AIOKafkaConsumer(bootstrap_servers=_bootstrap(broker_url))
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in (0, 1)]
        ends = await consumer.end_offsets(tps)
        return {tp.partition: ends[tp] for tp in tps}
    finally:
        await consumer.stop()

