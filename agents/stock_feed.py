"""ERP stock feed: the ERP's stock positions changed since the stored cursor, each sent to the
stock agent (stock-events, keyed by SKU). Polled on the leader's timer (``erp-stock`` ticks,
``erp_stock_poll_interval_s``) through agents.feeds, which stores the cursor only after the
broker acknowledged every position. The feed repeats the positions at the cursor's instant and
the stock agent ignores a position not newer than the one it holds.

Issue 16's sixth step tried sending a position only once (remembering what the broker
acknowledged) and took it back: the SIGKILL-restart and failover tests failed more often under
heavy load after it, though not only with it (docs/BENCHMARKS.md, sixth step); the repeats stay
until that is understood."""

from __future__ import annotations

from typing import Any

from retail_sync.agents.deps import AgentDeps
from retail_sync.agents.feeds import register_feed
from retail_sync.streams.events import ErpStockChanged
from retail_sync.streams.models import utcnow

FEED = "erp-stock"


def register(ctx: AgentDeps) -> None:
    feed = ctx.stock_feed_factory() if ctx.stock_feed_factory else None
    if feed is None:
        return

    async def handle(result: Any) -> list[Any]:
        now = utcnow()
        return [await ctx.topics.stock_events.send(
            key=level.sku, value=ErpStockChanged.observed(level, now)) for level in result.levels]

    register_feed(ctx, FEED, ctx.settings.erp_stock_poll_interval_s, feed, handle)
