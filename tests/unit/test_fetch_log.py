"""retail_sync/fetch_log.py: where each partition is read from, and the fetch loop's drops,
logged at INFO (a diagnostic for the open test_first_commit failure)."""

from __future__ import annotations

import logging
from types import SimpleNamespace
from typing import Any

from aiokafka import TopicPartition

from retail_sync import fetch_log


def test_a_partition_is_logged_once_it_has_a_position(caplog) -> None:
    tp = TopicPartition("app.erp-requests", 0)
    with caplog.at_level(logging.INFO, logger="retail_sync.fetch"):
        fetch_log.started(tp, SimpleNamespace(has_valid_position=False, position=None))
        fetch_log.started(tp, SimpleNamespace(has_valid_position=True, position=5))
    assert [r.getMessage().split(" (")[0] for r in caplog.records] == [
        "reading app.erp-requests[0] from offset 5"]


def test_drops_are_said_once_per_partition_per_window(caplog, monkeypatch) -> None:
    clock = iter([100.0, 101.0, 100.5, 112.0])
    monkeypatch.setattr(fetch_log.time, "monotonic", lambda: next(clock))
    monkeypatch.setattr(fetch_log, "_dropped_at", {})
    a, b = TopicPartition("t", 0), TopicPartition("t", 1)
    with caplog.at_level(logging.INFO, logger="retail_sync.fetch"):
        fetch_log.dropped(a, 3, 7)  # said
        fetch_log.dropped(a, 4, 7)  # held: 1 s later
        fetch_log.dropped(b, 0, 2)  # another partition: said
        fetch_log.dropped(a, 5, 7)  # 12 s later: said again
    said = [r.getMessage().split(" dropped")[0] for r in caplog.records]
    assert said == ["offset 3 of TopicPartition(topic='t', partition=0)",
                    "offset 0 of TopicPartition(topic='t', partition=1)",
                    "offset 5 of TopicPartition(topic='t', partition=0)"]
    assert "read to 7 already" in caplog.records[0].getMessage()


def test_a_skip_for_a_seek_is_its_own_kind_and_the_first_hand_over_is_said(caplog,
                                                                          monkeypatch) -> None:
    monkeypatch.setattr(fetch_log.time, "monotonic", lambda: 50.0)
    monkeypatch.setattr(fetch_log, "_dropped_at", {})
    tp = TopicPartition("app.erp-requests", 0)
    with caplog.at_level(logging.INFO, logger="retail_sync.fetch"):
        fetch_log.dropped(tp, 2, 5)
        fetch_log.dropped(tp, 0, None, "fetched before a seek")  # another reason: said too
        fetch_log.dropped(tp, 1, None, "fetched before a seek")  # held
        fetch_log.handed_over(tp, 0)
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 3 and "fetched before a seek" in messages[1]
    assert messages[2] == "first record handed over of app.erp-requests[0]: offset 0"


async def test_not_fetching_says_aiokafkas_and_fausts_reasons() -> None:
    """A real Faust consumer over a real (not started) aiokafka consumer's assignment: a
    partition with no position is aiokafka's; one Faust paused, or whose stream's buffer is
    full, is left out of what Faust's fetch loop asks for, though aiokafka could fetch it."""
    import faust
    from aiokafka import AIOKafkaConsumer
    from faust.types import TP

    app = faust.App("fetch-log-test", broker="kafka://127.0.0.1:1", autodiscover=False)
    consumer: Any = app.consumer
    kafka = AIOKafkaConsumer(bootstrap_servers="127.0.0.1:1")
    consumer._thread._consumer = kafka
    tps = {TP("t", n) for n in range(4)} | {TP("other", 0)}
    kafka._subscription.assign_from_user({TopicPartition(tp.topic, tp.partition) for tp in tps})
    assignment = kafka._subscription.subscription.assignment
    for tp in assignment.tps:
        if tp != TopicPartition("t", 3):
            assignment.state_value(tp).seek(0)
    consumer._set_active_tps(tps)
    try:
        assert fetch_log.not_fetching(consumer, {"t"}) == [
            {"topic": "t", "partition": 3, "state": "no position"}]
        consumer.pause_partitions([TP("t", 1), TP("other", 0)])
        consumer.on_buffer_full(TP("t", 2))
        assert fetch_log.not_fetching(consumer, {"t"}) == [
            {"topic": "t", "partition": 1, "state": "paused by Faust"},
            {"topic": "t", "partition": 2, "state": "buffer full"},
            {"topic": "t", "partition": 3, "state": "no position"}]
        consumer.resume_partitions([TP("t", 1)])
        consumer.on_buffer_drop(TP("t", 2))
        consumer._get_active_partitions().discard(TP("t", 0))
        assert fetch_log.not_fetching(consumer, {"t"}) == [
            {"topic": "t", "partition": 0, "state": "not active"},
            {"topic": "t", "partition": 3, "state": "no position"}]
    finally:
        await kafka.stop()
