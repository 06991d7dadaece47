"""ERP stock feed: the ERP's stock positions changed since the stored cursor, each sent to the
stock agent (stock-events, keyed by SKU). Polled on the leader's timer (``erp-stock`` ticks,
``erp_stock_poll_interval_s``) through agents.feeds, which stores the cursor only after the
broker acknowledged every position.

The feed repeats the positions at the cursor's instant (``StockFeed`` may: it must never skip
one). A position this worker already saw acknowledged (same SKU, warehouse and ``modified``, or
an older ``modified``) is not sent again (``Sent``): an idle ERP would otherwise cost a
stock-events record and a stock-agent event every poll, forever, and keep the stock-events
partitions from ever standing still (lag that is never 0). After a restart or a move to another
worker the memory is empty and the positions at the cursor go out once more, which the stock
agent ignores (a position not newer than the one it holds).

Issue 16's sixth step built this and took it back when the SIGKILL-restart and failover tests
failed more often under heavy load; they failed without it too, and session 23 traced those
failures to Faust's rebalance and commit handling (retail_sync/faust_fixes.py). Back since
session 30 (docs/BENCHMARKS.md): the repeats had kept the bench's "lag 0" waiting seconds for a
commit to land between two polls (a run of the same code at 328 or 490 orders/s)."""

from __future__ import annotations

from collections.abc import Awaitable
from datetime import datetime
from typing import Any

from cachetools import LRUCache

from retail_sync.agents.deps import AgentDeps
from retail_sync.agents.feeds import register_feed
from retail_sync.streams.events import ErpStockChanged
from retail_sync.streams.models import StockLevel, utcnow

FEED = "erp-stock"
#: positions remembered per worker (SKU and warehouse pairs); one older than the last this many
#: is sent again when it repeats, which costs one ignored record
SENT_POSITIONS = 65_536


class Sent:
    """The newest ``modified`` acknowledged per (SKU, warehouse)."""

    def __init__(self, size: int = SENT_POSITIONS) -> None:
        self._modified: LRUCache[tuple[str, str], datetime] = LRUCache(size)

    def is_new(self, level: StockLevel) -> bool:
        seen = self._modified.get((level.sku, level.warehouse))
        return seen is None or level.modified > seen

    def acknowledged(self, level: StockLevel) -> None:
        if self.is_new(level):  # an older one acknowledged late does not move it back
            self._modified[(level.sku, level.warehouse)] = level.modified


def register(ctx: AgentDeps) -> None:
    feed = ctx.stock_feed_factory() if ctx.stock_feed_factory else None
    if feed is None:
        return
    sent = Sent()

    async def remembered(ack: Awaitable[Any], level: StockLevel) -> Any:
        result = await ack
        sent.acknowledged(level)
        return result

    async def handle(result: Any) -> list[Any]:
        now = utcnow()
        return [remembered(await ctx.topics.stock_events.send(
            key=level.sku, value=ErpStockChanged.observed(level, now)), level)
            for level in result.levels if sent.is_new(level)]

    register_feed(ctx, FEED, ctx.settings.erp_stock_poll_interval_s, feed, handle)
