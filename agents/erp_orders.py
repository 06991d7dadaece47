"""The ERP's own order changes: sales orders it cancelled (fraud, no stock) reach the order as
ErpOrderCancelled; the order agent cancels in the warehouse and on the marketplace (or refuses,
recorded, when the order already shipped). Polled on the leader's timer (``erp-orders`` ticks,
``erp_order_poll_interval_s``, agents.feeds). Our own cancellations come back through this feed
too and are idempotent repeats for the order agent."""

from __future__ import annotations

from typing import Any

from retail_sync.agents.deps import AgentDeps
from retail_sync.agents.feeds import register_feed
from retail_sync.streams.events import ErpOrderCancelled
from retail_sync.streams.models import utcnow

FEED = "erp-orders"


def register(ctx: AgentDeps) -> None:
    feed = ctx.erp_order_feed_factory() if ctx.erp_order_feed_factory else None
    if feed is None:
        return

    async def handle(result: Any) -> list[Any]:
        sent = []
        for change in result.changes:
            if change.status != "Cancelled" or not change.order_key:
                continue
            sent.append(await ctx.topics.order_events.send(key=change.order_key, value=ErpOrderCancelled(
                order_key=change.order_key, erp_sales_order=change.erp_sales_order,
                reason=change.reason or "cancelled in the ERP", at=utcnow())))
        return sent

    register_feed(ctx, FEED, ctx.settings.erp_order_poll_interval_s, feed, handle)
