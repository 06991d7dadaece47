"""The order agent's intake (agents/intake.py) and the hold that stops fetching orders-raw while
it is full (retail_sync/intake_hold.py), on a real Faust consumer of the aiokafka driver (not
started: its fetch thread is replaced by a recorder of what it is asked for)."""

from __future__ import annotations

import asyncio
from typing import Any

import faust
from faust.types import TP

from retail_sync import intake_hold
from retail_sync.agents.intake import Intake

RAW, EVENTS = TP("app.orders-raw", 0), TP("app.order-events", 0)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_the_intake_counts_the_orders_waiting_for_their_stock_answer() -> None:
    clock = Clock()
    intake = Intake(limit=2, expiry_s=10.0, clock=clock)
    intake.waiting("a")
    intake.waiting("a")  # its second SKU's request: still one order
    assert intake.count() == 1 and not intake.full()
    intake.waiting("b")
    assert intake.count() == 2 and intake.full()
    intake.answered("a")
    intake.answered("zz")  # never waited: nothing to do
    assert intake.count() == 1 and not intake.full()


def test_an_order_waiting_too_long_no_longer_counts() -> None:
    clock = Clock()
    intake = Intake(limit=2, expiry_s=10.0, clock=clock)
    intake.waiting("a")
    clock.now += 6
    intake.waiting("b")
    assert intake.full()
    clock.now += 5  # a has waited 11 s: its answer may come to another worker
    assert intake.count() == 1 and not intake.full()
    clock.now += 6
    assert intake.count() == 0


def test_the_orders_of_partitions_given_up_no_longer_count() -> None:
    intake = Intake(limit=3)
    intake.waiting("a", 0)
    intake.waiting("b", 1)
    intake.waiting("c", 1)
    intake.waiting("d")  # outside a stream event: only its age ends its wait
    assert intake.full()
    intake.forget({1})  # a rebalance took partition 1: its answers go to the new owner
    assert intake.count() == 2 and not intake.full()
    intake.forget(set())
    intake.answered("a")
    assert intake.count() == 1


async def test_a_revoked_partition_leaves_the_workers_intake() -> None:
    from retail_sync.app import create_app
    from retail_sync.settings import Settings

    ctx = create_app(Settings(app_id="intake-revoke"), "kafka://127.0.0.1:1")
    raw = ctx.topics.raw_orders.get_topic_name()
    for n, partition in enumerate([0, 1, 2, 2]):
        ctx.intake.waiting(f"o{n}", partition)
    await ctx.app.on_partitions_revoked.send({TP(raw, 2), TP("other-topic", 0)})
    assert ctx.intake.count() == 2


def test_fetched_records_count_until_handled() -> None:
    clock = Clock()
    intake = Intake(limit=4, expiry_s=10.0, clock=clock)
    intake.fetched(0, [10, 11])
    intake.fetched(1, [10])  # the same offset on another partition is another record
    intake.waiting("a", 0)
    assert intake.count() == 1 and intake.in_hand() == 3 and intake.full()
    intake.handled(0, 10)
    intake.handled(0, 99)  # never fetched here: nothing to do
    assert intake.in_hand() == 2 and not intake.full()
    intake.fetched(1, [10])  # fetched again (a seek back): still one record
    assert intake.in_hand() == 2


def test_fetched_records_leave_by_age_and_with_their_partition() -> None:
    clock = Clock()
    intake = Intake(limit=2, expiry_s=10.0, clock=clock)
    intake.fetched(0, [1])
    clock.now += 6
    intake.fetched(1, [1, 2])
    assert intake.full()
    clock.now += 5  # partition 0's record was never delivered (revoked meanwhile): it ages out
    assert intake.in_hand() == 2
    intake.forget({1})
    assert intake.in_hand() == 0 and not intake.full()


def test_no_limit_is_never_full() -> None:
    intake = Intake(limit=0)
    for n in range(100):
        intake.waiting(str(n))
    assert intake.count() == 100 and not intake.full()


class Thread:
    """The driver's fetch thread: records the partitions each fetch asks for."""

    def __init__(self) -> None:
        self.asked: list[tuple[set[TP], float]] = []

    async def getmany(self, active: set[TP],
                      timeout: float) -> dict[TP, list[Any]]:  # noqa: ASYNC109 - the driver's
        self.asked.append((set(active), timeout))
        return {tp: [Record(tp.partition * 100 + n) for n in range(2)] for tp in active}


class Record:
    def __init__(self, offset: int) -> None:
        self.offset = offset


def _consumer(full: list[bool],
              fetched: list[tuple[int, list[int]]] | None = None) -> tuple[Any, Thread]:
    app = faust.App("intake-test", broker="kafka://127.0.0.1:1", autodiscover=False)
    intake_hold.hold(app, [RAW.topic], lambda: full[0],
                     None if fetched is None else (lambda p, o: fetched.append((p, o))))
    consumer = app.consumer
    thread = Thread()
    consumer._thread = thread
    return consumer, thread


async def test_a_held_topic_is_left_out_of_the_fetch() -> None:
    full = [False]
    consumer, thread = _consumer(full)
    assert set(await consumer._getmany({RAW, EVENTS}, 1.0)) == {RAW, EVENTS}
    full[0] = True
    assert set(await consumer._getmany({RAW, EVENTS}, 1.0)) == {EVENTS}
    # while holding, a fetch waits briefly: the hold is looked at again soon
    assert thread.asked == [({RAW, EVENTS}, 1.0), ({EVENTS}, intake_hold.RECHECK_S)]
    full[0] = False
    assert set(await consumer._getmany({RAW, EVENTS}, 1.0)) == {RAW, EVENTS}


async def test_a_hold_is_told_what_each_fetch_hands_over_of_its_topics() -> None:
    fetched: list[tuple[int, list[int]]] = []
    consumer, _ = _consumer([False], fetched)
    raw_1 = TP(RAW.topic, 1)
    records = await consumer._getmany({RAW, raw_1, EVENTS}, 1.0)
    assert set(records) == {RAW, raw_1, EVENTS}  # handed to Faust as fetched
    assert sorted(fetched) == [(0, [0, 1]), (1, [100, 101])]  # order-events is not its topic


async def test_a_fetch_of_only_held_partitions_asks_for_nothing() -> None:
    consumer, thread = _consumer([True])
    active = {RAW}
    started = asyncio.get_running_loop().time()
    assert await consumer._getmany(active, 1.0) == {}
    assert asyncio.get_running_loop().time() - started < 0.5
    assert thread.asked == [] and active == {RAW}  # Faust's own set is left as it was


async def test_another_app_is_not_held() -> None:
    _consumer([True])
    other = faust.App("intake-test-2", broker="kafka://127.0.0.1:1", autodiscover=False)
    intake_hold.install()
    thread = Thread()
    other.consumer._thread = thread
    assert set(await other.consumer._getmany({RAW}, 1.0)) == {RAW}
