"""Shopify's reconciliation reader: ``GET /admin/api/{v}/orders.json?status=any&created_at_min=``
(every page, paced by the call-limit bucket; ``outbound.list_orders``)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from retail_sync.connectors.reconcile_types import JSON, ChannelRead, Mapper, map_into
from retail_sync.connectors.shopify.mapper import FULFILLMENT_STATUS_TO_CANONICAL, UNFULFILLED
from retail_sync.connectors.shopify.outbound import ShopifyOutbound, list_orders
from retail_sync.connectors.shopify.settings import ShopifySettings
from retail_sync.streams.models import Order

REFUNDED = frozenset({"partially_refunded", "refunded"})


def shopify_status(order: Order) -> str:
    """The canonical status of a mapped Shopify order. Cancelled when ``cancelled_at`` is set.
    Shopify's mapper copies Shopify's own words: ``fulfilled`` -> shipped, ``partial`` ->
    partially_shipped, ``restocked`` -> cancelled, else accepted; once something shipped, a
    ``financial_status`` of refunded / partially_refunded wins."""
    if order.cancelled_at is not None:
        return "cancelled"
    word = FULFILLMENT_STATUS_TO_CANONICAL.get(order.fulfillment_status or UNFULFILLED, "accepted")
    if word in ("shipped", "partially_shipped") and order.financial_status in REFUNDED:
        return str(order.financial_status)
    return word


def configured(settings: Any) -> bool:
    return getattr(settings, "shopify_admin_base_url", None) is not None


async def read_shopify(settings: ShopifySettings, mapper: Mapper, since: datetime) -> ChannelRead:
    outbound = ShopifyOutbound.from_settings(settings)
    assert outbound is not None
    read = ChannelRead()
    try:
        raw = await list_orders(outbound, created_at_min=since.isoformat(timespec="seconds"))
    finally:
        await outbound.close()
    for order in raw:
        map_into(read, "shopify", str(order.get("id")), order, mapper,
                 _shopify_partly_cancelled(order), status=shopify_status)
    read.orders = [o for o in read.orders if o.created_at is None or o.created_at >= since]
    return read


def _shopify_partly_cancelled(order: JSON) -> bool:
    """Units refunded with ``restock_type: cancel`` while the order itself is not cancelled."""
    if order.get("cancelled_at"):
        return False
    return any(isinstance(item, dict) and item.get("restock_type") == "cancel"
               for refund in order.get("refunds") or [] if isinstance(refund, dict)
               for item in refund.get("refund_line_items") or [])  # fmt: skip
