"""The bench's load generator: produce prepared records into one topic as fast as the broker takes
them, in its own process so its CPU is measured apart from the ERP simulator and the harness.

``python -m retail_sync.bench_load BOOTSTRAP TOPIC FILE``: FILE holds the records as written by
``write_records`` (key and value, each length-prefixed). Prints ``ready`` when connected and
``done <records> <cpu seconds>`` once every record is acked (``produce``); exits 0.
"""

from __future__ import annotations

import asyncio
import struct
import sys
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

_LEN = struct.Struct(">I")


def write_records(path: Path, records: Iterable[tuple[bytes, bytes]]) -> None:
    with path.open("wb") as out:
        for key, value in records:
            out.write(_LEN.pack(len(key)) + key + _LEN.pack(len(value)) + value)


def read_records(path: Path) -> Iterator[tuple[bytes, bytes]]:
    data = path.read_bytes()
    at = 0
    while at < len(data):
        (n,) = _LEN.unpack_from(data, at)
        key = data[at + 4: at + 4 + n]
        at += 4 + n
        (n,) = _LEN.unpack_from(data, at)
        value = data[at + 4: at + 4 + n]
        at += 4 + n
        yield key, value


async def produce(bootstrap: str, topic: str, records: Iterable[tuple[bytes, bytes]]) -> int:
    """Send every record; prints ``ready`` once connected (the bench starts its clock then) and
    ``done <records> <cpu seconds>`` when all are acked (this process's CPU since ``ready``)."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=20,
                                max_batch_size=1024 * 1024)
    await producer.start()
    sent = 0
    try:
        records = list(records)
        print("ready", flush=True)
        cpu = time.process_time()
        for key, value in records:
            await producer.send(topic, value, key=key)
            sent += 1
        await producer.flush()
        print(f"done {sent} {time.process_time() - cpu:.6f}", flush=True)
    finally:
        await producer.stop()
    return sent


async def create_topic(bootstrap: str, topic: str, partitions: int) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, partitions, 1)])
    except TopicAlreadyExistsError:
        pass  # the worker declared it already
    finally:
        await admin.close()


async def preload(bootstrap: str, topic: str, records: list[tuple[bytes, bytes]],
                  partitions: int) -> None:
    """Produce ``records`` from this process, with a progress bar (anchors, failover run)."""
    from retail_sync.report import Progress, bar

    await create_topic(bootstrap, topic, partitions)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=20,
                                max_batch_size=1024 * 1024)
    await producer.start()
    try:
        progress = Progress()
        for i, (key, value) in enumerate(records, 1):
            await producer.send(topic, value, key=key)
            if i % 2000 == 0 or i == len(records):
                progress.update(f"preloading {topic}: {bar(i / len(records))} {i}/{len(records)}")
        await producer.flush()
        progress.done()
    finally:
        await producer.stop()


def main(argv: list[str]) -> int:
    bootstrap, topic, path = argv
    asyncio.run(produce(bootstrap, topic, read_records(Path(path))))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
