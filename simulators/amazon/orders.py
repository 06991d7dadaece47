"""The simulated Amazon order book: seeded orders shaped like Orders v0 ``Order`` / ``OrderItem``.

Money is a string with two decimals in ``Money`` objects, and totals add up the way the spec's
sandbox example does (``OrderTotal`` 11.01 = ``ItemPrice`` 10.00 + ``ItemTax`` 1.01):

    ItemPrice      = unit price x QuantityOrdered     (the line total, not a unit price)
    OrderTotal     = sum(ItemPrice + ItemTax + ShippingPrice + ShippingTax
                         - PromotionDiscount - ShippingDiscount)

While an order is ``Pending`` / ``PendingAvailability`` Amazon shows no ``OrderTotal`` and no item
prices, taxes or promotions (``visible``). Buyer data is PII-restricted: an anonymised
``BuyerEmail`` and a partial ``ShippingAddress`` (city, region, postal code, country).

Seller cancellations (``cancel_units``): an item the seller cancels part of shows the units left in
``QuantityOrdered`` and its amounts scaled to them (a fully cancelled item of an open order shows
0, as Amazon does); once every unit is cancelled the order is ``Canceled`` and shows its items as
ordered, like an order Amazon cancelled as a whole.

Buyer cancellation requests (``request_cancel_by_buyer``): on an MFN order not yet shipped the
buyer cannot cancel by himself; Amazon marks the items ``BuyerRequestedCancel``
(``{"IsBuyerRequestedCancel": "true", "BuyerCancelReason": ...}``, the shape of ordersV0.json's
examples), the order stays ``Unshipped`` and its ``LastUpdateDate`` moves on, so a poller by
``LastUpdatedAfter`` sees it again. The seller answers with an order acknowledgement cancelling
the items with ``CancelReason`` ``BuyerCanceled``.

Shipments (``ship_units``, confirmShipment): ``shipped`` keeps the units confirmed per item, which
``QuantityShipped`` shows; the order is ``PartiallyShipped`` until every unit still ordered has
shipped, then ``Shipped``.
"""

from __future__ import annotations

import copy
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

JSON = dict[str, Any]
CENT = Decimal("0.01")
ORDER_STATUSES = (
    "PendingAvailability", "Pending", "Unshipped", "PartiallyShipped",
    "Shipped", "InvoiceUnconfirmed", "Canceled", "Unfulfillable",
)  # fmt: skip
AWAITING_PAYMENT = frozenset({"Pending", "PendingAvailability"})
PRICE_FIELDS = ("ItemPrice", "ItemTax", "PromotionDiscount", "ShippingPrice", "ShippingTax",
                "ShippingDiscount", "PromotionIds")  # fmt: skip
CATALOGUE = [  # (SellerSKU, ASIN, Title, unit price)
    ("RS-MUG-350", "B07XQ1MUG3", "Stoneware Mug, 350 ml", "12.50"),
    ("RS-TEE-M-BLU", "B08TEEM4BL", "Crew T-Shirt, M, Blue", "24.90"),
    ("RS-LAMP-01", "B09LAMP01X", "Desk Lamp, LED", "39.99"),
    ("RS-BOTTLE-750", "B07BTL750Z", "Steel Bottle, 750 ml", "18.00"),
    ("RS-NOTE-A5", "B00551Q3CS", "A5 Card Book", "10.00"),
]
_CITIES = [("SEATTLE", "WA", "98121-2778"), ("AUSTIN", "TX", "78701"), ("BOSTON", "MA", "02110")]


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def money(amount: Decimal, currency: str) -> JSON:
    return {"CurrencyCode": currency, "Amount": str(amount.quantize(CENT))}


@dataclass
class Market:
    """Where generated orders are placed: marketplace, currency and sales-tax rate."""

    marketplace_id: str = "ATVPDKIKX0DER"
    currency: str = "USD"
    tax_rate: str = "0.08"


@dataclass
class OrderRecord:
    """One order as the simulator keeps it."""

    order: JSON  # as Amazon shows it once payment is authorised
    items: list[JSON]
    purchased: datetime
    updated: datetime
    as_ordered: list[JSON] = field(default_factory=list)  # the items before any cancellation
    cancelled: dict[str, int] = field(default_factory=dict)  # OrderItemId -> units cancelled
    shipped: dict[str, int] = field(default_factory=dict)  # OrderItemId -> units confirmed shipped

    def __post_init__(self) -> None:
        if not self.as_ordered:
            self.as_ordered = copy.deepcopy(self.items)

    def item(self, item_id: str) -> JSON | None:
        return next((i for i in self.as_ordered if i["OrderItemId"] == item_id), None)


class OrderFactory:
    """Seeded Amazon orders: 3-7-7 ids, consistent money, partial (PII-restricted) addresses."""

    def __init__(self, market: Market, seed: int | None = None, *, skus: Sequence[str] | None = None,
                 max_quantity: int = 3, mfn_rate: float = 0.7):
        self.market, self.rng = market, random.Random(seed)  # noqa: S311
        self.skus, self.max_quantity, self.mfn_rate = skus, max_quantity, mfn_rate

    def order_id(self) -> str:
        r = self.rng.randint
        return f"{r(111, 999)}-{r(0, 9_999_999):07d}-{r(0, 9_999_999):07d}"

    def item(self, line: JSON, first: bool, prime: bool) -> JSON:
        cur, qty = self.market.currency, int(line["quantity"])
        price = Decimal(str(line["unit_price"])) * qty
        tax = Decimal(str(line.get("tax", price * Decimal(self.market.tax_rate)))).quantize(CENT)
        promo = Decimal(str(line.get("discount", "0")))
        shipping = Decimal(str(line.get("shipping", "0" if prime or not first else "4.99")))
        return {
            "ASIN": line.get("asin", "B000000000"), "SellerSKU": line["sku"],
            "OrderItemId": f"{self.rng.randint(0, 10**14 - 1):014d}", "Title": line.get("title", ""),
            "QuantityOrdered": qty, "QuantityShipped": 0, "ProductInfo": {"NumberOfItems": "1"},
            "ItemPrice": money(price, cur), "ItemTax": money(tax, cur),
            "PromotionDiscount": money(promo, cur), "ShippingPrice": money(shipping, cur),
            "ShippingTax": money(Decimal(0), cur), "ShippingDiscount": money(Decimal(0), cur),
            "PromotionIds": ["PROMO-10"] if promo else [], "IsGift": "false", "ConditionId": "New",
            "ConditionSubtypeId": "New", "IsTransparency": False, "SerialNumberRequired": False,
        }  # fmt: skip

    def catalogue(self) -> list[tuple[str, str, str, str]]:
        """What buyers order from: ``CATALOGUE``, or the configured SKUs at 10.00 each."""
        if not self.skus:
            return CATALOGUE
        return [(sku, f"B0{n:08d}", sku, "10.00") for n, sku in enumerate(self.skus, start=1)]

    def random_lines(self) -> list[JSON]:
        lines = []
        catalogue = self.catalogue()
        for sku, asin, title, unit in self.rng.sample(catalogue, self.rng.randint(1, min(3, len(catalogue)))):
            qty = self.rng.randint(1, self.max_quantity)
            off = Decimal(unit) * qty / 10 if self.rng.random() < 0.2 else Decimal(0)
            lines.append({"sku": sku, "asin": asin, "title": title, "unit_price": unit,
                          "quantity": qty, "discount": off.quantize(CENT)})  # fmt: skip
        return lines

    def order(self, order_id: str, status: str, now: datetime, lines: list[JSON]) -> OrderRecord:
        prime, mfn = self.rng.random() < 0.4, self.rng.random() < self.mfn_rate
        items = [self.item(line, i == 0, prime) for i, line in enumerate(lines)]
        city, state, postal = self.rng.choice(_CITIES)
        order = {
            "AmazonOrderId": order_id, "PurchaseDate": iso(now), "LastUpdateDate": iso(now),
            "OrderStatus": status, "FulfillmentChannel": "MFN" if mfn else "AFN",
            "SalesChannel": "Amazon.com", "ShipServiceLevel": "Std US D2D Dom",
            "OrderTotal": money(sum((_total(i) for i in items), Decimal(0)), self.market.currency),
            "NumberOfItemsShipped": 0, "NumberOfItemsUnshipped": 0, "PaymentMethod": "Other",
            "PaymentMethodDetails": ["Standard"], "MarketplaceId": self.market.marketplace_id,
            "ShipmentServiceLevelCategory": "Standard", "OrderType": "StandardOrder",
            "EarliestShipDate": iso(now + timedelta(days=1)),
            "LatestShipDate": iso(now + timedelta(days=2)), "IsBusinessOrder": False,
            "IsPrime": prime, "IsPremiumOrder": False, "IsGlobalExpressEnabled": False,
            "IsReplacementOrder": False, "IsSoldByAB": False, "IsISPU": False,
            "IsAccessPointOrder": False,
            "BuyerInfo": {"BuyerEmail": f"{self.rng.randbytes(8).hex()}@marketplace.amazon.com"},
            "ShippingAddress": {"City": city, "StateOrRegion": state, "PostalCode": postal,
                                "CountryCode": "US"},
        }  # fmt: skip
        record = OrderRecord(order, items, now, now)
        set_status(record, status, now)
        return record


def _total(item: JSON) -> Decimal:
    def amount(name: str) -> Decimal:
        return Decimal(item[name]["Amount"])

    plus = amount("ItemPrice") + amount("ItemTax") + amount("ShippingPrice") + amount("ShippingTax")
    return plus - amount("PromotionDiscount") - amount("ShippingDiscount")


def set_status(record: OrderRecord, status: str, now: datetime) -> None:
    """Move an order to ``status``: shipped quantities follow, ``LastUpdateDate`` moves on."""
    if status not in ORDER_STATUSES:
        raise ValueError(f"unknown OrderStatus {status!r}; known: {', '.join(ORDER_STATUSES)}")
    shipped_all = status in ("Shipped", "InvoiceUnconfirmed")
    for index, item in enumerate(record.items):
        partial = status == "PartiallyShipped" and index == 0 and not record.shipped
        confirmed = record.shipped.get(item["OrderItemId"], 0)
        item["QuantityShipped"] = item["QuantityOrdered"] if shipped_all or partial else confirmed
    shipped = sum(i["QuantityShipped"] for i in record.items)
    open_qty = 0 if status in ("Canceled", "Unfulfillable") else sum(
        i["QuantityOrdered"] for i in record.items) - shipped  # fmt: skip
    record.updated = max(record.updated, now)
    record.order.update(OrderStatus=status, LastUpdateDate=iso(record.updated),
                        NumberOfItemsShipped=shipped, NumberOfItemsUnshipped=open_qty)  # fmt: skip


def unshipped(record: OrderRecord) -> dict[str, int]:
    """OrderItemId -> units still to ship (ordered, not cancelled, not yet confirmed shipped)."""
    return {i["OrderItemId"]: int(i["QuantityOrdered"]) - record.shipped.get(i["OrderItemId"], 0)
            for i in record.items}  # fmt: skip


def ship_units(record: OrderRecord, units: dict[str, int], now: datetime) -> None:
    """Confirm ``units`` (OrderItemId -> units, checked by the caller against ``unshipped``) as
    shipped: ``PartiallyShipped`` until nothing is left to ship, then ``Shipped``."""
    for item_id, count in units.items():
        record.shipped[item_id] = record.shipped.get(item_id, 0) + count
    done = all(left <= 0 for left in unshipped(record).values())
    set_status(record, "Shipped" if done else "PartiallyShipped", now)


# --- confirmShipment ------------------------------------------------------------------------

# Amazon's CarrierCode values the simulator accepts (a subset of Amazon's list; "Other" needs a
# carrierName).
CARRIER_CODES = ("UPS", "UPS Mail Innovations", "USPS", "FedEx", "FedEx SmartPost", "DHL",
                 "DHL eCommerce", "OnTrac", "Amazon Shipping", "Canada Post", "Royal Mail", "DPD",
                 "Hermes", "GLS", "Other")  # fmt: skip


@dataclass(frozen=True)
class Package:
    """A ``ConfirmShipmentRequest.packageDetail`` that passed the schema checks."""

    reference_id: str
    carrier_code: str
    carrier_name: str | None
    tracking_number: str
    ship_date: str
    items: dict[str, int]  # orderItemId -> quantity

    def record(self, order_id: str, at: str) -> JSON:
        return {"order_id": order_id, "package_reference_id": self.reference_id,
                "carrier_code": self.carrier_code, "carrier_name": self.carrier_name,
                "tracking_number": self.tracking_number, "ship_date": self.ship_date,
                "items": [{"order_item_id": k, "quantity": v} for k, v in self.items.items()],
                "at": at}  # fmt: skip


def _required_text(detail: JSON, name: str) -> str:
    value = detail.get(name)
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"packageDetail.{name} is required.")
    return value.strip()


def parse_package(body: Any, marketplace_id: str) -> Package:
    """The package of a confirmShipment body; ValueError (-> 400 InvalidInput) when the request
    schema or the marketplace forbids it."""
    if not isinstance(body, dict):
        raise ValueError("The request body must be a ConfirmShipmentRequest object.")
    if body.get("marketplaceId") != marketplace_id:
        raise ValueError(f"marketplaceId must be {marketplace_id}, got {body.get('marketplaceId')!r}.")
    detail = body.get("packageDetail")
    if not isinstance(detail, dict):
        raise ValueError("packageDetail is required.")
    reference = _required_text(detail, "packageReferenceId")
    if not reference.isdigit() or int(reference) < 1:
        raise ValueError(f"packageReferenceId must be a positive number, got {reference!r}.")
    carrier = _required_text(detail, "carrierCode")
    if carrier not in CARRIER_CODES:
        raise ValueError(f"carrierCode {carrier!r} is not a known carrier code.")
    name = detail.get("carrierName")
    if carrier == "Other" and not (isinstance(name, str) and name.strip()):
        raise ValueError("carrierName is required when carrierCode is Other.")
    ship_date = _required_text(detail, "shipDate")
    try:
        datetime.fromisoformat(ship_date)
    except ValueError:
        raise ValueError(f"shipDate must be an ISO 8601 date-time, got {ship_date!r}.") from None
    units = _package_units(detail.get("orderItems"))
    return Package(reference, carrier, name if isinstance(name, str) else None,
                   _required_text(detail, "trackingNumber"), ship_date, units)


def _package_units(items: Any) -> dict[str, int]:
    """``packageDetail.orderItems`` as orderItemId -> quantity; ValueError when the schema forbids it."""
    if not isinstance(items, list) or not items or not all(isinstance(i, dict) for i in items):
        raise ValueError("packageDetail.orderItems must be a non-empty list of order items.")
    units: dict[str, int] = {}
    for item in items:
        item_id, quantity = item.get("orderItemId"), item.get("quantity")
        if not isinstance(item_id, str) or not item_id:
            raise ValueError("orderItems[].orderItemId is required.")
        if isinstance(quantity, bool) or not isinstance(quantity, int) or quantity < 1:
            raise ValueError(f"orderItems[].quantity must be an integer >= 1, got {quantity!r}.")
        if item_id in units:
            raise ValueError(f"orderItemId {item_id} is listed twice.")
        units[item_id] = quantity
    return units


def shipment_error(record: OrderRecord, package: Package) -> str | None:
    """Why ``package`` cannot ship from ``record`` now, or None."""
    order, order_id = record.order, record.order["AmazonOrderId"]
    if order["FulfillmentChannel"] != "MFN":
        return f"Order {order_id} is fulfilled by Amazon (AFN); the seller cannot confirm its shipment."
    if order["OrderStatus"] not in ("Unshipped", "PartiallyShipped", "Shipped"):
        return f"Order {order_id} is {order['OrderStatus']}; its shipment cannot be confirmed."
    left = unshipped(record)
    for item_id, quantity in package.items.items():
        if item_id not in left:
            return f"orderItemId {item_id} is not an item of order {order_id}."
        if quantity > left[item_id]:
            return (f"orderItemId {item_id}: quantity {quantity} is more than the {left[item_id]} "
                    "unit(s) not yet shipped.")
    return None


def cancel_units(record: OrderRecord, item_id: str, units: int, now: datetime) -> int:
    """The seller cancels ``units`` of item ``item_id`` in all (a total, not an increment, so a
    repeated cancellation changes nothing); returns the units newly cancelled.

    KeyError for an unknown item, ValueError for a quantity below 1."""
    item = record.item(item_id)
    if item is None:
        raise KeyError(item_id)
    if units < 1:
        raise ValueError(f"cancelled quantity must be >= 1, got {units}")
    ordered = int(item["QuantityOrdered"])
    before = record.cancelled.get(item_id, 0)
    after = min(ordered, max(before, units))
    if after == before:
        return 0
    record.cancelled[item_id] = after
    if all(record.cancelled.get(i["OrderItemId"], 0) >= i["QuantityOrdered"] for i in record.as_ordered):
        record.items = copy.deepcopy(record.as_ordered)
        set_status(record, "Canceled", now)
        return after - before
    record.items = [_remaining(i, i["QuantityOrdered"] - record.cancelled.get(i["OrderItemId"], 0))
                    for i in record.as_ordered]
    currency = record.order["OrderTotal"]["CurrencyCode"]
    record.order["OrderTotal"] = money(sum((_total(i) for i in record.items), Decimal(0)), currency)
    set_status(record, record.order["OrderStatus"], now)
    return after - before


def request_cancel_by_buyer(record: OrderRecord, reason: str | None, now: datetime, *,
                            item_ids: Sequence[str] | None = None) -> None:
    """The buyer asks to cancel ``item_ids`` (default: every item) of an MFN order not shipped
    yet; ValueError otherwise (an AFN or pending order the buyer cancels by himself)."""
    order = record.order
    if order["FulfillmentChannel"] != "MFN" or order["OrderStatus"] != "Unshipped" or record.shipped:
        raise ValueError(f"order {order['AmazonOrderId']} is {order['FulfillmentChannel']} "
                         f"{order['OrderStatus']}: a buyer requests cancellation of an unshipped "
                         "MFN order only")
    wanted = set(item_ids) if item_ids is not None else {i["OrderItemId"] for i in record.as_ordered}
    flag: JSON = {"IsBuyerRequestedCancel": "true"}
    if reason:
        flag["BuyerCancelReason"] = reason
    for item in [*record.as_ordered, *record.items]:
        if item["OrderItemId"] in wanted:
            item["BuyerRequestedCancel"] = dict(flag)
    set_status(record, order["OrderStatus"], now)


def _remaining(item: JSON, left: int) -> JSON:
    """``item`` as ordered, with ``left`` units: line amounts scale, shipping goes with the last unit."""
    ordered, shown = int(item["QuantityOrdered"]), copy.deepcopy(item)
    shown["QuantityOrdered"] = left
    for name in ("ItemPrice", "ItemTax", "PromotionDiscount") + (() if left else ("ShippingPrice",)):
        amount = Decimal(item[name]["Amount"]) * left / ordered
        shown[name] = money(amount, item[name]["CurrencyCode"])
    return shown


def visible(record: OrderRecord) -> tuple[JSON, list[JSON]]:
    """What Amazon shows: no amounts while the order awaits payment."""
    if record.order["OrderStatus"] not in AWAITING_PAYMENT:
        return record.order, record.items
    order = {k: v for k, v in record.order.items() if k not in ("OrderTotal", "PaymentMethodDetails")}
    return order, [{k: v for k, v in i.items() if k not in PRICE_FIELDS} for i in record.items]


__all__ = [
    "AWAITING_PAYMENT",
    "CARRIER_CODES",
    "CATALOGUE",
    "Market",
    "ORDER_STATUSES",
    "OrderFactory",
    "OrderRecord",
    "Package",
    "cancel_units",
    "iso",
    "money",
    "parse_package",
    "request_cancel_by_buyer",
    "set_status",
    "shipment_error",
    "ship_units",
    "unshipped",
    "visible",
]
