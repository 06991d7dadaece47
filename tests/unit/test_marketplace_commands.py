"""Marketplace commands (cancel, ship, refund) go to one topic per channel we write to, each read
by its own agent, so an unreachable marketplace holds back only its own commands; a channel
without an outbound keeps the shared fallback topic. No broker: the agents' functions are run on
plain async iterators, and every topic's ``send`` is recorded."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable
from datetime import UTC, datetime
from typing import Any

import faust
import pytest

from retail_sync.agents import marketplace, orders
from retail_sync.connectors.contracts import PushReport
from retail_sync.connectors.errors import PermanentError
from retail_sync.connectors.shopify.mapper import map_order
from retail_sync.context import Context, Tables
from retail_sync.metrics import Metrics
from retail_sync.settings import Settings
from retail_sync.streams.commands import MarketplaceCancel
from retail_sync.streams.events import LineAllocation, MarketplaceNotified, OrderReceived, StockAnswered
from retail_sync.streams.models import ExceptionKind, LineUnits, SyncException
from retail_sync.streams.topics import Topics, declare_topics
from tests.fixture_orders import shopify_order

APP = "t-cmd"
NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
FIXTURE = shopify_order()  # the sample with totals that add up (tests/fixture_orders.py)


def cancel(channel: str, oid: str = "1001") -> MarketplaceCancel:
    return MarketplaceCancel(order_key=f"{channel}:{oid}", channel=channel,
                             marketplace_order_id=oid, whole_order=True,
                             lines=[LineUnits(line_id="l1", sku="SKU-1", quantity=1)],
                             reason="out of stock", requested_at=NOW)


class FakeOutbound:
    """A marketplace writer; ``hang`` makes every call wait forever (the marketplace is down
    and the call never comes back), ``refuse`` makes it a PermanentError."""

    def __init__(self, channel: str, *, hang: bool = False, refuse: bool = False) -> None:
        self.channel, self.hang, self.refuse = channel, hang, refuse
        self.cancelled: list[str] = []
        self.started = asyncio.Event()

    async def cancel_lines(self, marketplace_order_id: str, lines: Iterable[LineUnits], *,
                           whole_order: bool, reason: str) -> None:
        self.started.set()
        if self.hang:
            await asyncio.Event().wait()
        if self.refuse:
            raise PermanentError("order not found", status=404)
        self.cancelled.append(marketplace_order_id)

    async def push_inventory(self, updates: Any) -> PushReport:
        return PushReport(applied=())

    async def close(self) -> None:
        pass


def app_and_topics(outbound_channels: Iterable[str]) -> tuple[faust.App, Topics, dict]:
    """A Faust app (never started) with the real topic handles; each topic's sends recorded."""
    app = faust.App(APP, broker="kafka://localhost:9092", store="memory://", autodiscover=False)
    topics = declare_topics(app, prefix=APP, partitions=2, outbound_channels=outbound_channels)
    sent: dict[str, list[tuple[str | None, Any]]] = {}
    for topic in topics.all():
        name = topic.get_topic_name()
        sent[name] = []

        async def send(*, key: str | None = None, value: Any = None, _name: str = name,
                       **_: Any) -> None:
            sent[_name].append((key, value))
        topic.send = send  # type: ignore[method-assign]
    return app, topics, sent


def context(app: faust.App, topics: Topics, outbound: dict[str, Any]) -> Context:
    return Context(app=app, settings=Settings(app_id=APP), topics=topics,
                   tables=Tables(orders={}, cursors={}, stock={}),  # type: ignore[arg-type]
                   metrics=Metrics(), erp_factory=lambda: None, deduper=None,  # type: ignore[arg-type]
                   channels={}, outbound=outbound)


async def feed(*commands: MarketplaceCancel) -> AsyncIterator[MarketplaceCancel]:
    for command in commands:
        yield command


def test_each_outbound_channel_has_its_own_command_topic() -> None:
    _, topics, _ = app_and_topics(["amazon", "shopify"])
    amazon, shopify = topics.commands_for("amazon"), topics.commands_for("shopify")
    assert amazon.get_topic_name() == f"{APP}.channel-commands.amazon"
    assert shopify.get_topic_name() == f"{APP}.channel-commands.shopify"
    assert amazon is not shopify
    # no outbound configured: the shared topic, whose agent records it for a human
    assert topics.commands_for("regional") is topics.channel_commands
    assert topics.channel_commands.get_topic_name() == f"{APP}.channel-commands"
    names = [t.get_topic_name() for t in topics.all()]
    assert {f"{APP}.channel-commands", f"{APP}.channel-commands.amazon",
            f"{APP}.channel-commands.shopify"} <= set(names)
    assert len(names) == len(set(names))
    for topic in (amazon, shopify):
        assert topic.value_serializer == "rs.channel_command"
        assert topic.dead_letters is topics.sync_exceptions  # type: ignore[attr-defined]


def test_one_agent_per_channel_plus_the_fallback() -> None:
    app, topics, _ = app_and_topics(["amazon", "shopify"])
    marketplace.register(context(app, topics, {}))
    agents = {name: agent for name, agent in app.agents.items()
              if name.startswith(f"{APP}.marketplace-outbound")}
    assert set(agents) == {f"{APP}.marketplace-outbound.amazon",
                           f"{APP}.marketplace-outbound.shopify", f"{APP}.marketplace-outbound"}
    assert agents[f"{APP}.marketplace-outbound.amazon"].channel is topics.commands["amazon"]
    assert agents[f"{APP}.marketplace-outbound.shopify"].channel is topics.commands["shopify"]
    assert agents[f"{APP}.marketplace-outbound"].channel is topics.channel_commands
    # one actor by default: each channel's commands (so each order's) go out in order
    assert {a.concurrency for a in agents.values()} == {1}


def received(channel: str, oid: str) -> OrderReceived:
    # created now: an order older than the retention age that the table does not hold is refused
    order = map_order({**FIXTURE, "id": int(oid)}).model_copy(
        update={"channel": channel, "created_at": datetime.now(UTC)})
    return OrderReceived(order_key=order.order_key, order=order, delivery_id=f"d-{oid}",
                         received_at=NOW)


async def short_order(ctx: Context, channel: str, oid: str) -> None:
    """An order whose stock cannot be reserved at all: under the default policy "cancel" the
    order agent tells the marketplace to cancel it."""
    event = received(channel, oid)
    await orders.handle(ctx, event.order_key, event)
    for line in event.order.lines:
        await orders.handle(ctx, event.order_key, StockAnswered(
            order_key=event.order_key, sku=line.sku, tracked=True, at=NOW,
            lines=[LineAllocation(line_id=line.line_id, requested=line.quantity, reserved=0)]))


async def test_order_agent_sends_each_channels_commands_to_its_own_topic() -> None:
    app, topics, sent = app_and_topics(["amazon", "shopify"])
    ctx = context(app, topics, {})
    await short_order(ctx, "shopify", "1001")
    await short_order(ctx, "amazon", "2002")
    await short_order(ctx, "regional", "3003")  # no outbound: the fallback topic
    on = {name.rsplit(".", 1)[-1] if name.count(".") > 1 else "shared":
          [(k, v.channel) for k, v in records] for name, records in sent.items()
          if name.startswith(f"{APP}.channel-commands")}
    assert on == {"shopify": [("shopify:1001", "shopify")],
                  "amazon": [("amazon:2002", "amazon")],
                  "shared": [("regional:3003", "regional")]}
    assert all(isinstance(v, MarketplaceCancel)
               for name, records in sent.items() if "channel-commands" in name
               for _, v in records)


def agent_fun(app: faust.App, name: str) -> Any:
    return app.agents[f"{APP}.{name}"].fun


async def test_a_marketplace_that_hangs_holds_back_only_its_own_commands() -> None:
    app, topics, sent = app_and_topics(["amazon", "shopify"])
    amazon, shopify = FakeOutbound("amazon", hang=True), FakeOutbound("shopify")
    marketplace.register(context(app, topics, {"amazon": amazon, "shopify": shopify}))
    held = asyncio.ensure_future(agent_fun(app, "marketplace-outbound.amazon")(
        feed(cancel("amazon", "1"), cancel("amazon", "2"))))
    try:
        await asyncio.wait_for(amazon.started.wait(), 5)
        await asyncio.wait_for(agent_fun(app, "marketplace-outbound.shopify")(
            feed(cancel("shopify", "3"), cancel("shopify", "4"))), 5)
        assert shopify.cancelled == ["3", "4"]
        told = [v for _, v in sent[f"{APP}.order-events"]]
        assert [(n.order_key, n.ok) for n in told] == [("shopify:3", True), ("shopify:4", True)]
        assert isinstance(told[0], MarketplaceNotified)
        assert not held.done() and amazon.cancelled == []  # still waiting on Amazon
    finally:
        held.cancel()
        with pytest.raises(asyncio.CancelledError):
            await held


async def test_exception_records_name_the_topic_the_command_was_read_from() -> None:
    app, topics, sent = app_and_topics(["walmart"])
    marketplace.register(context(app, topics, {"walmart": FakeOutbound("walmart", refuse=True)}))
    await agent_fun(app, "marketplace-outbound.walmart")(feed(cancel("walmart")))
    await agent_fun(app, "marketplace-outbound")(feed(cancel("regional")))
    records: list[SyncException] = [v for _, v in sent[f"{APP}.sync-exceptions"]]
    assert [(r.kind, r.channel, r.source_topic) for r in records] == [
        (ExceptionKind.OUTBOUND, "walmart", f"{APP}.channel-commands.walmart"),
        (ExceptionKind.OUTBOUND, "regional", f"{APP}.channel-commands")]
    assert "PermanentError" in records[0].reason
    assert "no outbound configured for regional" in records[1].reason


async def test_fallback_forwards_a_command_whose_channel_has_its_own_topic() -> None:
    """A record on the shared topic from before the channel had its own (or an old exception
    replayed there) is carried out by the channel's own agent, behind its breaker."""
    app, topics, sent = app_and_topics(["amazon"])
    amazon = FakeOutbound("amazon")
    marketplace.register(context(app, topics, {"amazon": amazon}))
    command = cancel("amazon")
    await agent_fun(app, "marketplace-outbound")(feed(command))
    assert sent[f"{APP}.channel-commands.amazon"] == [("amazon:1001", command)]
    assert amazon.cancelled == [] and sent[f"{APP}.sync-exceptions"] == []


def test_concurrency_setting_applies_to_every_command_agent(monkeypatch) -> None:
    monkeypatch.setenv("RETAIL_SYNC_MARKETPLACE_COMMAND_CONCURRENCY", "3")
    app, topics, _ = app_and_topics(["amazon"])
    ctx = context(app, topics, {})
    assert ctx.settings.marketplace_command_concurrency == 3
    marketplace.register(ctx)
    assert app.agents[f"{APP}.marketplace-outbound.amazon"].concurrency == 3
    assert app.agents[f"{APP}.marketplace-outbound"].concurrency == 3

