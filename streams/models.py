"""Canonical models: what every channel's order becomes, and the values the records share.

Messages are immutable (frozen pydantic models). Money is always a Decimal amount with an
ISO-4217 currency; every timestamp is timezone-aware UTC. The records built from these values:
commands (``streams.commands``: an agent is asked to do something), events (``streams.events``:
something happened), the order's state (``streams.state``) and the stock agent's
(``streams.stock``). Their JSON schemas are versioned (``streams/schemas.py``).

Long module: the canonical order and the values every record shares are one vocabulary, with
the base model's fast copy and the order's JSON cache that all records use.
"""

from __future__ import annotations

import uuid
import weakref
from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import Decimal
from enum import StrEnum
from functools import partial
from typing import Annotated, Any, Literal, Self

from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field

from retail_sync.streams.erp_time import ErpTime


def utcnow() -> datetime:
    return datetime.now(UTC)


def _to_utc(value: datetime) -> datetime:
    try:
        return value.astimezone(UTC)
    except OverflowError:  # e.g. 0001-01-01T00:00+01:00: a ValueError so pydantic reports it
        raise ValueError(f"{value.isoformat()} is out of range in UTC") from None


UtcDatetime = Annotated[AwareDatetime, AfterValidator(_to_utc)]
CurrencyCode = Annotated[str, Field(pattern=r"^[A-Z]{3}$")]
Sku = Annotated[str, Field(min_length=1, max_length=128)]
Units = Annotated[int, Field(ge=0, le=10_000_000)]


#: the validation-context key under which streams.codecs gives a decoded record's schema version
VERSION_CONTEXT = "schema_version"


_set_attr = object.__setattr__


class Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    def model_copy(self, *, update: Mapping[str, Any] | None = None, deep: bool = False) -> Self:
        """Pydantic's (``update`` not validated); the shallow copy done here, ~25 per order, at
        ~3/4 of pydantic's cost: no extra fields, no private attributes to copy (tested:
        tests/unit/test_model_copy.py)."""
        if deep:
            return super().model_copy(update=update, deep=True)
        cls = type(self)
        copied = cls.__new__(cls)
        values = self.__dict__.copy()
        fields_set = set(self.__pydantic_fields_set__)
        if update:
            values.update(update)
            fields_set.update(update)
        _set_attr(copied, "__dict__", values)
        _set_attr(copied, "__pydantic_extra__", None)
        _set_attr(copied, "__pydantic_fields_set__", fields_set)
        _set_attr(copied, "__pydantic_private__", None)
        return copied


class Money(Frozen):
    amount: Decimal = Field(allow_inf_nan=False, max_digits=18, decimal_places=4)
    currency: CurrencyCode

    def __add__(self, other: Money) -> Money:
        if other.currency != self.currency:
            raise ValueError(f"cannot add {other.currency} to {self.currency}")
        return Money(amount=self.amount + other.amount, currency=self.currency)


class Channel(StrEnum):
    SHOPIFY = "shopify"


class OrderStatus(StrEnum):
    """Lifecycle of an order inside retail-sync (extended by later flows)."""

    RECEIVED = "received"  # canonical order accepted from the channel
    STOCK_PENDING = "stock_pending"  # waiting for every line's reservation
    CANCELLED = "cancelled"  # cancelled (for lack of stock: see stock_decision)
    ERP_PENDING = "erp_pending"  # ERP post requested, not yet confirmed
    ERP_CONFIRMED = "erp_confirmed"  # ERP answered with its sales-order number
    ERP_FAILED = "erp_failed"  # ERP refused it permanently or retries ran out (see exceptions)
    CANCEL_PENDING = "cancel_pending"  # a cancellation is on its way to the ERP and the WMS
    PARTIALLY_SHIPPED = "partially_shipped"  # some units left the warehouse
    SHIPPED = "shipped"  # every accepted unit left the warehouse
    PARTIALLY_REFUNDED = "partially_refunded"  # some shipped units refunded
    REFUNDED = "refunded"  # every shipped unit refunded


#: how far along the lifecycle a status is; a state never moves back to a lower rank
STATUS_RANK = {
    OrderStatus.RECEIVED: 0, OrderStatus.STOCK_PENDING: 1, OrderStatus.ERP_PENDING: 2,
    OrderStatus.ERP_FAILED: 2, OrderStatus.ERP_CONFIRMED: 3, OrderStatus.CANCEL_PENDING: 4,
    OrderStatus.PARTIALLY_SHIPPED: 5, OrderStatus.SHIPPED: 6, OrderStatus.PARTIALLY_REFUNDED: 7,
    OrderStatus.REFUNDED: 8, OrderStatus.CANCELLED: 9,
}

class Customer(Frozen):
    email: str | None = None
    name: str | None = None
    marketplace_customer_id: str | None = None
    phone: str | None = None  # the order's own phone (Shopify ``phone``), personal data


class Address(Frozen):
    name: str | None = None
    line1: str | None = None
    line2: str | None = None
    city: str | None = None
    region: str | None = None
    postal_code: str | None = None
    country_code: str | None = Field(None, pattern=r"^[A-Z]{2}$")
    phone: str | None = None  # personal data, as the rest of the address
    company: str | None = None


# Fields added for issue 12 item 2 (what the ERP, the warehouse and finance need) all have
# defaults, so orders stored before them still decode. docs/ARCHITECTURE.md §5g maps each one
# from every marketplace to the canonical order and on to the ERP and the WMS.


class NameValue(Frozen):
    """A free name/value pair the buyer or the shop attached (Shopify line ``properties``, order
    ``note_attributes``): e.g. ``Engraving`` = ``Happy Birthday``."""

    name: str
    value: str = ""


class TaxLine(Frozen):
    """One tax by name and rate (Shopify ``tax_lines``, Walmart ``taxName``), summed over the
    order; ``rate`` is a fraction (0.0625 = 6.25 %), None when the channel does not say."""

    title: str
    rate: Decimal | None = Field(None, allow_inf_nan=False, max_digits=12, decimal_places=8)
    amount: Money


class DiscountCode(Frozen):
    """A discount code the buyer entered (Shopify ``discount_codes``)."""

    code: str
    amount: Money | None = None
    kind: str | None = None  # fixed_amount, percentage, shipping


class OrderLine(Frozen):
    line_id: str = Field(min_length=1)
    sku: str = Field(min_length=1, max_length=128)
    title: str = ""
    # strict: a JSON true is not 1, 2.0 and "2" are not 2 (mappers parse text where the channel sends text)
    quantity: int = Field(strict=True, gt=0, le=100_000)
    unit_price: Money
    tax: Money
    discount: Money  # the line's whole discount (all units): the ERP rate is price less this / qty
    properties: list[NameValue] = Field(default_factory=list)  # e.g. engraving text
    marketplace_product_id: str | None = None  # Amazon ASIN
    condition: str | None = None  # Amazon ConditionId/ConditionSubtypeId, e.g. "Used/Good"


class BuyerCancelRequest(Frozen):
    """The buyer asked the marketplace to cancel and the seller must do it (Amazon's
    ``BuyerRequestedCancel`` on an MFN order): cancelled here before shipment and answered on the
    marketplace with its buyer-cancel reason (agents/aftersale.py)."""

    reason: str | None = None  # the buyer's words (Amazon BuyerCancelReason)
    line_ids: list[str] = Field(default_factory=list)  # the lines it names


class Order(Frozen):
    """One marketplace order in canonical form; identity is (channel, marketplace_order_id)."""

    channel: str = Field(pattern=r"^[a-z][a-z0-9_-]{1,31}$")
    marketplace_order_id: str = Field(min_length=1, max_length=64)
    marketplace_order_name: str | None = None
    created_at: UtcDatetime
    updated_at: UtcDatetime
    currency: CurrencyCode
    lines: list[OrderLine] = Field(min_length=1, max_length=1000)
    subtotal: Money
    shipping: Money
    tax_total: Money
    discount_total: Money
    total: Money
    taxes_included: bool = False
    financial_status: str | None = None
    fulfillment_status: str | None = None
    cancelled_at: UtcDatetime | None = None  # the marketplace cancelled it (buyer or merchant)
    buyer_cancel_request: BuyerCancelRequest | None = None  # asked, not yet cancelled
    customer: Customer = Customer()
    shipping_address: Address | None = None
    # --- carried for the ERP, the warehouse and finance (issue 12 item 2; §5g) ---
    billing_address: Address | None = None
    tax_lines: list[TaxLine] = Field(default_factory=list)  # by name and rate; Σ = tax_total
    discount_codes: list[DiscountCode] = Field(default_factory=list)
    shipping_method: str | None = None  # Shopify shipping line titles, Amazon ShipServiceLevel...
    note: str | None = None
    note_attributes: list[NameValue] = Field(default_factory=list)
    buyer_po_number: str | None = None  # the buyer's own purchase order number (Shopify po_number)
    ship_by: UtcDatetime | None = None  # the latest ship date promised (Amazon LatestShipDate)
    deliver_by: UtcDatetime | None = None  # the latest delivery date promised
    #: "merchant": we ship it (our WMS, our stock); "marketplace": the marketplace ships it from
    #: its own stock (Amazon AFN): it goes to the ERP only, never to our WMS nor our stock
    fulfilled_by: Literal["merchant", "marketplace"] = "merchant"
    is_prime: bool = False
    is_gift: bool = False
    order_type: str | None = None  # Amazon OrderType, Walmart orderType (REGULAR, REPLACEMENT)
    original_order_id: str | None = None  # a replacement's original order (Walmart, Amazon)

    @property
    def fulfilled_by_marketplace(self) -> bool:
        return self.fulfilled_by == "marketplace"

    @property
    def order_key(self) -> str:
        return order_key(self.channel, self.marketplace_order_id)


#: id(order) -> (a weak reference to it, its JSON): see ``order_json``
_ORDER_JSON: dict[int, tuple[weakref.ref[Order], bytes]] = {}


def order_json(order: Order) -> bytes:
    """``order.model_dump_json()``, written once per order object while it lives: an order's
    state is written up to ~4 times with the same (immutable) order in it (issue 16)."""
    key = id(order)
    hit = _ORDER_JSON.get(key)
    if hit is not None and hit[0]() is order:
        return hit[1]
    body = order.model_dump_json().encode()
    _ORDER_JSON[key] = (weakref.ref(order, partial(_forget_order_json, key)), body)
    return body


def _forget_order_json(key: int, ref: weakref.ref[Order]) -> None:
    hit = _ORDER_JSON.get(key)
    if hit is not None and hit[0] is ref:  # not another order's, born at the same address
        del _ORDER_JSON[key]


def with_order_json(model: BaseModel, order: Order) -> bytes:
    """``model.model_dump_json()`` for a model whose field ``order`` is ``order``, the order
    written by ``order_json`` (last instead of in its place: the same JSON object)."""
    head = model.model_dump_json(exclude=_ORDER_FIELD).encode()
    return b"".join((head[:-1], b"," if head != b"{}" else b"", b'"order":', order_json(order),
                     b"}"))


_ORDER_FIELD = {"order"}


def record_json(model: BaseModel) -> bytes:
    """A model as the codecs write it (streams/codecs.py): by its own ``wire_json`` where it
    has one (the same JSON as ``model_dump_json``, written faster), else ``model_dump_json``."""
    fast = getattr(model, "wire_json", None)
    return fast() if fast is not None else model.model_dump_json().encode()


def order_key(channel: str, marketplace_order_id: str) -> str:
    """The one key of an order across all topics and tables: ``channel:marketplace id``."""
    return f"{channel}:{marketplace_order_id}"


# --- the raw inbound record ---------------------------------------------------------------


class RawOrderMessage(Frozen):
    """A delivery exactly as it reached us (body kept verbatim), before any mapping."""

    channel: str
    topic: str
    delivery_id: str  # X-Shopify-Webhook-Id for webhooks
    event_id: str | None = None
    shop_domain: str | None = None
    api_version: str | None = None
    triggered_at: str | None = None
    received_at: UtcDatetime
    body: str


# --- values the commands, events and states share ------------------------------------------


#: units of one order line: in a shipment, a return, a seller cancellation, a warehouse release;
#: the commands carry it and the connectors' contracts (connectors/contracts.py) take it
class LineUnits(Frozen):
    line_id: str
    sku: str
    quantity: int = Field(gt=0)


class ShipmentRecord(Frozen):
    """One warehouse shipment as the order keeps it (and what became of it downstream)."""

    shipment_id: str
    lines: dict[str, int]  # line_id -> units
    carrier: str
    tracking_number: str
    shipped_at: UtcDatetime
    delivery_note: str | None = None  # ERP, once posted
    sales_invoice: str | None = None  # ERP finance, raised for it
    marketplace_confirmed_at: UtcDatetime | None = None


#: units of one line in a refund: at least one (a refund of -5 units is no refund: issue 13)
RefundUnits = Annotated[int, Field(gt=0, le=100_000)]


class RefundRecord(Frozen):
    """A return/refund of some shipped units, and what became of it in every system. Validated:
    every line refunds at least one unit and the amount is not negative; that the units were
    shipped and not refunded yet, and that the amount is within what was paid, is the order's to
    say (``agents.aftersale.return_refusal``)."""

    refund_id: str
    lines: dict[str, RefundUnits] = Field(min_length=1)  # line_id -> units
    amount: Decimal = Field(ge=0, allow_inf_nan=False, max_digits=18, decimal_places=4)
    reason: str
    restock: bool  # goods come back to the warehouse
    source: str  # the channel (the marketplace refunded already) or "erp" (we refund there)
    requested_at: UtcDatetime
    goods_received_at: UtcDatetime | None = None
    credit_note: str | None = None
    return_delivery_note: str | None = None
    marketplace_refunded_at: UtcDatetime | None = None


class BackorderFulfilment(Frozen):
    """Backordered units released to the warehouse once goods arrived: a fulfilment order of
    their own (our ``reference``: ``<order_key>#bo<n>``)."""

    release_id: str  # the stock agent's (SKU@offset): a repeat of the release changes nothing
    reference: str
    sku: str
    lines: dict[str, int]  # line_id -> units
    released_at: UtcDatetime
    waited_s: float = 0.0  # from the ERP's acceptance of the order to the release
    wms_fulfilment_id: str | None = None


class StockLevel(Frozen):
    """One ERP stock position (ERPNext ``Bin``: one item in one warehouse) as last changed.

    ``modified`` is when the ERP changed it (UTC), parsed by the ERP's connector from its own
    format: positions of one warehouse are ordered by it (a later one replaces an earlier one).
    The ERP's stock feed returns these (``connectors.contracts.StockFeed``); on stock-events each
    travels as ``streams.events.ErpStockChanged``, this position with the time it was observed."""

    sku: Sku
    warehouse: str
    actual_qty: int  # on hand
    reserved_qty: int  # promised by the ERP's submitted sales orders not yet delivered
    modified: ErpTime


# --- dead letters --------------------------------------------------------------------------


class ExceptionKind(StrEnum):
    DECODE = "decode"  # bytes on a topic that are not the record they should be
    MAPPING = "mapping"  # valid JSON from a channel that cannot become a canonical order
    ERP_PERMANENT = "erp_permanent"  # ERP refused the request (4xx)
    ERP_EXHAUSTED = "erp_exhausted"  # transient ERP errors outlasted the retry budget
    POLL = "poll"  # a polled channel refused our request (4xx)
    STATE_CONFLICT = "state_conflict"  # an event that contradicts the order's state (drift)
    OUTBOUND = "outbound"  # a marketplace refused (or could not be sent) what we told it
    INTERNAL = "internal"  # a bug of ours met this record; kept so it can be replayed


class SyncException(Frozen):
    """Anything that could not proceed: kept, explained and replayable."""

    exception_id: str = Field(default_factory=lambda: uuid.uuid4().hex)
    kind: ExceptionKind
    reason: str
    error_class: str
    channel: str | None = None
    order_key: str | None = None
    source_topic: str | None = None
    source_key: str | None = None
    payload: str = Field(description="The offending record, verbatim (truncated at 64 KiB).")
    attempts: int = 1
    occurred_at: UtcDatetime = Field(default_factory=utcnow)


MAX_EXCEPTION_PAYLOAD = 64 * 1024


def truncate_payload(payload: str | bytes | None) -> str:
    if payload is None:
        return ""
    text = payload.decode("utf-8", "replace") if isinstance(payload, bytes) else payload
    return text[:MAX_EXCEPTION_PAYLOAD]
