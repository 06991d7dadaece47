"""Shopify's status table (fulfillment_status <-> canonical)."""

from __future__ import annotations

from retail_sync.connectors.shopify import mapper
from retail_sync.streams.status import StatusTable, table

TABLE: StatusTable = table(
    mapper.CHANNEL, mapper.FULFILLMENT_STATUS_TO_CANONICAL, mapper.CANONICAL_TO_FULFILLMENT_STATUS,
    # refunds are financial_status, delivery is per fulfillment, pending is not a fulfillment state
    {"pending", "delivered", "partially_refunded", "refunded", "unfulfillable"})
