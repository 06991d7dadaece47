"""Commands: what an agent is asked to do. Each is keyed on its topic (order_key, or the SKU on
stock-events), carries what its handler needs, so handlers keep no state, and is idempotent at
its target (shipment id, refund id, order reference, order line).

| topic            | value                                                                  |
|------------------|------------------------------------------------------------------------|
| order-events     | ExpireOrder, RetryErpPost, RetryWmsRelease (in ``streams.events.OrderEvent``) |
| stock-events     | ReserveStock, ReleaseStock, CommitStock, ForgetLines (in ``StockEvent``) |
| erp-requests     | ErpCommand: ErpPostRequest, ErpShipmentRequest, ErpCancelRequest, ErpReturnRequest |
| wms-requests     | WmsCommand: WmsRelease, WmsCancel, WmsExpectReturn                     |
| channel-commands.<channel> | ChannelCommand: MarketplaceCancel, MarketplaceShipment, MarketplaceRefund |
| inventory-updates.<channel> | InventoryUpdate (absolute quantity to offer)                  |
| poll-ticks       | PollTick                                                               |

One channel-commands topic per channel we write to; plain channel-commands for a channel without
an outbound. The events are in ``streams.events``.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, TypeAdapter

from retail_sync.streams.erp_time import ErpTime
from retail_sync.streams.models import (
    Frozen,
    LineUnits,
    NameValue,
    Order,
    RefundRecord,
    ShipmentRecord,
    Sku,
    Units,
    UtcDatetime,
    record_json,
    with_order_json,
)

#: the most items one batch record carries (a batch handler's sends are split beyond it)
MAX_BATCH_ITEMS = 1000


# --- to the order agent (on order-events) ---------------------------------------------------


class ExpireOrder(Frozen):
    """Command to the order agent (from its own retention sweep, tables/retention.py): archive
    and delete this order if it is still closed and past the retention age."""

    kind: Literal["expire_order"] = "expire_order"
    order_key: str
    at: UtcDatetime


class RetryErpPost(Frozen):
    """Command to the order agent (an operator's replay of a failed ERP post, ``POST
    /exceptions/replay``): post the order to the ERP again, built from the order's state as it
    is now (an edit, a partial decision or a cancellation since the failure counts), never
    from the request kept in the exception record. The agent skips it, with the reason on the
    timeline, when the order should no longer be posted (cancelled, already in the ERP)."""

    kind: Literal["retry_erp_post"] = "retry_erp_post"
    order_key: str
    exception_id: str  # the sync-exception record replayed
    requested_by: str = "replay"  # the caller (token name) or "cli"
    at: UtcDatetime


class RetryWmsRelease(Frozen):
    """Command to the order agent (a replay of a warehouse release that failed): release the
    order (``reference`` None) or one of its backorder fulfilments to the warehouse again, from
    the order's state as it is now; skipped with the reason when the order was cancelled or is
    being cancelled, or the warehouse has that release already."""

    kind: Literal["retry_wms_release"] = "retry_wms_release"
    order_key: str
    exception_id: str
    reference: str | None = None  # a backorder fulfilment's reference; None: the order's own
    requested_by: str = "replay"
    at: UtcDatetime


# --- to the stock agent (on stock-events, keyed by SKU) -------------------------------------


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


class ForgetLines(Frozen):
    """Command to the stock agent: the order left the hot tables (tables/retention.py); delete
    its line records on this SKU that hold nothing (consumed, released, untracked)."""

    kind: Literal["forget_lines"] = "forget_lines"
    sku: Sku
    order_key: str
    line_ids: list[str] = Field(min_length=1)
    at: UtcDatetime


class StockBatch(Frozen):
    """Several stock commands in one record, for SKUs of one stock-events partition (issue 16).

    The order agent sends one per stock partition per batch of its input instead of one record
    per SKU and command; the record is keyed by its first item's SKU, so it lands on the partition
    of every item's SKU (``streams.topics.partition_of``) and the stock agent, which applies the
    items in order, writes each SKU's records to that SKU's own changelog partition. An item's
    position is ``offset * POSITION_SCALE + index`` (``streams.stock``), so a replayed batch is
    applied from the first item its SKU's record does not have."""

    kind: Literal["stock_batch"] = "stock_batch"
    items: list[Annotated[ReserveStock | ReleaseStock | CommitStock | ForgetLines,
                          Field(discriminator="kind")]] = Field(min_length=1,
                                                                max_length=MAX_BATCH_ITEMS)


# --- ERP ------------------------------------------------------------------------------------


class ErpPostRequest(Frozen):
    """Command: create this order in the ERP (idempotent on order_key)."""

    kind: Literal["post_order"] = "post_order"
    order_key: str
    order: Order  # the lines to post: reduced to what was reserved under the partial policy
    received_at: UtcDatetime
    requested_at: UtcDatetime
    backorders: dict[str, int] = Field(default_factory=dict)  # line_id -> units without stock

    def wire_json(self) -> bytes:
        """``model_dump_json``, the order written once per order object (its state's)."""
        return with_order_json(self, self.order)


class ErpShipmentRequest(Frozen):
    kind: Literal["post_shipment"] = "post_shipment"
    order_key: str
    channel: str
    erp_sales_order: str
    shipment: ShipmentRecord
    lines: list[LineUnits]


class ErpCancelRequest(Frozen):
    kind: Literal["cancel_order"] = "cancel_order"
    order_key: str
    channel: str
    erp_sales_order: str
    reason: str


class ErpReturnRequest(Frozen):
    kind: Literal["post_return"] = "post_return"
    order_key: str
    channel: str
    erp_sales_order: str
    refund: RefundRecord
    lines: list[LineUnits]
    currency: str


ErpCommand = Annotated[
    ErpPostRequest | ErpShipmentRequest | ErpCancelRequest | ErpReturnRequest,
    Field(discriminator="kind"),
]
ERP_COMMAND = TypeAdapter(ErpCommand)


class ErpBatch(Frozen):
    """Several ERP requests in one record, for orders of one erp-requests partition (issue 16):
    keyed by the first request's order key; the ERP dispatch agent carries out one order's
    requests in order and different orders' side by side."""

    kind: Literal["erp_batch"] = "erp_batch"
    requests: list[ErpCommand] = Field(min_length=1, max_length=MAX_BATCH_ITEMS)

    def wire_json(self) -> bytes:
        """``model_dump_json``, each request by its own ``wire_json`` where it has one."""
        return b"".join((b'{"kind":"erp_batch","requests":[',
                         b",".join(record_json(r) for r in self.requests), b"]}"))


#: what erp-requests carries: one request, or a batch of them
ErpRecord = Annotated[ErpCommand | ErpBatch, Field(discriminator="kind")]
ERP_RECORD = TypeAdapter(ErpRecord)


# --- warehouse ------------------------------------------------------------------------------


class ShippingInstructions(Frozen):
    """What the warehouse needs to ship an order as the marketplace promised it (issue 12
    item 2, docs/ARCHITECTURE.md §5g)."""

    channel: str | None = None
    marketplace_order_id: str | None = None
    method: str | None = None  # Shopify shipping line titles, Amazon ShipServiceLevel, ...
    ship_by: UtcDatetime | None = None  # the latest ship date promised
    deliver_by: UtcDatetime | None = None
    priority: bool = False  # Amazon Prime
    gift: bool = False
    note: str | None = None  # the buyer's note
    order_type: str | None = None  # e.g. Walmart REPLACEMENT
    original_order_id: str | None = None


class ReleaseLineDetail(Frozen):
    """Per line: what the picker must see (engraving text, the item's condition)."""

    title: str = ""
    properties: list[NameValue] = Field(default_factory=list)
    condition: str | None = None


class WmsRelease(Frozen):
    kind: Literal["release"] = "release"
    order_key: str
    erp_sales_order: str
    lines: list[LineUnits]
    ship_to: dict[str, str | None] | None = None
    reference: str | None = None  # the fulfilment order's reference; None: the order key
    shipping: ShippingInstructions | None = None
    line_details: dict[str, ReleaseLineDetail] = Field(default_factory=dict)  # by line_id


class WmsCancel(Frozen):
    kind: Literal["cancel"] = "cancel"
    order_key: str
    references: list[str] = Field(default_factory=list)  # backorder fulfilments, beside the first


class WmsExpectReturn(Frozen):
    kind: Literal["expect_return"] = "expect_return"
    order_key: str
    refund_id: str
    lines: list[LineUnits]


WmsCommand = Annotated[WmsRelease | WmsCancel | WmsExpectReturn, Field(discriminator="kind")]
WMS_COMMAND = TypeAdapter(WmsCommand)


class WmsBatch(Frozen):
    """Several warehouse commands in one record, for orders of one wms-requests partition
    (issue 16): keyed by the first command's order key; the warehouse agent carries out one
    order's commands in order and different orders' side by side."""

    kind: Literal["wms_batch"] = "wms_batch"
    commands: list[WmsCommand] = Field(min_length=1, max_length=MAX_BATCH_ITEMS)


#: what wms-requests carries: one command, or a batch of them
WmsRecord = Annotated[WmsCommand | WmsBatch, Field(discriminator="kind")]
WMS_RECORD = TypeAdapter(WmsRecord)


# --- marketplaces ---------------------------------------------------------------------------


class InventoryUpdate(Frozen):
    """Offer ``quantity`` of ``sku`` on ``channel`` (absolute). ``cause_at`` is when the change
    behind it happened (the ERP's change time, or the order event's), for propagation latency."""

    channel: str
    sku: Sku
    quantity: Units
    cause: Literal["erp", "order"]
    cause_at: UtcDatetime
    computed_at: UtcDatetime


class MarketplaceCancel(Frozen):
    """Command to the marketplace-outbound agent: cancel (some of) an order as the seller."""

    kind: Literal["cancel"] = "cancel"
    order_key: str
    channel: str
    marketplace_order_id: str
    whole_order: bool
    lines: list[LineUnits]
    reason: str
    requested_at: UtcDatetime


class MarketplaceShipment(Frozen):
    kind: Literal["ship"] = "ship"
    order_key: str
    channel: str
    marketplace_order_id: str
    shipment: ShipmentRecord
    lines: list[LineUnits]
    requested_at: UtcDatetime


class MarketplaceRefund(Frozen):
    kind: Literal["refund"] = "refund"
    order_key: str
    channel: str
    marketplace_order_id: str
    refund: RefundRecord
    lines: list[LineUnits]
    currency: str
    requested_at: UtcDatetime


ChannelCommand = Annotated[
    MarketplaceCancel | MarketplaceShipment | MarketplaceRefund, Field(discriminator="kind")]
CHANNEL_COMMAND = TypeAdapter(ChannelCommand)


# --- the poller ---------------------------------------------------------------


class PollTick(Frozen):
    """Command to the poller: poll ``channel`` now (sent by the leader's timer)."""

    channel: str
    requested_at: UtcDatetime
