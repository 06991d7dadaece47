"""Walmart's status table (order line status <-> canonical)."""

from __future__ import annotations

from retail_sync.connectors.walmart import mapper
from retail_sync.streams.status import StatusTable, table

TABLE: StatusTable = table(
    mapper.CHANNEL, mapper.LINE_STATUS_TO_CANONICAL, mapper.CANONICAL_TO_LINE_STATUS,
    # partial states are order-level mixes of line statuses, not a line status
    {"partially_shipped", "partially_refunded", "unfulfillable"})
