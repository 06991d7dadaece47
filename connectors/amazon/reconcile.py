"""Amazon's reconciliation reader: ``getOrders`` with ``CreatedAfter`` (every NextToken page) and
``getOrderItems`` per order, paced by the rate Amazon reports; orders awaiting payment have no
amounts and are skipped."""

from __future__ import annotations

from datetime import datetime
from functools import partial
from typing import Any

from retail_sync.connectors.amazon.client import AmazonOrdersClient, amazon_time
from retail_sync.connectors.amazon.mapper import AWAITING_PAYMENT
from retail_sync.connectors.amazon.plan import AMAZON_PLANS
from retail_sync.connectors.amazon.settings import AmazonSettings
from retail_sync.connectors.ratelimit import budgets_for
from retail_sync.connectors.reconcile_types import ChannelRead, Mapper, MarketplaceOrder, map_into, retrying
from retail_sync.streams.models import order_key


def configured(settings: Any) -> bool:
    return getattr(settings, "amazon_base_url", None) is not None


async def read_amazon(settings: AmazonSettings, mapper: Mapper, since: datetime) -> ChannelRead:
    assert settings.amazon_base_url is not None
    client = AmazonOrdersClient(str(settings.amazon_base_url),
                                settings.amazon_access_token.get_secret_value(),
                                budgets=budgets_for(settings, "amazon", AMAZON_PLANS))
    ids = [m for m in settings.amazon_marketplace_ids.split(",") if m]
    read, token = ChannelRead(), None
    try:
        while True:
            page = await retrying(partial(
                client.get_orders, marketplace_ids=ids,
                created_after=None if token else amazon_time(since), next_token=token))
            for order in page.orders:
                order_id = str(order.get("AmazonOrderId"))
                if order.get("OrderStatus") in AWAITING_PAYMENT:
                    read.pending += 1
                    continue
                items = await retrying(partial(client.get_order_items, order_id))
                before = len(read.unmapped)
                zeroed = any(i.get("QuantityOrdered") == 0 for i in items)  # cancelled items
                map_into(read, "amazon", order_id, {"order": order, "items": items}, mapper, zeroed)
                if len(read.unmapped) > before and order.get("OrderStatus") == "Canceled":
                    read.unmapped.pop()  # every item zeroed: Amazon's cancelled order
                    read.orders.append(MarketplaceOrder(order_key("amazon", order_id), "amazon",
                                                        "cancelled", None, raw_status="Canceled"))
            token = page.next_token
            if not token:
                return read
    finally:
        await client.close()
