"""retail_sync/stall_watch.py: an input partition with records waiting on the broker and none
handed over while the fetch loop fetches is said and read again; a partition that is busy,
caught up, left out on purpose, or a fetch loop that is blocked is left alone. On a real Faust
consumer over a real (not started) aiokafka consumer's assignment; the broker's answers
(highwaters, first offsets) and the seek are the tests'."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

import faust
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from faust.types import TP

from retail_sync import intake_hold, stall_watch
from retail_sync.stall_watch import StallWatch

TOPICS = {"erp-requests", "orders-raw"}


class _Broker:
    def __init__(self) -> None:
        self.ends: dict[TP, int] = {}
        self.firsts: dict[TP, int] = {}
        self.sought: list[dict[TP, int]] = []


@pytest.fixture
async def consumer() -> AsyncIterator[tuple[Any, _Broker]]:
    app = faust.App("stall-test", broker="kafka://127.0.0.1:1", autodiscover=False)
    consumer: Any = app.consumer
    kafka = AIOKafkaConsumer(bootstrap_servers="127.0.0.1:1")
    consumer._thread._consumer = kafka
    tps = {TP("erp-requests", n) for n in range(3)} | {TP("orders-raw", 0), TP("other", 0)}
    kafka._subscription.assign_from_user({TopicPartition(tp.topic, tp.partition) for tp in tps})
    assignment = kafka._subscription.subscription.assignment
    for tp in assignment.tps:
        assignment.state_value(tp).seek(0)
    consumer._set_active_tps(tps)
    consumer.resume_flow()
    broker = _Broker()

    async def highwaters(*partitions: TP) -> dict[TP, int]:
        return {tp: broker.ends.get(tp, 0) for tp in partitions}

    async def earliest_offsets(*partitions: TP) -> dict[TP, int]:
        return {tp: broker.firsts.get(tp, 0) for tp in partitions}

    async def seek_wait(partitions: dict[TP, int]) -> None:
        broker.sought.append(dict(partitions))

    consumer.highwaters, consumer.earliest_offsets = highwaters, earliest_offsets
    consumer.seek_wait = seek_wait
    try:
        yield consumer, broker
    finally:
        await kafka.stop()


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def _looks(watch: StallWatch, consumer: Any, clock: _Clock, seconds: float,
                 every: float = 5.0, fetching: bool = True) -> list[tuple[Any, int]]:
    """The watch's looks over ``seconds``, the fetch loop fetching between them (or not)."""
    found: list[tuple[Any, int]] = []
    elapsed = 0.0
    while elapsed <= seconds:
        if fetching:
            consumer._rs_batches = getattr(consumer, "_rs_batches", 0) + 1
        found += await watch.check()
        clock.now += every
        elapsed += every
    return found


async def test_records_waiting_and_none_handed_over_are_read_again(consumer, caplog) -> None:
    c, broker = consumer
    clock, stalls = _Clock(), []
    watch = StallWatch(c.app, lambda: TOPICS, clock=clock, on_stall=stalls.append)
    last = stall_watch.handed_over(c)
    last[TP("erp-requests", 1)] = 6  # handed over to 6; 7.. wait on the broker
    c._committed_offset[TP("erp-requests", 2)] = 3  # nothing handed over since the rebalance
    broker.ends = {TP("erp-requests", 0): 5, TP("erp-requests", 1): 9,
                   TP("erp-requests", 2): 8, TP("other", 0): 50}
    broker.firsts = {TP("erp-requests", 0): 0}
    with caplog.at_level(logging.WARNING, logger="retail_sync.fetch"):
        found = await _looks(watch, c, clock, 30)
    assert sorted(found) == [(TP("erp-requests", 0), 0), (TP("erp-requests", 1), 7),
                             (TP("erp-requests", 2), 3)]
    assert broker.sought == [dict(found)]  # one seek; "other" is not an input topic here
    assert sorted(stalls) == sorted(tp for tp, _ in found)
    assert "erp-requests[0] stalled: records 0..4 wait on the broker" in caplog.text


async def test_a_busy_or_caught_up_partition_is_left_alone(consumer) -> None:
    c, broker = consumer
    clock = _Clock()
    watch = StallWatch(c.app, lambda: TOPICS, clock=clock)
    last = stall_watch.handed_over(c)
    busy, caught_up = TP("erp-requests", 0), TP("erp-requests", 1)
    last[caught_up] = 4  # 0 may still be in flight (an ERP retry): nothing waits past 4
    broker.ends = {busy: 100, caught_up: 5}
    for _ in range(8):
        last[busy] = last.get(busy, 0) + 10  # the agent keeps taking its records
        consumer_found = await _looks(watch, c, clock, 5)
        assert consumer_found == []
    assert broker.sought == []


async def test_nothing_is_judged_while_the_fetch_loop_is_blocked(consumer) -> None:
    c, broker = consumer
    clock = _Clock()
    watch = StallWatch(c.app, lambda: TOPICS, clock=clock)
    broker.ends = {TP("erp-requests", 0): 5}
    assert await _looks(watch, c, clock, 60, fetching=False) == []  # a full queue, say
    assert await _looks(watch, c, clock, 10) == []  # fetching again: quiet time starts over
    assert await _looks(watch, c, clock, 15) == [(TP("erp-requests", 0), 0)]


async def test_partitions_left_out_on_purpose_are_not_stalled(consumer) -> None:
    c, broker = consumer
    clock = _Clock()
    watch = StallWatch(c.app, lambda: TOPICS, clock=clock)
    broker.ends = {TP("erp-requests", 0): 5, TP("erp-requests", 1): 5,
                   TP("erp-requests", 2): 5, TP("orders-raw", 0): 5}
    c.pause_partitions([TP("erp-requests", 0)])  # a rebalance's pause
    c.on_buffer_full(TP("erp-requests", 1))  # its stream's queue is full
    c._thread._consumer._subscription.subscription.assignment.state_value(
        TopicPartition("erp-requests", 2)).pause()
    intake_hold.hold(c.app, ["orders-raw"], lambda: True)  # the intake holds orders-raw
    assert await _looks(watch, c, clock, 60) == []
    c.app.rebalancing = True
    c.resume_partitions([TP("erp-requests", 0)])
    assert await _looks(watch, c, clock, 60) == []  # nothing is judged during a rebalance
    c.app.rebalancing = False
    assert await _looks(watch, c, clock, 25) == [(TP("erp-requests", 0), 0)]


async def test_nothing_is_judged_while_the_broker_is_unreachable(consumer) -> None:
    """After an outage every partition was quiet for its length: not a stall."""
    from retail_sync import broker_watch

    c, broker = consumer
    clock = _Clock()
    watch = StallWatch(c.app, lambda: TOPICS, clock=clock)
    broker.ends = {TP("erp-requests", 0): 5}
    probe = broker_watch.BrokerWatch([("127.0.0.1", 1)], probe_timeout_s=1.0)
    broker_watch._watches[c.app] = probe
    try:
        probe.mark_failed("refused")
        assert await _looks(watch, c, clock, 60) == []
        probe.mark_ok()
        assert await _looks(watch, c, clock, 10) == []  # quiet time starts when it answers
        assert await _looks(watch, c, clock, 15) == [(TP("erp-requests", 0), 0)]
    finally:
        broker_watch._watches.pop(c.app, None)
