"""Contracts between the engine and the systems it talks to: the Protocols each connector
implements and the value types they exchange. One package per system (connectors/<system>/)
implements them; connectors/plugin.py registers them. The units of an order line (in a shipment,
a return, a cancellation, a warehouse release) are ``streams.models.LineUnits``, the type the
commands carry; an ERP's stock position is ``streams.models.StockLevel``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from retail_sync.streams.models import LineUnits, Order, StockLevel


@dataclass(frozen=True, slots=True)
class ErpPostResult:
    """What the ERP said about a sales-order post."""

    erp_sales_order: str  # the ERP's document number, e.g. SAL-ORD-2026-00001
    created: bool  # False when the ERP answered with an order it already had (idempotent repeat)
    created_at: datetime | None = None  # when the ERP created the order (UTC), if it says


@dataclass(frozen=True, slots=True)
class SalesOrderPost:
    """One order of a bulk post (``BulkSalesOrders``): what ``create_sales_order`` takes."""

    order_key: str
    order: Order
    backorders: Mapping[str, int] | None = None


class BulkSalesOrders(Protocol):
    """An ERP connector that can also post many sales orders in a few requests (issue 16)."""

    async def create_sales_orders(self, posts: Sequence[SalesOrderPost]) -> list[ErpPostResult]:
        """Each post's Sales Order, in the order of ``posts``: the one the ERP holds under its
        order key, else a new one, exactly one either way. All or nothing: RetryableError when
        the ERP could not be reached or asked to wait (retry the whole call), PermanentError
        when it refused any of them (post them one by one to learn which)."""
        ...


class ErpConnector(Protocol):
    """An ERP that accepts sales orders, idempotently on the marketplace order reference."""

    async def create_sales_order(
        self, order_key: str, order: Order, *, backorders: Mapping[str, int] | None = None
    ) -> ErpPostResult:
        """Create (or find) the sales order for ``order_key``, submitted so the ERP reserves its
        stock; ``backorders`` maps a line_id to its units accepted without stock.

        Raises RetryableError / RateLimitedError for transient failures and PermanentError when
        the ERP refuses the document.
        """
        ...

    # --- after the order (issue 5) --------------------------------------------------------------

    async def post_shipment(self, order_key: str, erp_sales_order: str,
                            shipment: Shipment) -> ErpShipmentResult:
        """Record a warehouse shipment against the sales order: a submitted Delivery Note (stock
        leaves, the order's reservation is freed) and the Sales Invoice the ERP raises for it.
        Idempotent on ``shipment.shipment_id``."""
        ...

    async def cancel_sales_order(self, erp_sales_order: str, reason: str) -> None:
        """Cancel the sales order (its reservation is freed). Idempotent; PermanentError if the
        ERP refuses (e.g. something was already delivered)."""
        ...

    async def post_return(self, order_key: str, erp_sales_order: str,
                          refund: Refund) -> ErpReturnResult:
        """Goods back and money back: a return Delivery Note for ``refund.lines`` with
        ``restock`` (stock back on hand when the ERP books it) and a Credit Note (return Sales
        Invoice) for ``refund.amount``. Idempotent on ``refund.refund_id``."""
        ...

    async def close(self) -> None:
        """Release the connection(s) it holds (the dispatcher calls it when it is done)."""
        ...


@dataclass(frozen=True, slots=True)
class Shipment:
    """A warehouse shipment: what left, how, when. ``carrier`` is canonical (UPS, USPS, FEDEX,
    DHL, OTHER); each marketplace connector translates it into that channel's carrier codes."""

    shipment_id: str  # the WMS's reference, stable: the idempotency key everywhere downstream
    order_key: str
    lines: Sequence[LineUnits]
    carrier: str
    tracking_number: str
    shipped_at: str  # ISO 8601, UTC


@dataclass(frozen=True, slots=True)
class ErpShipmentResult:
    delivery_note: str
    sales_invoice: str | None  # the invoice the ERP raised for it (None if it raises none)
    created: bool  # False: an idempotent repeat


@dataclass(frozen=True, slots=True)
class Refund:
    """Money (and possibly goods) back to the buyer for some lines of an order."""

    refund_id: str  # stable: the marketplace's refund/return id, or ours
    lines: Sequence[LineUnits]
    amount: str  # decimal string, in the order's currency
    currency: str
    reason: str
    restock: bool  # goods came back and return to stock


@dataclass(frozen=True, slots=True)
class ErpReturnResult:
    return_delivery_note: str | None  # None when nothing came back (refund only)
    credit_note: str
    created: bool


@dataclass(frozen=True, slots=True)
class ErpOrderChange:
    """A sales order the ERP changed on its own (cancelled for fraud or stock, closed)."""

    erp_sales_order: str
    order_key: str  # the order's po_no
    status: str  # ERPNext status, e.g. "Cancelled"
    reason: str | None
    modified: str


@dataclass(frozen=True, slots=True)
class ErpOrderFeedResult:
    changes: Sequence[ErpOrderChange]
    cursor: str | None


class ErpOrderFeed(Protocol):
    """Sales orders changed in the ERP since ``cursor`` (polled by ``modified``, like stock)."""

    async def poll(self, cursor: str | None) -> ErpOrderFeedResult: ...

    async def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class WmsEvent:
    """What the warehouse reports: a shipment, or goods received back from a return."""

    kind: str  # "shipment" | "return_received"
    shipment: Shipment | None = None
    return_id: str | None = None  # for return_received: the refund/return id it was announced as
    order_key: str | None = None
    lines: Sequence[LineUnits] = ()
    at: str = ""  # ISO 8601, UTC


@dataclass(frozen=True, slots=True)
class WmsFeedResult:
    events: Sequence[WmsEvent]
    cursor: str | None


class WmsConnector(Protocol):
    """The warehouse: takes fulfilment orders, announces returns, reports what happened."""

    async def create_fulfilment_order(self, order_key: str, erp_sales_order: str,
                                      lines: Sequence[LineUnits],
                                      ship_to: Mapping[str, Any] | None,
                                      reference: str | None = None, *,
                                      shipping: Mapping[str, Any] | None = None,
                                      line_details: Mapping[str, Mapping[str, Any]] | None = None,
                                      ) -> str:
        """Release (part of) the order for picking under ``reference`` (default: the order
        key; a backorder release has its own); returns the WMS's id for it. Idempotent on the
        reference. ``shipping``: method, ship-by/deliver-by, priority, gift...; ``line_details``
        by line id: title, properties (engraving), condition."""
        ...

    async def cancel_fulfilment_order(self, reference: str) -> bool:
        """Stop it if not shipped yet; False when (part of) it already shipped."""
        ...

    async def expect_return(self, order_key: str, return_id: str,
                            lines: Sequence[LineUnits]) -> None:
        """Tell the warehouse goods are coming back (idempotent on ``return_id``)."""
        ...

    async def poll(self, cursor: str | None) -> WmsFeedResult:
        """Events since ``cursor``, oldest first; restartable (repeats allowed, no skips)."""
        ...

    async def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class PolledOrder:
    """One order read from a channel that we poll, as the channel's mapper expects it."""

    marketplace_order_id: str
    body: str  # JSON text handed to the channel's mapper by the ingest agent
    delivery_id: str  # identifies this version of the order, e.g. "<id>@<last update>"


@dataclass(frozen=True, slots=True)
class PollResult:
    orders: Sequence[PolledOrder]
    cursor: str | None  # where the next poll starts; None keeps the previous cursor
    pause_s: float | None = None  # the channel asked us to wait (throttled part-way)


class OrderSource(Protocol):
    """A channel that delivers orders when asked (polling API, batch files).

    ``poll`` must be restartable from ``cursor``: the poller stores the returned cursor only after
    every polled order is on Kafka, so after a crash the same orders come again (and are
    deduplicated by order key downstream) but none is skipped.
    """

    channel: str

    async def poll(self, cursor: str | None) -> PollResult: ...

    async def after_persist(self, orders: Sequence[PolledOrder]) -> None:
        """Called once the orders are on Kafka (e.g. Walmart-style acknowledgement)."""
        ...

    async def close(self) -> None: ...


# --- stock: the ERP's positions in, absolute quantities and cancellations out -----------------


@dataclass(frozen=True, slots=True)
class StockFeedResult:
    levels: Sequence[StockLevel]
    cursor: str | None  # where the next poll starts; None keeps the previous cursor


class StockFeed(Protocol):
    """The ERP's stock change feed: every position changed since ``cursor``, oldest first.

    May repeat positions at the cursor's instant (the consumer ignores a position not newer
    than the one it holds), must never skip one."""

    async def poll(self, cursor: str | None) -> StockFeedResult: ...

    async def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class QuantityUpdate:
    """Set the marketplace's sellable quantity of ``sku`` to ``quantity`` (absolute, >= 0)."""

    sku: str
    quantity: int


@dataclass(frozen=True, slots=True)
class PushReport:
    """What a marketplace said about one inventory push."""

    applied: Sequence[str]  # SKUs the marketplace took (its quantity is now the one we sent)
    failed: Mapping[str, str] = field(default_factory=dict)  # SKU -> reason (permanent)
    mechanism: str = ""  # e.g. "listings-patch", "JSON_LISTINGS_FEED", "inventory-feed"
    reference: str | None = None  # the marketplace's id of the call (feed id), if any


class ChannelOutbound(Protocol):
    """What the engine tells one marketplace: sellable quantities and seller cancellations.

    Both raise the sync error hierarchy (connectors.errors): RetryableError / RateLimitedError
    for transient failures, PermanentError when the marketplace refuses the request."""

    channel: str

    async def push_inventory(self, updates: Sequence[QuantityUpdate]) -> PushReport:
        """Set every update's absolute quantity, in as few calls as the marketplace allows
        (its bulk mechanism where it has one). One update per SKU (already coalesced)."""
        ...

    async def cancel_lines(
        self, marketplace_order_id: str, lines: Sequence[LineUnits], *, whole_order: bool,
        reason: str,
    ) -> None:
        """Cancel the order (``whole_order``) or the given quantities of its lines, as the
        seller, for lack of stock. Idempotent: cancelling what is already cancelled is fine."""
        ...

    async def confirm_shipment(self, marketplace_order_id: str, shipment: Shipment) -> None:
        """Tell the marketplace these lines shipped, with carrier (translated to the channel's
        codes) and tracking number. Idempotent on ``shipment.shipment_id``."""
        ...

    async def refund(self, marketplace_order_id: str, refund: Refund) -> None:
        """Refund the buyer on the marketplace. Idempotent on ``refund.refund_id``."""
        ...

    async def close(self) -> None: ...
