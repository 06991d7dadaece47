"""The simulated Amazon order book: seeded orders shaped like Orders v0 ``Order`` / ``OrderItem``.

Money is a string with two decimals in ``Money`` objects, and totals add up the way the spec's
sandbox example does (``OrderTotal`` 11.01 = ``ItemPrice`` 10.00 + ``ItemTax`` 1.01):

    ItemPrice      = unit price x QuantityOrdered     (the line total, not a unit price)
    OrderTotal     = sum(ItemPrice + ItemTax + ShippingPrice + ShippingTax
                         - PromotionDiscount - ShippingDiscount)

While an order is ``Pending`` / ``PendingAvailability`` Amazon shows no ``OrderTotal`` and no item
prices, taxes or promotions (``visible``). Buyer data is PII-restricted: an anonymised
``BuyerEmail`` and a partial ``ShippingAddress`` (city, region, postal code, country).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
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


class OrderFactory:
    """Seeded Amazon orders: 3-7-7 ids, consistent money, partial (PII-restricted) addresses."""

    def __init__(self, market: Market, seed: int | None = None):
        self.market, self.rng = market, random.Random(seed)  # noqa: S311

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

    def random_lines(self) -> list[JSON]:
        lines = []
        for sku, asin, title, unit in self.rng.sample(CATALOGUE, self.rng.randint(1, 3)):
            qty = self.rng.randint(1, 3)
            off = Decimal(unit) * qty / 10 if self.rng.random() < 0.2 else Decimal(0)
            lines.append({"sku": sku, "asin": asin, "title": title, "unit_price": unit,
                          "quantity": qty, "discount": off.quantize(CENT)})  # fmt: skip
        return lines

    def order(self, order_id: str, status: str, now: datetime, lines: list[JSON]) -> OrderRecord:
        prime, mfn = self.rng.random() < 0.4, self.rng.random() < 0.7
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
        partial = status == "PartiallyShipped" and index == 0
        item["QuantityShipped"] = item["QuantityOrdered"] if shipped_all or partial else 0
    shipped = sum(i["QuantityShipped"] for i in record.items)
    open_qty = 0 if status in ("Canceled", "Unfulfillable") else sum(
        i["QuantityOrdered"] for i in record.items) - shipped  # fmt: skip
    record.updated = max(record.updated, now)
    record.order.update(OrderStatus=status, LastUpdateDate=iso(record.updated),
                        NumberOfItemsShipped=shipped, NumberOfItemsUnshipped=open_qty)  # fmt: skip


def visible(record: OrderRecord) -> tuple[JSON, list[JSON]]:
    """What Amazon shows: no amounts while the order awaits payment."""
    if record.order["OrderStatus"] not in AWAITING_PAYMENT:
        return record.order, record.items
    order = {k: v for k, v in record.order.items() if k not in ("OrderTotal", "PaymentMethodDetails")}
    return order, [{k: v for k, v in i.items() if k not in PRICE_FIELDS} for i in record.items]


__all__ = [
    "AWAITING_PAYMENT",
    "CATALOGUE",
    "Market",
    "ORDER_STATUSES",
    "OrderFactory",
    "OrderRecord",
    "iso",
    "money",
    "set_status",
    "visible",
]
