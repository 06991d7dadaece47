"""The order's state: what the order agent keeps per order (table ``orders``, codec
``rs.order_state``), built from the events (``streams.events``) by ``streams.rules.lifecycle``
and ``streams.rules.aftersale``."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from retail_sync.streams.events import CancelRequested
from retail_sync.streams.models import (
    BackorderFulfilment,
    Frozen,
    Order,
    OrderStatus,
    RefundRecord,
    ShipmentRecord,
    UtcDatetime,
    with_order_json,
)


class TimelineEntry(Frozen):
    event: str
    system: str
    at: UtcDatetime
    detail: str | None = None
    since_previous_s: float | None = None  # latency from the previous step


class Correlation(Frozen):
    """Every id this order is known by, in every system."""

    marketplace_order_id: str
    marketplace_order_name: str | None = None
    erp_sales_order: str | None = None
    wms_fulfilment_id: str | None = None
    delivery_ids: list[str] = Field(default_factory=list)


class LineStock(Frozen):
    """One order line's reservation as the stock agent answered it."""

    sku: str
    requested: int
    reserved: int
    tracked: bool = True


StockDecision = Literal["accepted", "partial", "backorder", "cancelled"]


class OrderState(Frozen):
    order_key: str
    channel: str
    status: OrderStatus
    order: Order
    correlation: Correlation
    timeline: list[TimelineEntry]
    received_at: UtcDatetime
    erp_confirmed_at: UtcDatetime | None = None
    stock: dict[str, LineStock] = Field(default_factory=dict)  # line_id -> its reservation
    stock_decision: StockDecision | None = None
    stock_policy: str | None = None  # the channel policy that decided a shortfall
    shipments: dict[str, ShipmentRecord] = Field(default_factory=dict)  # by shipment id
    refunds: dict[str, RefundRecord] = Field(default_factory=dict)  # by refund id
    backorders: dict[str, BackorderFulfilment] = Field(default_factory=dict)  # by release id
    cancel: CancelRequested | None = None  # a cancellation waiting for the ERP's answer
    cancel_reason: str | None = None

    def wire_json(self) -> bytes:
        """What ``model_dump_json`` writes (the codec's encoding of this record), with the order
        written once per order object (``streams.models.order_json``), not again for every state
        of it."""
        return with_order_json(self, self.order)
