"""Stock records: what moves on the stock-events, inventory-updates and channel-commands topics,
and the per-SKU state the stock agent keeps.

| topic             | key                | value                                  |
|-------------------|--------------------|----------------------------------------|
| stock-events      | SKU                | StockEvent (ERP position, reserve, release, commit, pushed) |
| inventory-updates.<channel> | SKU      | InventoryUpdate (absolute quantity to offer)                |
| channel-commands.<channel>  | order_key | MarketplaceCancel (and the after-order commands)          |

Quantities are whole units. ERP times (a position's change, a sales order's creation) are
``ErpTime`` values (``streams.erp_time``): datetimes the ERP's connector parsed, compared as
values; on the wire still the text ``YYYY-MM-DD HH:MM:SS.ffffff`` (UTC) they always were.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, TypeAdapter

from retail_sync.streams.erp_time import ErpTime
from retail_sync.streams.models import Frozen, LineAllocation, UtcDatetime  # noqa: F401 (LineAllocation re-exported)

Sku = Annotated[str, Field(min_length=1, max_length=128)]
Units = Annotated[int, Field(ge=0, le=10_000_000)]


# --- stock-events (keyed by SKU): everything that changes a SKU's stock ----------------------


class ErpStockChanged(Frozen):
    """The ERP's position of ``sku`` in ``warehouse`` (ERPNext ``Bin``), as read from its feed."""

    kind: Literal["erp_stock_changed"] = "erp_stock_changed"
    sku: Sku
    warehouse: str
    actual_qty: int
    reserved_qty: int
    modified: ErpTime  # when the ERP changed it
    observed_at: UtcDatetime


class LineRequest(Frozen):
    line_id: str
    quantity: int = Field(gt=0)


class ReserveStock(Frozen):
    """Reserve each line of ``order_key`` that is for ``sku`` (idempotent per order line)."""

    kind: Literal["reserve_stock"] = "reserve_stock"
    sku: Sku
    order_key: str
    channel: str
    lines: list[LineRequest] = Field(min_length=1)
    requested_at: UtcDatetime


class ReleaseStock(Frozen):
    """Give back the reservations of ``order_key``'s lines ``line_ids`` on ``sku``."""

    kind: Literal["release_stock"] = "release_stock"
    sku: Sku
    order_key: str
    line_ids: list[str] = Field(min_length=1)
    reason: str
    at: UtcDatetime


class CommitStock(Frozen):
    """The ERP confirmed ``order_key``: its reservations on ``sku`` are now the ERP's to hold.

    They stay counted here until the ERP's own position of the order's warehouse is at least as
    new as the sales order (``erp_created``), from then on the ERP's ``reserved_qty`` has them."""

    kind: Literal["commit_stock"] = "commit_stock"
    sku: Sku
    order_key: str
    line_ids: list[str] = Field(min_length=1)
    erp_sales_order: str
    erp_created: ErpTime | None = None
    at: UtcDatetime
    #: line_id -> units the order was accepted with but could not reserve (policy backorder):
    #: they wait here for goods to arrive, then go to the warehouse (``BackorderReleased``)
    backorders: dict[str, int] = Field(default_factory=dict)


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


class ForgetLines(Frozen):
    """Command to the stock agent: the order left the hot tables (tables/retention.py); delete
    its line records on this SKU that hold nothing (consumed, released, untracked)."""

    kind: Literal["forget_lines"] = "forget_lines"
    sku: Sku
    order_key: str
    line_ids: list[str] = Field(min_length=1)
    at: UtcDatetime


StockEvent = Annotated[
    ErpStockChanged | ReserveStock | ReleaseStock | CommitStock | InventoryPushed | ForgetLines,
    Field(discriminator="kind"),
]
STOCK_EVENT = TypeAdapter(StockEvent)


# --- answers and commands to other agents -----------------------------------------------------


class InventoryUpdate(Frozen):
    """Offer ``quantity`` of ``sku`` on ``channel`` (absolute). ``cause_at`` is when the change
    behind it happened (the ERP's change time, or the order event's), for propagation latency."""

    channel: str
    sku: Sku
    quantity: Units
    cause: Literal["erp", "order"]
    cause_at: UtcDatetime
    computed_at: UtcDatetime


class CancelLineRequest(Frozen):
    line_id: str
    sku: str
    quantity: int = Field(gt=0)


class MarketplaceCancel(Frozen):
    """Command to the marketplace-outbound agent: cancel (some of) an order as the seller."""

    kind: Literal["cancel"] = "cancel"
    order_key: str
    channel: str
    marketplace_order_id: str
    whole_order: bool
    lines: list[CancelLineRequest]
    reason: str
    requested_at: UtcDatetime


# --- the stock agent's state: one small record per SKU, one per reserved order line ------------

ReservationStatus = Literal["open", "committed", "consumed", "released", "untracked"]


class Reservation(Frozen):
    """One order line's reservation (table ``stock``, key ``reservation_key``: ``SKU|order#line``,
    beside the SKU's own ``StockState``, so both go to one changelog partition in order).

    ``open`` and ``committed`` hold units; ``consumed`` (the ERP took it over), ``released``
    and ``untracked`` (accepted without stock) are final and stay as the record that makes a
    replayed reservation a no-op. ``stock_seq``: the stock-events offset of the event that
    wrote it."""

    order_key: str
    channel: str
    line_id: str
    requested: int
    quantity: int  # units held (0 when nothing was available)
    status: ReservationStatus = "open"
    erp_sales_order: str | None = None
    erp_created: ErpTime | None = None  # covered once the ERP's bin is at least this new
    reserved_at: UtcDatetime
    stock_seq: int = 0


class Pending(Frozen):
    """A committed reservation the ERP's position does not show yet: still held here."""

    quantity: int
    erp_created: ErpTime


class Backorder(Frozen):
    """Units of one order line accepted without stock, waiting for goods (``StockState``).

    The ERP counts them in its ``reserved_qty`` once it shows the sales order (its bin at least as
    new as ``erp_created``); from then on a receipt that covers them releases them, oldest first."""

    order_key: str
    line_id: str
    units: int
    erp_created: ErpTime
    since: UtcDatetime


class BackorderRelease(Frozen):
    """Backordered units the stock agent gave to their order (``StockState.released`` keeps the
    last few, to send them again when the event that released them is replayed)."""

    release_id: str  # SKU@stock-events offset: with the order key, the same on every replay
    order_key: str
    line_id: str
    units: int
    seq: int
    waited_s: float = 0.0


class ErpBin(Frozen):
    warehouse: str
    actual_qty: int
    reserved_qty: int
    modified: ErpTime
    observed_at: UtcDatetime


class Told(Frozen):
    """What one channel was last told (or last failed to be told)."""

    quantity: int
    at: UtcDatetime
    ok: bool = True
    mechanism: str = ""
    reference: str | None = None
    error: str | None = None


class StockState(Frozen):
    """Table ``stock``, key SKU: small whatever the number of orders (their lines are records of
    their own in the same table), so every event reads and writes a few hundred bytes.

    ``seq`` is the stock-events offset of the last event applied here: an event at or below it
    is already in this record (a replay after a take-over)."""

    sku: str
    seq: int = 0
    bins: dict[str, ErpBin] = Field(default_factory=dict)
    held: int = 0  # units of open reservations plus pending ones
    open_lines: int = 0
    pending: dict[str, Pending] = Field(default_factory=dict)  # reservation key -> committed
    recent: list[str] = Field(default_factory=list)  # the last reservation keys, for the view
    offered: dict[str, int] = Field(default_factory=dict)  # channel -> last quantity sent out
    told: dict[str, Told] = Field(default_factory=dict)  # channel -> last push report
    #: reservation key -> units waiting for goods, in the order they were accepted
    backorders: dict[str, Backorder] = Field(default_factory=dict)
    released: list[BackorderRelease] = Field(default_factory=list)  # the last releases
    updated_at: UtcDatetime | None = None


def reservation_key(sku: str, order_key: str, line_id: str) -> str:
    return f"{sku}|{order_key}#{line_id}"


#: a value of the ``stock`` table: a SKU's state, or one of its order lines (key with ``|``)
StockRecord = StockState | Reservation
STOCK_RECORD = TypeAdapter(StockRecord)
