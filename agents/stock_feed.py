"""ERP stock feed poller: reads the ERP's stock positions changed since the stored cursor and
sends each to the stock agent (stock-events, keyed by SKU).

The leader's timer sends a PollTick for the pseudo-channel ``erp-stock`` every
``erp_stock_poll_interval_s``; this agent (like the order poller, on poll-ticks) polls, waits for
the broker to acknowledge every position, and only then stores the cursor in poll-cursors. The
feed repeats the positions at the cursor's instant and the stock agent ignores a position not
newer than the one it holds, so a crash repeats work but never skips a change.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from agents.exceptions import record_exception
from connectors.base import StockFeed
from connectors.errors import PermanentError, RetryableError
from retail_sync.context import Context
from streams.models import ExceptionKind, PollTick, utcnow
from streams.stock import ErpStockChanged

log = logging.getLogger(__name__)
FEED = "erp-stock"


def register(ctx: Context) -> None:
    feed = ctx.stock_feed_factory() if ctx.stock_feed_factory else None
    if feed is None:
        return
    resume_at = [0.0]

    @ctx.app.timer(ctx.settings.erp_stock_poll_interval_s, on_leader=True)
    async def stock_tick() -> None:
        await ctx.topics.poll_ticks.send(key=FEED, value=PollTick(channel=FEED,
                                                                   requested_at=utcnow()))

    @ctx.app.agent(ctx.topics.poll_ticks, name=f"{ctx.settings.app_id}.stock-feed")
    async def stock_feed(stream: Any) -> None:
        async for command in stream:
            if command.channel != FEED or time.monotonic() < resume_at[0]:
                continue
            pause = await poll_once(ctx, feed)
            if pause:
                resume_at[0] = time.monotonic() + pause

    @ctx.app.on_before_shutdown.connect  # type: ignore[misc]
    async def _close(sender: Any, **kwargs: Any) -> None:
        await feed.close()


async def poll_once(ctx: Context, feed: StockFeed) -> float | None:
    state = dict(ctx.tables.cursors.get(FEED) or {})
    try:
        result = await feed.poll(state.get("cursor"))
    except RetryableError as exc:
        ctx.metrics.polls.labels(channel=FEED, outcome="retry").inc()
        log.warning("ERP stock feed postponed: %s", exc)
        return exc.retry_after
    except PermanentError as exc:
        ctx.metrics.polls.labels(channel=FEED, outcome="permanent").inc()
        await record_exception(ctx, kind=ExceptionKind.POLL, exc=exc, payload=exc.body,
                               source_key=FEED)
        return ctx.settings.erp_stock_poll_interval_s * 10
    now = utcnow()
    pending = [await ctx.topics.stock_events.send(key=level.sku, value=ErpStockChanged(
        sku=level.sku, warehouse=level.warehouse, actual_qty=level.actual_qty,
        reserved_qty=level.reserved_qty, modified=level.modified, observed_at=now))
        for level in result.levels]
    await asyncio.gather(*pending)
    ctx.metrics.polls.labels(channel=FEED, outcome="ok").inc()
    if result.cursor != state.get("cursor") or not state:
        state.update(cursor=result.cursor or state.get("cursor"), polled_at=now.isoformat(),
                     positions=int(state.get("positions", 0)) + len(result.levels))
        ctx.tables.cursors[FEED] = state
    return None
