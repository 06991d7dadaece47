"""Amazon's status table (OrderStatus <-> canonical)."""

from __future__ import annotations

from retail_sync.connectors.amazon import mapper
from retail_sync.streams.status import StatusTable, table

TABLE: StatusTable = table(mapper.CHANNEL, mapper.STATUS_TO_CANONICAL, mapper.CANONICAL_TO_STATUS,
                           {"delivered", "partially_refunded", "refunded"})
