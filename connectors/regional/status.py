"""The regional marketplace's status table (file status codes <-> canonical)."""

from __future__ import annotations

from retail_sync.connectors.regional import mapper
from retail_sync.streams.status import StatusTable, table

# Regional files are inbound only; these are the codes we would write in a regional file export
# (the canonical spelling in upper case where the marketplace has one, else its short code).
REGIONAL_CODE_FOR: dict[str, str] = {
    "pending": "NEW",
    "accepted": "PAID",
    "shipped": "SHIPPED",
    "cancelled": "CXL",
}

TABLE: StatusTable = table(
    mapper.CHANNEL, mapper.STATUS_CODES, REGIONAL_CODE_FOR,
    {"partially_shipped", "delivered", "partially_refunded", "refunded", "unfulfillable"})
