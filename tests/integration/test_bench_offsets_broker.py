"""The bench's broker reads (retail_sync/bench_offsets.py) against the real broker: records and
bytes produced per topic, a consumer group's committed offsets and its lag, including Tansu's
too-low ListOffsets answer after a multi-record batch (the lag must not read zero early).
No worker: a plain aiokafka group stands in for the app's (a few seconds)."""

from __future__ import annotations

import os
import uuid

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from retail_sync.bench_offsets import OffsetReader, read_range, run_figures

pytestmark = pytest.mark.integration


async def test_offsets_lag_and_bytes_from_the_broker(broker_url: str) -> None:
    bootstrap = ",".join(h.split("://", 1)[-1] for h in broker_url.split(","))
    tansu = not os.environ.get("RETAIL_SYNC_TEST_BROKER_URL")
    app_id = f"bench-t-{uuid.uuid4().hex[:6]}"
    source, changelog = f"{app_id}.orders-raw", f"{app_id}-state-changelog"
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(source, 2, 1), NewTopic(changelog, 2, 1)])
    finally:
        await admin.close()
    reader = await OffsetReader(bootstrap, app_id, tansu).start()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=50)
    await producer.start()
    try:
        assert len(await reader.discover()) == 4
        ends_before, committed_before = await reader.ends(), await reader.committed()
        assert set(committed_before.values()) == {-1}
        # 20 records in a few multi-record batches (key 5 bytes + value 10 bytes each), 6 more
        # on the changelog; the "app" group reads and commits all of the source
        futures = [await producer.send(source, b"v" * 10, key=f"k{i:04d}".encode(), partition=i % 2)
                   for i in range(20)]
        futures += [await producer.send(changelog, b"c" * 3, key=b"k", partition=0)
                    for _ in range(6)]
        await producer.flush()
        for future in futures:
            await future
        source_tps = [tp for tp in reader.partitions if tp[0] == source]
        assert sum((await reader.lag(source_tps)).values()) == 20  # nothing committed yet

        group = AIOKafkaConsumer(source, bootstrap_servers=bootstrap, group_id=app_id,
                                 enable_auto_commit=False, auto_offset_reset="earliest")
        await group.start()
        try:
            read = 0
            while read < 15:
                batch = await group.getmany(timeout_ms=1000, max_records=15 - read)
                read += sum(len(records) for records in batch.values())
            await group.commit()
            assert sum((await reader.lag(source_tps)).values()) == 5
            while read < 20:
                batch = await group.getmany(timeout_ms=1000)
                read += sum(len(records) for records in batch.values())
            await group.commit()
        finally:
            await group.stop()
        assert sum((await reader.lag(source_tps)).values()) == 0

        ends_after, committed_after = await reader.ends(), await reader.committed()
        sizes, counts, stamps = await read_range(bootstrap, ends_before, ends_after)
        figures = run_figures(20, app_id, ends_before, ends_after, committed_before,
                              committed_after, sizes)
        assert sum(counts.values()) == 26
        assert (figures.topics["orders-raw"].produced, figures.topics["orders-raw"].consumed) == (20, 20)
        assert (figures.topics["state-changelog"].produced,
                figures.topics["state-changelog"].consumed) == (6, 0)
        assert figures.topics["orders-raw"].produced_bytes == 20 * 15
        assert figures.topics["state-changelog"].produced_bytes == 6 * 4
        assert figures.ops_per_order == pytest.approx(46 / 20)
        assert len(stamps) == 3  # partitions with records have a newest timestamp
    finally:
        await producer.stop()
        await reader.close()
