"""The ERP stock feed agent sends a position once: the repeats a feed returns at its cursor's
instant are not sent again once the broker acknowledged them (agents/stock_feed.py)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import pytest

from retail_sync.agents import stock_feed
from retail_sync.connectors.contracts import StockFeedResult
from retail_sync.streams.models import StockLevel

T1 = datetime(2026, 12, 5, 10, 0, tzinfo=UTC)


def level(sku: str, at: datetime, warehouse: str = "Stores - WH", qty: int = 5) -> StockLevel:
    return StockLevel(sku=sku, warehouse=warehouse, actual_qty=qty, reserved_qty=0, modified=at)


class Topic:
    """stock-events as the agent sees it: ``send`` returns the broker's acknowledgement."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, Any]] = []
        self.refuse = False

    async def send(self, *, key: str, value: Any) -> asyncio.Future[Any]:
        self.sent.append((key, value))
        ack: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        if self.refuse:
            ack.set_exception(RuntimeError("broker refused"))
        else:
            ack.set_result(len(self.sent))
        return ack


@pytest.fixture
def feed(monkeypatch: pytest.MonkeyPatch) -> tuple[Any, Topic]:
    captured: dict[str, Any] = {}
    monkeypatch.setattr(stock_feed, "register_feed",
                        lambda ctx, name, interval, feed, handle: captured.update(handle=handle))
    topic = Topic()
    ctx = SimpleNamespace(stock_feed_factory=lambda: object(),
                          topics=SimpleNamespace(stock_events=topic),
                          settings=SimpleNamespace(erp_stock_poll_interval_s=1.0))
    stock_feed.register(ctx)  # type: ignore[arg-type]
    return captured["handle"], topic


async def poll(handle: Any, *levels: StockLevel) -> list[Any]:
    acks = await handle(StockFeedResult(levels=list(levels), cursor="c"))
    return list(await asyncio.gather(*acks, return_exceptions=True))


async def test_a_repeated_position_is_sent_once(feed: tuple[Any, Topic]) -> None:
    handle, topic = feed
    await poll(handle, level("A", T1), level("B", T1))
    assert [key for key, _ in topic.sent] == ["A", "B"]
    # the next poll repeats both at the cursor's instant; B changed since
    await poll(handle, level("A", T1), level("B", T1 + timedelta(seconds=1), qty=4))
    assert [key for key, _ in topic.sent] == ["A", "B", "B"]
    assert topic.sent[-1][1].actual_qty == 4
    # an older position than the one sent (out of order) is not sent either
    await poll(handle, level("B", T1))
    assert len(topic.sent) == 3


async def test_warehouses_are_positions_of_their_own(feed: tuple[Any, Topic]) -> None:
    handle, topic = feed
    await poll(handle, level("A", T1, "WH-1"))
    await poll(handle, level("A", T1, "WH-1"), level("A", T1, "WH-2"))
    assert [value.warehouse for _, value in topic.sent] == ["WH-1", "WH-2"]


async def test_a_position_the_broker_refused_is_sent_again(feed: tuple[Any, Topic]) -> None:
    handle, topic = feed
    topic.refuse = True
    results = await poll(handle, level("A", T1))
    assert isinstance(results[0], RuntimeError)
    topic.refuse = False
    await poll(handle, level("A", T1))
    await poll(handle, level("A", T1))
    assert len(topic.sent) == 2  # the refused one, then once more, then no repeat


def test_the_memory_is_bounded() -> None:
    sent = stock_feed.Sent(size=2)
    for sku in ("A", "B", "C"):
        sent.acknowledged(level(sku, T1))
    assert sent.is_new(level("A", T1))  # forgotten: sent again, the stock agent ignores it
    assert not sent.is_new(level("C", T1))
