"""Batch records (issue 16): the Outbox groups stock commands, order events, ERP
requests and warehouse commands into one record per partition, keyed so that the record lands on
every item's partition; the stock agent applies a StockBatch item by item at positions
``offset * 1024 + index``, so a replayed batch changes nothing, and refuses an item of another
partition; stock records stored before positions are read in positions; a batch writes each
table key once; the ERP and warehouse agents keep each order's requests in order. No broker: the
agents' functions on recorded sends."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import pytest
from aiokafka.partitioner import DefaultPartitioner

from retail_sync.agents import erp_dispatch, warehouse
from retail_sync.agents import stock as stock_agent
from retail_sync.agents.outbox import Outbox
from retail_sync.connectors.contracts import ErpPostResult
from retail_sync.connectors.shopify.mapper import map_order
from retail_sync.streams.codecs import decode, encode
from retail_sync.streams.commands import (
    MAX_BATCH_ITEMS,
    ErpBatch,
    ErpCancelRequest,
    ErpPostRequest,
    LineRequest,
    ReserveStock,
    StockBatch,
    WmsCancel,
)
from retail_sync.streams.events import ErpStockChanged, LineAllocation, OrderEvents, StockAnswered
from retail_sync.streams.stock import (
    POSITION_SCALE,
    StockState,
    position,
)
from retail_sync.streams.topics import partition_of
from tests.fixture_orders import shopify_order
from tests.unit.test_marketplace_commands import app_and_topics, context

NOW = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)
PARTITIONS = 4  # the settings' default, which the agents use


def keys_by_partition(prefix: str, partitions: int = PARTITIONS) -> dict[int, list[str]]:
    found: dict[int, list[str]] = {p: [] for p in range(partitions)}
    for i in range(40):
        found[partition_of(f"{prefix}{i}", partitions)].append(f"{prefix}{i}")
    return found


def reserve(sku: str, order: str = "shopify:1", line: str = "1", qty: int = 1) -> ReserveStock:
    return ReserveStock(sku=sku, order_key=order, channel="shopify", requested_at=NOW,
                        lines=[LineRequest(line_id=line, quantity=qty)])


def test_partition_of_is_the_producers_partitioner() -> None:
    default = DefaultPartitioner()
    for key in ("shopify:1", "SKU-1", "amazon:113-0000000-0000001", "x" * 300, "ü"):
        for n in (1, 2, 4, 7):
            assert partition_of(key, n) == default(key.encode(), list(range(n)), list(range(n)))


async def test_the_outbox_sends_one_record_per_partition_keyed_by_its_first_item() -> None:
    app, topics, sent = app_and_topics([])
    skus = keys_by_partition("SKU-")
    p0, p1 = skus[0][:3], skus[1][:1]
    outbox = Outbox(topics, PARTITIONS)
    commands = [reserve(p0[0]), reserve(p1[0]), reserve(p0[1]), reserve(p0[2], line="2")]
    for command in commands:
        outbox.add(topics.stock_events, command.sku, command)
    assert len(outbox) == 4
    assert await outbox.flush() == 2 and len(outbox) == 0
    records = sent[topics.stock_events.get_topic_name()]
    batch_key, batch = records[0]
    assert batch_key == p0[0] and isinstance(batch, StockBatch)
    assert batch.items == [commands[0], commands[2], commands[3]]  # their order kept
    assert records[1] == (p1[0], commands[1])  # a group of one: the plain record
    for key, value in records:  # every item on the record's partition
        items = value.items if isinstance(value, StockBatch) else [value]
        assert {partition_of(i.sku, PARTITIONS) for i in items} == {partition_of(key, PARTITIONS)}
    assert await outbox.flush() == 0  # flushed once


async def test_the_outbox_groups_answers_and_keeps_plain_sends_in_order() -> None:
    app, topics, sent = app_and_topics([])
    orders = keys_by_partition("shopify:")[1][:2]
    outbox = Outbox(topics, PARTITIONS)
    for key in orders:
        outbox.add(topics.order_events, key, StockAnswered(
            order_key=key, sku="SKU-1", tracked=True, at=NOW,
            lines=[LineAllocation(line_id="1", requested=1, reserved=1)]))
        outbox.add(topics.wms_requests, None, f"unkeyed {key}")  # no key: sent as it is
        outbox.add(topics.channel_commands, key,
                   f"command {key}")
    await outbox.flush()
    # not a batched topic, or no key: as they were added
    assert sent[topics.channel_commands.get_topic_name()] == [(k, f"command {k}") for k in orders]
    assert sent[topics.wms_requests.get_topic_name()] == [(None, f"unkeyed {k}") for k in orders]
    [(key, answers)] = sent[topics.order_events.get_topic_name()]
    assert key == orders[0] and isinstance(answers, OrderEvents)
    assert [a.order_key for a in answers.events] == orders


async def test_a_batch_record_too_large_for_the_producer_is_sent_as_smaller_ones_in_order(
) -> None:
    """The producer refuses a record over its request size (aiokafka's MessageSizeTooLargeError,
    raised by Faust as ProducerSendError) before sending anything: the outbox halves the group
    until each record fits. A single record that does not fit, or another send error, is
    raised (the batch is not acknowledged)."""
    from aiokafka.errors import KafkaConnectionError, MessageSizeTooLargeError
    from faust.exceptions import ProducerSendError

    app, topics, sent = app_and_topics([])
    name = topics.stock_events.get_topic_name()
    record = topics.stock_events.send

    def refused(cause: Exception) -> ProducerSendError:
        """What Faust raises for an aiokafka error (``raise ... from exc``)."""
        error = ProducerSendError(f"Error while sending: {cause!r}")
        error.__cause__ = cause
        return error

    async def limited(*, key: str | None = None, value: Any = None, **kw: Any) -> None:
        if isinstance(value, StockBatch) and len(value.items) > 3:  # "over the request size"
            raise refused(MessageSizeTooLargeError("The message is 2000000 bytes"))
        await record(key=key, value=value, **kw)
    topics.stock_events.send = limited  # type: ignore[method-assign]
    sku = keys_by_partition("SKU-")[0][0]
    outbox = Outbox(topics, PARTITIONS)
    for i in range(10):
        outbox.add(topics.stock_events, sku, reserve(sku, order=f"shopify:{i}"))
    assert await outbox.flush() == 4  # 10 -> 5 + 5 -> 2 + 3 + 2 + 3
    items = [v.items if isinstance(v, StockBatch) else [v] for _, v in sent[name]]
    assert [len(i) for i in items] == [2, 3, 2, 3]
    assert [r.order_key for i in items for r in i] == [f"shopify:{i}" for i in range(10)]

    attempts: list[int] = []

    def failing(cause: Exception) -> Any:
        async def send(*, value: Any = None, **kw: Any) -> None:
            attempts.append(len(value.items) if isinstance(value, StockBatch) else 1)
            raise refused(cause)
        return send
    topics.stock_events.send = failing(  # type: ignore[method-assign]
        MessageSizeTooLargeError("one record alone is too large"))
    outbox.add(topics.stock_events, sku, reserve(sku))
    with pytest.raises(ProducerSendError):
        await outbox.flush()
    topics.stock_events.send = failing(KafkaConnectionError("broker away"))  # type: ignore[method-assign]
    for i in range(4):
        outbox.add(topics.stock_events, sku, reserve(sku, order=f"shopify:{i}"))
    with pytest.raises(ProducerSendError):
        await outbox.flush()
    assert attempts == [1, 4]  # the single record once; the group of 4 not split: not a size


async def test_a_big_group_is_split_at_the_batch_limit() -> None:
    app, topics, sent = app_and_topics([])
    sku = keys_by_partition("SKU-")[0][0]
    outbox = Outbox(topics, PARTITIONS)
    for i in range(MAX_BATCH_ITEMS + 3):
        outbox.add(topics.stock_events, sku, reserve(sku, order=f"shopify:{i}"))
    assert await outbox.flush() == 2
    sizes = [len(v.items) for _, v in sent[topics.stock_events.get_topic_name()]]
    assert sizes == [MAX_BATCH_ITEMS, 3]


async def test_an_ungrouped_outbox_sends_every_record_on_its_own() -> None:
    app, topics, sent = app_and_topics([])
    sku = keys_by_partition("SKU-")[0]
    outbox = Outbox(topics, PARTITIONS, grouped=False)
    outbox.add(topics.stock_events, sku[0], reserve(sku[0]))
    outbox.add(topics.stock_events, sku[1], reserve(sku[1]))
    assert await outbox.flush() == 2
    assert [k for k, _ in sent[topics.stock_events.get_topic_name()]] == sku[:2]


def test_positions_order_a_batch_between_its_neighbours() -> None:
    assert position(7) < position(7, 1) < position(7, POSITION_SCALE - 1) < position(8)
    with pytest.raises(ValueError, match="at most"):
        position(7, POSITION_SCALE)


def test_a_stock_record_stored_before_positions_is_read_in_positions() -> None:
    v1 = (b'{"sku":"A","seq":41,"released":[{"release_id":"A@41","order_key":"o","line_id":"1",'
          b'"units":1,"seq":41}]}')  # rs.stock_record v1: no schema_version key
    old = decode("rs.stock_record", v1)
    assert isinstance(old, StockState) and old.seq_unit == 1
    now = old.in_positions()
    assert now.seq == position(41, POSITION_SCALE - 1)  # every item of offset 41 was applied
    assert now.released[0].seq == position(41) and now.seq_unit == POSITION_SCALE
    fresh = StockState(sku="A", seq=position(3, 2))  # built by the rules: in positions
    assert fresh.seq_unit == POSITION_SCALE
    stored = decode("rs.stock_record", encode("rs.stock_record", fresh))
    assert stored == fresh and stored.in_positions() is stored  # written now: read as it is


def stock_ctx() -> tuple[Any, Any, dict[str, list[tuple[str | None, Any]]]]:
    """A context whose tables are dicts (one partition's view, no changelog)."""
    app, topics, sent = app_and_topics([])
    ctx = context(app, topics, {})
    return ctx, ctx.tables.stock, sent


def answered(records: list[tuple[str | None, Any]]) -> list[tuple[str, str, int]]:
    return sorted((a.order_key, a.sku, a.lines[0].reserved) for _, v in records
                  for a in (v.events if isinstance(v, OrderEvents) else [v]))


async def test_the_stock_agent_applies_a_batch_item_by_item_and_a_replay_changes_nothing() -> None:
    skus = keys_by_partition("SKU-")[0][:2]
    ctx, table, sent = stock_ctx()
    for i, sku in enumerate(skus):
        outbox = Outbox(ctx.topics, PARTITIONS)
        await stock_agent.handle_record(ctx, sku, ErpStockChanged(
            sku=sku, warehouse=ctx.settings.erp_warehouse, actual_qty=5, reserved_qty=0,
            modified=NOW, observed_at=NOW), 10 + i, 0, None, outbox)
        assert sku not in table  # the SKU's record is held to the end of the batch
        await outbox.flush()
    batch = StockBatch(items=[reserve(skus[0], "shopify:1"), reserve(skus[1], "shopify:1"),
                              reserve(skus[0], "shopify:2", qty=2)])

    async def apply(offset: int) -> list[Any]:
        outbox = Outbox(ctx.topics, PARTITIONS)
        await stock_agent.handle_record(ctx, skus[0], batch, offset, 0, None, outbox)
        await outbox.flush()
        answers = sent[ctx.topics.order_events.get_topic_name()]
        out = list(answers)
        answers.clear()
        return out

    first = await apply(20)
    assert table[skus[0]].held == 3 and table[skus[1]].held == 1
    assert table[skus[0]].seq == position(20, 2) and table[skus[1]].seq == position(20, 1)
    assert answered(first) == sorted(
        [("shopify:1", skus[0], 1), ("shopify:1", skus[1], 1), ("shopify:2", skus[0], 2)])
    again = await apply(20)  # the same record after a take-over: answered again, nothing held
    assert table[skus[0]].held == 3 and table[skus[1]].held == 1
    assert answered(again) == answered(first)
    await apply(21)  # a new record with the same commands: the lines are reserved already
    assert table[skus[0]].held == 3 and table[skus[1]].held == 1


async def test_a_batch_item_of_another_partition_is_refused_not_applied() -> None:
    skus = keys_by_partition("SKU-")
    ctx, table, sent = stock_ctx()
    stranger = skus[1][0]
    batch = StockBatch(items=[reserve(skus[0][0]), reserve(stranger)])
    outbox = Outbox(ctx.topics, PARTITIONS)
    await stock_agent.handle_record(ctx, skus[0][0], batch, 5, 0, None, outbox)
    await outbox.flush()
    assert stranger not in table  # nothing written for it
    [(_, record)] = sent[ctx.topics.sync_exceptions.get_topic_name()]
    assert stranger in record.reason and "partition 0" in record.reason


class _CountingTable(dict[str, Any]):
    def __init__(self) -> None:
        super().__init__()
        self.writes: list[tuple[str, Any]] = []

    def __setitem__(self, key: str, value: Any) -> None:
        self.writes.append((key, value))
        super().__setitem__(key, value)


async def test_a_batch_writes_each_key_once_with_its_last_value() -> None:
    app, topics, _ = app_and_topics([])
    table = _CountingTable()
    table["shopify:1"] = "stored"
    table.writes.clear()
    outbox = Outbox(topics, PARTITIONS)
    view = outbox.table(table)
    assert outbox.table(table) is view  # one view per table per batch
    assert view.get("shopify:1") == "stored"
    view.set("shopify:1", "after the first answer")
    view.set("shopify:2", "new")
    view.set("shopify:1", "after the second answer")
    assert view.get("shopify:1") == "after the second answer" and table.writes == []
    view.settle("shopify:2")  # written now (retention deletes it next)
    assert table.writes == [("shopify:2", "new")]
    await outbox.flush()
    assert table.writes == [("shopify:2", "new"), ("shopify:1", "after the second answer")]
    direct = Outbox(topics, PARTITIONS, grouped=False).table(table)
    direct.set("shopify:3", "at once")
    assert table.writes[-1] == ("shopify:3", "at once")


class _Erp:
    """An ERP whose posts for ``slow`` wait until ``release`` is set (to show orders side by
    side); records the calls in the order they started."""

    def __init__(self, slow: str = "") -> None:
        self.calls: list[tuple[str, str]] = []
        self.slow, self.release = slow, asyncio.Event()

    async def create_sales_order(self, order_key: str, order: Any, *,
                                 backorders: Any = None) -> ErpPostResult:
        self.calls.append(("post", order_key))
        if order_key == self.slow:
            await self.release.wait()
        return ErpPostResult(erp_sales_order=f"SO-{order_key}", created=True, created_at=NOW)

    async def cancel_sales_order(self, erp_sales_order: str, reason: str) -> None:
        self.calls.append(("cancel", erp_sales_order))
        self.release.set()  # another order's call went on while the slow post waited


async def test_an_erp_batch_keeps_each_orders_requests_in_order_and_orders_side_by_side() -> None:
    app, topics, sent = app_and_topics([])
    ctx = context(app, topics, {})
    slow, other = keys_by_partition("shopify:")[0][:2]
    order = map_order(shopify_order())
    post = ErpPostRequest(order_key=slow, order=order, received_at=NOW, requested_at=NOW)
    batch = ErpBatch(requests=[
        post, ErpCancelRequest(order_key=slow, channel="shopify", erp_sales_order=f"SO-{slow}",
                               reason="late"),
        ErpCancelRequest(order_key=other, channel="shopify", erp_sales_order=f"SO-{other}",
                         reason="late")])
    erp = _Erp(slow=slow)
    outbox = Outbox(topics, PARTITIONS)
    await asyncio.wait_for(erp_dispatch.dispatch_batch(
        ctx, lambda: erp, batch, outbox, asyncio.Semaphore(4)), 5)  # type: ignore[arg-type]
    # the slow order's cancel waited for its post; the other order went on meanwhile
    assert erp.calls == [("post", slow), ("cancel", f"SO-{other}"), ("cancel", f"SO-{slow}")]
    assert await outbox.flush() == 1  # the three answers: one record (one order partition)
    [(key, record)] = sent[topics.order_events.get_topic_name()]
    assert isinstance(record, OrderEvents) and key == record.events[0].order_key
    assert sorted((e.kind, e.order_key) for e in record.events) == sorted(
        [("erp_order_posted", slow), ("erp_order_cancelled", slow),
         ("erp_order_cancelled", other)])


async def test_a_wms_batch_answers_every_order_in_one_record_per_partition() -> None:
    app, topics, sent = app_and_topics([])
    ctx = context(app, topics, {})
    orders = keys_by_partition("shopify:")
    mine = [orders[0][0], orders[0][1], orders[1][0]]
    commands = [WmsCancel(order_key=k) for k in mine]
    outbox = Outbox(topics, PARTITIONS)
    await warehouse.carry_out_all(ctx, None, commands, outbox)  # no WMS: answered ok
    assert await outbox.flush() == 2
    answered = [(k, v) for k, v in sent[topics.order_events.get_topic_name()]]
    events = [e for _, v in answered for e in (v.events if isinstance(v, OrderEvents) else [v])]
    assert sorted(e.order_key for e in events) == sorted(mine) and all(e.ok for e in events)


class _Clock:
    def __init__(self) -> None:
        self.wall = self.cpu = 0.0

    def spend(self, wall: float, cpu: float) -> None:
        self.wall += wall
        self.cpu += cpu


def test_the_load_is_the_process_cpu_share_sampled_and_smoothed() -> None:
    """agents/take.py ``Load``: CPU seconds per wall second, taken at most every EVERY_S, half the
    new sample and half what it said before."""
    from retail_sync.agents.take import Load

    clock = _Clock()
    load = Load(clock=lambda: clock.wall, cpu=lambda: clock.cpu)
    clock.spend(wall=0.1, cpu=0.1)
    assert load.now() == 0.0  # too soon: no sample yet
    clock.spend(wall=0.9, cpu=0.7)
    assert load.now() == pytest.approx(0.4)  # (0 + 0.8) / 2
    clock.spend(wall=1.0, cpu=1.0)
    assert load.now() == pytest.approx(0.7)  # (0.4 + 1.0) / 2
    clock.spend(wall=1.0, cpu=3.0)  # several threads: never more than one core's worth
    assert load.now() == pytest.approx(0.85)
    clock.spend(wall=1.0, cpu=0.0)
    assert load.now() == pytest.approx(0.425)


def test_a_batch_waits_longer_the_busier_the_worker() -> None:
    """agents/take.py ``Wait``: the shortest wait below BUSY_LOW of a core, the longest from
    BUSY_HIGH on, in proportion between; never outside its bounds."""
    from retail_sync.agents.take import BUSY_HIGH, BUSY_LOW, Wait

    class Fixed:
        share = 0.0

        def now(self) -> float:
            return self.share

    load = Fixed()
    wait = Wait(0.005, 0.1, load)  # type: ignore[arg-type]
    seen = []
    for share in (0.0, 0.3, BUSY_LOW, (BUSY_LOW + BUSY_HIGH) / 2, BUSY_HIGH, 1.0):
        load.share = share
        seen.append(wait.next())
    assert seen[:3] == [0.005] * 3  # an idle or half-busy worker answers at once
    assert seen[3] == pytest.approx(0.0525)
    assert seen[4:] == [0.1, 0.1]
    assert wait.now == 0.1
    assert seen == sorted(seen)
    assert Wait(0.005, 0.001).high == 0.005  # a maximum below the minimum is the minimum
