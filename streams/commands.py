"""Commands of the flows after the order (issue 5): what the order agent asks the ERP, the
warehouse and the marketplaces to do. Each is keyed by order_key on its topic; each carries what
its handler needs, so handlers keep no state; each is idempotent at its target (shipment id,
refund id, order reference).

| topic            | value                                                                  |
|------------------|------------------------------------------------------------------------|
| erp-requests     | ErpCommand: ErpPostRequest, ErpShipmentRequest, ErpCancelRequest, ErpReturnRequest |
| wms-requests     | WmsCommand: WmsRelease, WmsCancel, WmsExpectReturn                     |
| channel-commands.<channel> | ChannelCommand: MarketplaceCancel, MarketplaceShipment, MarketplaceRefund |

One channel-commands topic per channel we write to; plain channel-commands for a channel without
an outbound.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, TypeAdapter

from retail_sync.streams.models import (
    ErpPostRequest,
    Frozen,
    NameValue,
    RefundRecord,
    ShipmentRecord,
    UtcDatetime,
)
from retail_sync.streams.stock import MarketplaceCancel


class LineUnits(Frozen):
    line_id: str
    sku: str
    quantity: int = Field(gt=0)


# --- ERP -------------------------------------------------------------------------------------


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


# --- warehouse -------------------------------------------------------------------------------


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


# --- marketplaces ----------------------------------------------------------------------------


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

