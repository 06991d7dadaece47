"""Stock records: what moves on the stock-events, inventory-updates and channel-commands topics,
and the per-SKU state the stock agent keeps.

| topic             | key                | value                                  |
|-------------------|--------------------|----------------------------------------|
| stock-events      | SKU                | StockEvent (ERP position, reserve, release, commit, pushed) |
| inventory-updates.<channel> | SKU      | InventoryUpdate (absolute quantity to offer)                |
| channel-commands.<channel>  | order_key | MarketplaceCancel (and the after-order commands)          |

Quantities are whole units. ERP timestamps stay in the ERP's own sortable format (Frappe:
``YYYY-MM-DD HH:MM:SS.ffffff``) so they compare as strings without clock conversions.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, TypeAdapter

from streams.models import Frozen, LineAllocation, UtcDatetime  # noqa: F401 (LineAllocation re-exported)

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
    modified: str  # the ERP's change timestamp
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
    erp_created: str | None = None
    at: UtcDatetime


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
    ErpStockChanged | ReserveStock | ReleaseStock | CommitStock | InventoryPushed,
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
    """One order line's reservation (table ``stock-reservations``, key ``reservation_key``): the
    line's history and what makes a replayed reservation a no-op. What is *held* is counted in
    the SKU's ``StockState.active``, in the same record as the totals, so one write changes both;
    this record may lag that one after a take-over (``stock_seq`` says which write is newer).

    ``open`` and ``committed`` hold units; ``consumed`` (the ERP took it over), ``released``
    and ``untracked`` (accepted without stock) are final."""

    order_key: str
    channel: str
    line_id: str
    requested: int
    quantity: int  # units held (0 when nothing was available)
    status: ReservationStatus = "open"
    erp_sales_order: str | None = None
    erp_created: str | None = None  # covered once the ERP's bin is at least this new
    reserved_at: UtcDatetime
    stock_seq: int = 0  # the StockState.seq written with this record


class Held(Frozen):
    """Units one order line holds on a SKU: ``open`` until the ERP confirmed the order, then
    ``committed`` until the ERP's own position of the warehouse is at least as new as the sales
    order (``erp_created``): from then on the ERP's ``reserved_qty`` has them."""

    quantity: int
    channel: str
    status: Literal["open", "committed"] = "open"
    erp_created: str | None = None


class ErpBin(Frozen):
    warehouse: str
    actual_qty: int
    reserved_qty: int
    modified: str
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
    """Table ``stock``, key SKU: the ERP's position, every unit our reservations hold (the lines
    still in flight, a handful per SKU: a line leaves once the ERP's position includes it) and
    what each channel was offered and told. Everything that is counted is in this one record,
    so one changelog write moves it all at once (a SIGKILL cannot leave the totals and the lines
    apart); the finished lines live on in ``stock-reservations``.

    ``seq`` is the offset of the last stock-events record applied here: an event at or below it
    is already in this record (a replay after a take-over), and a reservation record written
    with a higher ``stock_seq`` is newer than this record."""

    sku: str
    seq: int = 0
    bins: dict[str, ErpBin] = Field(default_factory=dict)
    active: dict[str, Held] = Field(default_factory=dict)  # reservation key -> units held
    recent: list[str] = Field(default_factory=list)  # the last reservation keys, for the view
    offered: dict[str, int] = Field(default_factory=dict)  # channel -> last quantity sent out
    told: dict[str, Told] = Field(default_factory=dict)  # channel -> last push report
    updated_at: UtcDatetime | None = None

    @property
    def held(self) -> int:
        """Units of open reservations plus committed ones the ERP does not show yet."""
        return sum(h.quantity for h in self.active.values())

    @property
    def open_lines(self) -> int:
        return sum(1 for h in self.active.values() if h.status == "open")

    @property
    def pending(self) -> dict[str, Held]:
        """Committed reservations the ERP's position does not show yet."""
        return {k: h for k, h in self.active.items() if h.status == "committed"}


def reservation_key(sku: str, order_key: str, line_id: str) -> str:
    return f"{sku}|{order_key}#{line_id}"
