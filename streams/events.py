"""Events: what happened, as the agents tell each other; and the unions of the two topics that
carry events (the few commands given on the same topics are in ``streams.commands``).

| topic         | key       | value                                                          |
|---------------|-----------|----------------------------------------------------------------|
| order-events  | order_key | OrderEvent: the order events below and the commands ExpireOrder, |
|               |           | RetryErpPost, RetryWmsRelease                                  |
| stock-events  | SKU       | StockEvent: ErpStockChanged, InventoryPushed and the commands  |
|               |           | ReserveStock, ReleaseStock, CommitStock, ForgetLines           |

ERP times (a position's change, a sales order's creation) are ``ErpTime`` values
(``streams.erp_time``): datetimes the ERP's connector parsed, compared as values; on the wire
still the text ``YYYY-MM-DD HH:MM:SS.ffffff`` (UTC) they always were.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import Field, TypeAdapter

from retail_sync.streams.commands import (
    MAX_BATCH_ITEMS,
    CommitStock,
    ExpireOrder,
    ForgetLines,
    ReleaseStock,
    ReserveStock,
    RetryErpPost,
    RetryWmsRelease,
    StockBatch,
)
from retail_sync.streams.erp_time import ErpTime
from retail_sync.streams.models import (
    Frozen,
    Order,
    RefundRecord,
    ShipmentRecord,
    Sku,
    StockLevel,
    Units,
    UtcDatetime,
)

# --- order-events (keyed by order_key) ------------------------------------------------------


class OrderReceived(Frozen):
    kind: Literal["order_received"] = "order_received"
    order_key: str
    order: Order
    delivery_id: str
    received_at: UtcDatetime


class ErpOrderPosted(Frozen):
    kind: Literal["erp_order_posted"] = "erp_order_posted"
    order_key: str
    erp_sales_order: str
    erp_created: ErpTime | None = None  # when the ERP created the sales order
    created: bool  # False when the ERP answered with an order it already had
    posted_at: UtcDatetime
    attempts: int


class ErpOrderFailed(Frozen):
    kind: Literal["erp_order_failed"] = "erp_order_failed"
    order_key: str
    reason: str
    failed_at: UtcDatetime
    attempts: int


class LineAllocation(Frozen):
    line_id: str
    requested: int
    reserved: int  # == requested for an untracked SKU


class StockAnswered(Frozen):
    """The stock agent's answer for the lines of ``order_key`` that are for ``sku``."""

    kind: Literal["stock_answered"] = "stock_answered"
    order_key: str
    sku: str
    tracked: bool  # False: the ERP keeps no stock of it; the lines are accepted as they are
    lines: list[LineAllocation]
    at: UtcDatetime


class MarketplaceNotified(Frozen):
    """The marketplace-outbound agent did (or could not do) what it was asked for an order."""

    kind: Literal["marketplace_notified"] = "marketplace_notified"
    order_key: str
    action: str  # "cancel", "ship", "refund"
    ok: bool
    detail: str
    at: UtcDatetime
    reference: str | None = None  # the shipment or refund id it was about


class FulfilmentReleased(Frozen):
    kind: Literal["fulfilment_released"] = "fulfilment_released"
    order_key: str
    wms_reference: str
    at: UtcDatetime
    reference: str | None = None  # ours, for a backorder release (None: the order's first)


class BackorderReleased(Frozen):
    """From the stock agent: goods arrived for units of ``order_key`` accepted without stock."""

    kind: Literal["backorder_released"] = "backorder_released"
    order_key: str
    sku: str
    release_id: str
    lines: dict[str, int]  # line_id -> units
    waited_s: float = 0.0
    at: UtcDatetime


class FulfilmentCancelled(Frozen):
    """The warehouse's answer to our cancellation: stopped (ok) or already shipped."""

    kind: Literal["fulfilment_cancelled"] = "fulfilment_cancelled"
    order_key: str
    ok: bool
    detail: str
    at: UtcDatetime


class ShipmentReported(Frozen):
    """The warehouse shipped (some of) the order."""

    kind: Literal["shipment_reported"] = "shipment_reported"
    order_key: str
    shipment: ShipmentRecord
    at: UtcDatetime


class ErpShipmentPosted(Frozen):
    kind: Literal["erp_shipment_posted"] = "erp_shipment_posted"
    order_key: str
    shipment_id: str
    delivery_note: str
    sales_invoice: str | None
    at: UtcDatetime


class CancelRequested(Frozen):
    """Someone other than the marketplace asks to cancel: the ERP (fraud, no stock) or an
    operator. A marketplace's own cancellation arrives as an OrderReceived with cancelled_at."""

    kind: Literal["cancel_requested"] = "cancel_requested"
    order_key: str
    by: str  # "erp" | "operator" | "buyer" (a buyer's request the seller must carry out)
    reason: str
    at: UtcDatetime
    #: an admin action's caller (token name) and request id (X-Request-Id), for the timeline
    actor: str | None = None
    request_id: str | None = None


class ErpOrderCancelled(Frozen):
    """The ERP confirmed the sales order is cancelled (our request, or its own doing)."""

    kind: Literal["erp_order_cancelled"] = "erp_order_cancelled"
    order_key: str
    erp_sales_order: str
    reason: str
    at: UtcDatetime


class ReturnRequested(Frozen):
    kind: Literal["return_requested"] = "return_requested"
    order_key: str
    refund: RefundRecord
    #: an admin action's caller (token name) and request id (X-Request-Id), for the timeline
    actor: str | None = None
    request_id: str | None = None


class ReturnReceived(Frozen):
    kind: Literal["return_received"] = "return_received"
    order_key: str
    refund_id: str
    at: UtcDatetime


class ErpReturnPosted(Frozen):
    kind: Literal["erp_return_posted"] = "erp_return_posted"
    order_key: str
    refund_id: str
    credit_note: str
    return_delivery_note: str | None
    at: UtcDatetime


OrderEvent = Annotated[
    OrderReceived | ErpOrderPosted | ErpOrderFailed | StockAnswered | MarketplaceNotified
    | FulfilmentReleased | FulfilmentCancelled | ShipmentReported | ErpShipmentPosted
    | CancelRequested | BackorderReleased
    | ErpOrderCancelled | ReturnRequested | ReturnReceived | ErpReturnPosted | ExpireOrder
    | RetryErpPost | RetryWmsRelease,
    Field(discriminator="kind"),
]
ORDER_EVENT = TypeAdapter(OrderEvent)


class OrderEvents(Frozen):
    """Several order events in one record, for orders of one order-events partition (issue 16):
    the stock agent's answers, the ERP dispatch agent's and the warehouse agent's results, one
    record per order partition per batch instead of one per order and event. Keyed by the first
    event's order key (so every event's order is on the record's partition); the order agent
    applies them in order."""

    kind: Literal["order_events"] = "order_events"
    events: list[OrderEvent] = Field(min_length=1, max_length=MAX_BATCH_ITEMS)


#: what order-events carries: one event, or a batch of them
OrderRecord = Annotated[OrderEvent | OrderEvents, Field(discriminator="kind")]
ORDER_RECORD = TypeAdapter(OrderRecord)


# --- stock-events (keyed by SKU) ------------------------------------------------------------


class ErpStockChanged(StockLevel):
    """The ERP's position of ``sku`` in ``warehouse`` (ERPNext ``Bin``), as read from its feed."""

    # the position's fields are StockLevel's (sku, warehouse, actual_qty, reserved_qty, modified)
    kind: Literal["erp_stock_changed"] = "erp_stock_changed"
    observed_at: UtcDatetime

    @classmethod
    def observed(cls, level: StockLevel, at: datetime) -> ErpStockChanged:
        """``level`` as read from the ERP's feed at ``at``."""
        return cls(sku=level.sku, warehouse=level.warehouse, actual_qty=level.actual_qty,
                   reserved_qty=level.reserved_qty, modified=level.modified, observed_at=at)


class InventoryPushed(Frozen):
    """The pusher's report: what ``channel`` was told about ``sku``, and whether it took it."""

    kind: Literal["inventory_pushed"] = "inventory_pushed"
    sku: Sku
    channel: str
    quantity: Units
    pushed_at: UtcDatetime
    ok: bool
    mechanism: str = ""
    reference: str | None = None
    error: str | None = None


StockEvent = Annotated[
    ErpStockChanged | ReserveStock | ReleaseStock | CommitStock | InventoryPushed | ForgetLines,
    Field(discriminator="kind"),
]
STOCK_EVENT = TypeAdapter(StockEvent)
#: what stock-events carries: one event, or a batch of the order agent's commands
StockTopicRecord = Annotated[StockEvent | StockBatch, Field(discriminator="kind")]
STOCK_TOPIC_RECORD = TypeAdapter(StockTopicRecord)
