"""Walmart's reconciliation reader: ``GET /v3/orders?createdStartDate=`` (every ``nextCursor``
page)."""

from __future__ import annotations

from datetime import datetime
from functools import partial
from typing import Any

from retail_sync.connectors.reconcile_types import JSON, ChannelRead, Mapper, map_into, retrying
from retail_sync.connectors.walmart.client import (
    ORDERS_PATH,
    WalmartOrdersClient,
    walmart_budgets,
    walmart_date,
)
from retail_sync.connectors.walmart.settings import WalmartSettings


def configured(settings: Any) -> bool:
    return getattr(settings, "walmart_base_url", None) is not None


async def read_walmart(settings: WalmartSettings, mapper: Mapper, since: datetime) -> ChannelRead:
    assert settings.walmart_base_url is not None
    client = WalmartOrdersClient(str(settings.walmart_base_url), settings.walmart_client_id,
                                 settings.walmart_client_secret.get_secret_value(),
                                 svc_name=settings.walmart_svc_name,
                                 budgets=walmart_budgets(settings))  # fmt: skip
    params = {"createdStartDate": walmart_date(since), "limit": "100"}
    read, seen = ChannelRead(), set()
    cursor: str | None = None
    try:
        while True:
            page = await retrying(partial(client.list_page, ORDERS_PATH, "orders",
                                          params=params if cursor is None else None, cursor=cursor))
            for order in page.orders:
                po = str(order.get("purchaseOrderId"))
                if po in seen:
                    continue
                seen.add(po)
                map_into(read, "walmart", po, order, mapper, _walmart_cancelled_lines(order))
            cursor = page.next_cursor
            if not cursor:
                return read
    finally:
        await client.close()


def _walmart_cancelled_lines(order: JSON) -> bool:
    """Some units of some line are Cancelled."""
    lines = (order.get("orderLines") or {}).get("orderLine") or []
    return any(isinstance(s, dict) and s.get("status") == "Cancelled"
               for line in lines if isinstance(line, dict)
               for s in (line.get("orderLineStatuses") or {}).get("orderLineStatus") or [])  # fmt: skip
