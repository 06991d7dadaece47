"""Shopify order resources for the simulator, shaped like the REST Admin ``order`` object.

The template follows Shopify's own fixture (shopify_python_api ``order.json``) trimmed to the
fields an integration reads. Money is a string with two decimals, and the totals are consistent the
way Shopify's are:

    subtotal_price = total_line_items_price - total_discounts        (after discounts)
    total_price    = subtotal_price + total_tax + shipping
                   = total_line_items_price + total_tax + shipping - total_discounts

``total_tax`` is the sum of the line items' ``tax_lines`` (tax on the discounted line amount).

As real 2024-04 bodies do, a line's discount is only in ``discount_allocations`` (with its
``amount_set``); the line's ``total_discount`` stays "0.00". Every line has ``current_quantity``
and ``price_set``; the order has ``*_set`` amounts in shop and presentment money (the
presentment currency is the shop's unless ``presentment_rates`` offers others, then drawn at
random), ``current_*`` totals and ``refunds`` (``edit_quantity`` models an order edit: the line's
``current_quantity`` and the ``current_*`` totals drop, ``quantity`` and ``total_price`` stay as
ordered). ``custom_item_rate`` adds custom items (no sku, variant or product: typed in by the
merchant, e.g. an engraving) to that share of generated orders.

Every SKU has one catalogue entry with stable ids (``catalog_ids``): the product, its single variant
and the variant's inventory item, derived from the SKU so that line items, ``products.json`` and
``inventory_levels`` agree across runs. Generated orders pick 1-3 SKUs of ``skus`` with 1..
``max_quantity`` units each; ``order(lines=...)`` builds one with exactly the given lines.
"""

from __future__ import annotations

import hashlib
import json
import random
import time
import uuid
from datetime import datetime, timedelta, timezone
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

JSON = dict[str, Any]
CENT = Decimal("0.01")
SHOP_TZ = timezone(timedelta(hours=-5))  # timestamps carry the shop's offset, e.g. -05:00

DEFAULT_SKUS = ["IPOD2008GREEN", "IPOD2008RED", "IPOD2008BLACK", "TSHIRT-M-BLU", "MUG-CLASSIC"]
_TITLES = {
    "IPOD2008GREEN": ("IPod Nano - 8gb", "green", "199.00"),
    "IPOD2008RED": ("IPod Nano - 8gb", "red", "199.00"),
    "IPOD2008BLACK": ("IPod Nano - 8gb", "black", "199.00"),
    "TSHIRT-M-BLU": ("Crew T-Shirt", "M / Blue", "24.50"),
    "MUG-CLASSIC": ("Classic Mug", "White", "12.99"),
}
_FIRST = ["Bob", "Alice", "Chen", "Fatima", "Diego", "Ingrid", "Kofi", "Mei"]
_LAST = ["Norman", "Smith", "Wang", "Khan", "Garcia", "Larsen", "Mensah", "Tanaka"]
_CITIES = [
    ("Louisville", "Kentucky", "KY", "40202"),
    ("Ottawa", "Ontario", "ON", "K1P 1J1"),
    ("Austin", "Texas", "TX", "73301"),
]
_STATUSES = ["paid", "paid", "paid", "authorized", "pending"]
_SHIPPING = [("Free Shipping", "0.00"), ("Standard", "4.99"), ("Express", "9.99")]
TAX_RATE = Decimal("0.06")


def catalog_ids(sku: str) -> JSON:
    """Stable ``product_id``, ``variant_id`` and ``inventory_item_id`` of ``sku``'s one variant."""
    h = int.from_bytes(hashlib.sha256(sku.encode()).digest()[:5], "big") % 10**11
    return {
        "product_id": 7_000_000_000_000 + h,
        "variant_id": 40_000_000_000_000 + h,
        "inventory_item_id": 42_000_000_000_000 + h,
    }


def catalog_entry(sku: str) -> tuple[str, str, str]:
    """(product title, variant title, price) of ``sku``."""
    return _TITLES.get(sku, (f"Product {sku}", "Default", "10.00"))


def money(value: Decimal) -> str:
    return str(value.quantize(CENT, rounding=ROUND_HALF_UP))


def shop_time(now: float) -> str:
    return datetime.fromtimestamp(now, SHOP_TZ).isoformat(timespec="seconds")


class ShopifyOrderFactory:
    """Generates Shopify ``order`` resources with unique, increasing ids and consistent totals."""

    def __init__(
        self,
        seed: int | None = None,
        shop_domain: str = "retail-sync-demo.myshopify.com",
        currency: str = "USD",
        skus: list[str] | None = None,
        max_quantity: int = 3,
        presentment_rates: dict[str, str] | None = None,
        custom_item_rate: float = 0.0,
    ) -> None:
        self.rng = random.Random(seed)
        self.shop_domain = shop_domain
        self.currency = currency
        self.skus = list(skus or DEFAULT_SKUS)
        self.max_quantity = max(1, max_quantity)
        self.presentment_rates = {k: Decimal(v) for k, v in (presentment_rates or {}).items()}
        self.custom_item_rate = custom_item_rate
        # seeded runs repeat their ids; unseeded runs start from the clock so ids never recur
        base = self.rng.randrange(10**9) if seed is not None else int(time.time() * 1000) % 10**12
        self._next_id = 5_000_000_000_000 + base * 10
        self._order_number = 1000

    def _id(self) -> int:
        self._next_id += self.rng.randint(1, 9)
        return self._next_id

    # --- parts -----------------------------------------------------------------------------

    def _line_item(self, sku: str, qty: int | None = None) -> JSON:
        title, variant, price = catalog_entry(sku)
        qty = self.rng.randint(1, self.max_quantity) if qty is None else qty
        gross = Decimal(price) * qty
        discount = (
            (gross * Decimal("0.10")).quantize(CENT) if self.rng.random() < 0.2 else Decimal(0)
        )
        tax = ((gross - discount) * TAX_RATE).quantize(CENT, rounding=ROUND_HALF_UP)
        return {
            "id": self._id(),
            "variant_id": catalog_ids(sku)["variant_id"],
            "product_id": catalog_ids(sku)["product_id"],
            "title": title,
            "variant_title": variant,
            "name": f"{title} - {variant}",
            "sku": sku,
            "vendor": None,
            "quantity": qty,
            "price": price,
            "grams": 200,
            "requires_shipping": True,
            "taxable": True,
            "gift_card": False,
            "fulfillment_service": "manual",
            "fulfillment_status": None,
            "current_quantity": qty,
            "fulfillable_quantity": qty,
            "total_discount": "0.00",  # 2024-04: the discount is only in discount_allocations
            "discount_allocations": (
                [{"amount": money(discount), "discount_application_index": 0,
                  "amount_set": None}] if discount else []
            ),
            "tax_lines": [{"price": money(tax), "rate": float(TAX_RATE), "title": "State Tax"}],
            "properties": [],
            "product_exists": True,
        }

    def _address(self, first: str, last: str) -> JSON:
        city, province, code, zip_code = self.rng.choice(_CITIES)
        country, country_code = ("Canada", "CA") if code == "ON" else ("United States", "US")
        return {
            "first_name": first,
            "last_name": last,
            "name": f"{first} {last}",
            "address1": f"{self.rng.randint(1, 999)} Chestnut Street",
            "address2": "",
            "city": city,
            "province": province,
            "province_code": code,
            "country": country,
            "country_code": country_code,
            "zip": zip_code,
            "company": None,
            "phone": "555-625-1199",
        }

    def _customer(self, first: str, last: str, email: str, created: str) -> JSON:
        return {
            "id": self._id(),
            "email": email,
            "first_name": first,
            "last_name": last,
            "phone": None,
            "state": "enabled",
            "verified_email": True,
            "tags": "",
            "currency": self.currency,
            "created_at": created,
            "updated_at": created,
        }

    def _custom_item(self) -> JSON:
        """A custom item: typed in by the merchant, no sku, variant or product."""
        item = self._line_item("CUSTOM", 1)
        item.update(variant_id=None, product_id=None, sku=None, title="Gift engraving",
                    variant_title=None, name="Gift engraving", product_exists=False,
                    requires_shipping=False, price="5.00", discount_allocations=[],
                    tax_lines=[{"price": money(Decimal("5.00") * TAX_RATE), "rate": float(TAX_RATE),
                                "title": "State Tax"}])
        return item

    @staticmethod
    def _totals(lines: list[JSON], shipping: str) -> JSON:
        items = sum((Decimal(li["price"]) * li["quantity"] for li in lines), Decimal(0))
        discounts = sum((Decimal(a["amount"]) for li in lines for a in li["discount_allocations"]),
                        Decimal(0))
        tax = sum((Decimal(t["price"]) for li in lines for t in li["tax_lines"]), Decimal(0))
        subtotal = items - discounts
        return {
            "total_line_items_price": money(items),
            "total_discounts": money(discounts),
            "subtotal_price": money(subtotal),
            "total_tax": money(tax),
            "total_price": money(subtotal + tax + Decimal(shipping)),
            "tax_lines": [{"price": money(tax), "rate": float(TAX_RATE), "title": "State Tax"}],
        }

    # --- orders ------------------------------------------------------------------------------

    def _lines(self, lines: list[tuple[str, int]] | None) -> list[JSON]:
        if lines is not None:
            return [self._line_item(sku, qty) for sku, qty in lines]
        count = self.rng.randint(1, min(3, len(self.skus)))
        return [self._line_item(sku) for sku in self.rng.sample(self.skus, count)]

    def order(self, lines: list[tuple[str, int]] | None = None) -> JSON:
        """A new, valid order (the body of an ``orders/create`` webhook); ``lines`` as
        ``[(sku, quantity)]`` fixes its line items, otherwise they are drawn from ``skus``."""
        order_id = self._id()
        self._order_number += 1
        first, last = self.rng.choice(_FIRST), self.rng.choice(_LAST)
        email = f"{first}.{last}.{order_id % 100000}@example.com".lower()
        created = shop_time(time.time())
        items = self._lines(lines)
        if lines is None and self.rng.random() < self.custom_item_rate:
            items.append(self._custom_item())
        ship_title, ship_price = self.rng.choice(_SHIPPING)
        totals = self._totals(items, ship_price)
        address = self._address(first, last)
        return {
            "id": order_id,
            "admin_graphql_api_id": f"gid://shopify/Order/{order_id}",
            "name": f"#{self._order_number}",
            "order_number": self._order_number,
            "number": self._order_number - 1000,
            "email": email,
            "contact_email": email,
            "created_at": created,
            "updated_at": created,
            "processed_at": created,
            "currency": self.currency,
            "presentment_currency": self.currency,
            **totals,
            "refunds": [],
            "taxes_included": False,
            "financial_status": self.rng.choice(_STATUSES),
            "fulfillment_status": None,
            "confirmed": True,
            "test": False,
            "cancelled_at": None,
            "cancel_reason": None,
            "closed_at": None,
            "token": uuid.UUID(int=self.rng.getrandbits(128)).hex,
            "gateway": "shopify_payments",
            "payment_gateway_names": ["shopify_payments"],
            "source_name": "web",
            "discount_codes": (
                [{"code": "TENOFF", "amount": totals["total_discounts"], "type": "percentage"}]
                if Decimal(totals["total_discounts"])
                else []
            ),
            "line_items": items,
            "shipping_lines": [
                {"code": ship_title, "title": ship_title, "price": ship_price, "source": "shopify"}
            ],
            "billing_address": address,
            "shipping_address": dict(address),
            "customer": self._customer(first, last, email, created),
        } | self._presentment(totals, items)

    def _presentment(self, totals: JSON, items: list[JSON]) -> JSON:
        """``presentment_currency``, the ``*_set`` amounts and the ``current_*`` totals."""
        currency, rate = self.currency, Decimal(1)
        if self.presentment_rates and self.rng.random() < 0.3:
            currency = self.rng.choice(sorted(self.presentment_rates))
            rate = self.presentment_rates[currency]
        set_of = money_set(self.currency, currency, rate)
        for item in items:
            item["price_set"] = set_of(item["price"])
            item["total_discount_set"] = set_of(item["total_discount"])
            for allocation in item["discount_allocations"]:
                allocation["amount_set"] = set_of(allocation["amount"])
        out: JSON = {"presentment_currency": currency}
        for name in ("total_price", "subtotal_price", "total_tax", "total_discounts",
                     "total_line_items_price"):
            out[f"{name}_set"] = set_of(totals[name])
        for name in ("total_price", "subtotal_price", "total_tax", "total_discounts"):
            out[f"current_{name}"] = totals[name]
            out[f"current_{name}_set"] = set_of(totals[name])
        return out

    def unmappable_order(self) -> JSON:
        """Valid JSON that cannot become a canonical order (the defect varies)."""
        order = self.order()
        defect = self.rng.choice(["no_lines", "zero_quantity", "bad_currency", "missing_id"])
        if defect == "no_lines":
            order["line_items"] = []
        elif defect == "zero_quantity":
            order["line_items"][0]["quantity"] = 0
        elif defect == "bad_currency":
            order["currency"] = order["presentment_currency"] = "US$"
        else:
            del order["id"]
            del order["admin_graphql_api_id"]
        return order

    def malformed_body(self) -> bytes:
        """Bytes that are not JSON: an order cut off mid-document."""
        body = json.dumps(self.order(), separators=(",", ":")).encode()
        return body[: self.rng.randint(10, len(body) // 2)]


def money_set(shop: str, presentment: str, rate: Decimal) -> Any:
    """``amount`` -> ``{"shop_money": ..., "presentment_money": ...}``."""
    def of(amount: str) -> JSON:
        shown = Decimal(amount) * rate
        return {"shop_money": {"amount": amount, "currency_code": shop},
                "presentment_money": {"amount": money(shown), "currency_code": presentment}}
    return of


def edit_quantity(order: JSON, line_id: int, quantity: int) -> None:
    """An order edit: line ``line_id`` now wants ``quantity`` units (0: removed). Its
    ``current_quantity`` and the order's ``current_*`` totals follow; ``quantity`` and
    ``total_price`` stay what was ordered, as Shopify keeps them."""
    line = next(li for li in order["line_items"] if li["id"] == line_id)
    if not 0 <= quantity <= line["current_quantity"]:
        raise ValueError(f"line {line_id} has {line['current_quantity']} units; cannot make {quantity}")
    line["current_quantity"] = line["fulfillable_quantity"] = quantity
    current = [dict(li, quantity=li["current_quantity"]) for li in order["line_items"]]
    for li in current:
        share = Decimal(li["quantity"]) / Decimal(next(x["quantity"] for x in order["line_items"]
                                                       if x["id"] == li["id"]))
        li["discount_allocations"] = [{"amount": money(Decimal(a["amount"]) * share)}
                                      for a in li["discount_allocations"]]
        li["tax_lines"] = [{"price": money(Decimal(t["price"]) * share)} for t in li["tax_lines"]]
    shipping = sum((Decimal(s["price"]) for s in order["shipping_lines"]), Decimal(0))
    totals = ShopifyOrderFactory._totals(current, money(shipping))
    for name in ("total_price", "subtotal_price", "total_tax", "total_discounts"):
        order[f"current_{name}"] = totals[name]
        shop = order[f"current_{name}_set"]["shop_money"]["currency_code"]
        shown = order[f"current_{name}_set"]["presentment_money"]["currency_code"]
        rate = Decimal(1) if shop == shown else (
            Decimal(order["total_price_set"]["presentment_money"]["amount"])
            / Decimal(order["total_price"]))
        order[f"current_{name}_set"] = money_set(shop, shown, rate)(totals[name])
    order["updated_at"] = shop_time(time.time())


# --- after the sale: seller cancellations and refunds ------------------------------------------

CANCEL_REASONS = ("customer", "inventory", "fraud", "declined", "other")
RESTOCK_TYPES = ("no_restock", "cancel", "return", "legacy_restock")


def refunded_quantities(order: JSON) -> dict[int, int]:
    """Units already refunded (or cancelled) per line item id, over every refund of ``order``."""
    done: dict[int, int] = {}
    for refund in order.get("refunds", []):
        for item in refund["refund_line_items"]:
            done[item["line_item_id"]] = done.get(item["line_item_id"], 0) + item["quantity"]
    return done


def remaining_quantities(order: JSON) -> dict[int, int]:
    """Units of each line item neither refunded nor cancelled yet."""
    done = refunded_quantities(order)
    return {li["id"]: li["quantity"] - done.get(li["id"], 0) for li in order["line_items"]}


def refunded_by_type(order: JSON, *kinds: str) -> dict[int, int]:
    """Units refunded with one of the restock types ``kinds``, per line item id."""
    done: dict[int, int] = {}
    for refund in order.get("refunds", []):
        for item in refund["refund_line_items"]:
            if item["restock_type"] in kinds:
                done[item["line_item_id"]] = done.get(item["line_item_id"], 0) + item["quantity"]
    return done


def fulfilled_quantities(order: JSON) -> dict[int, int]:
    """Units shipped per line item id, over the order's successful fulfillments."""
    done: dict[int, int] = {}
    for fulfillment in order.get("fulfillments", []):
        if fulfillment["status"] == "success":
            for item in fulfillment["line_items"]:
                done[item["id"]] = done.get(item["id"], 0) + item["quantity"]
    return done


def fulfillable_quantities(order: JSON) -> dict[int, int]:
    """Units of each line item that can still be fulfilled: neither shipped nor cancelled.

    Refunded units without a cancellation (``return``, ``no_restock``) count against the shipped
    units first; only what exceeds them takes units off the unshipped rest (a simplification:
    the simulator does not remember which units a ``no_restock`` refund was for)."""
    shipped, cancelled = fulfilled_quantities(order), refunded_by_type(order, "cancel")
    other = refunded_by_type(order, "return", "no_restock", "legacy_restock")
    left = {}
    for line in order["line_items"]:
        i = line["id"]
        beyond = max(0, other.get(i, 0) - shipped.get(i, 0))
        left[i] = max(0, line["quantity"] - shipped.get(i, 0) - cancelled.get(i, 0) - beyond)
    return left


def refunded_amount(order: JSON) -> Decimal:
    """Money paid back so far: the refund transactions of every refund."""
    return sum(
        (Decimal(t["amount"]) for r in order.get("refunds", []) for t in r["transactions"]
         if t["kind"] == "refund" and t.get("status", "success") == "success"),
        Decimal(0),
    )


def _update_line_states(order: JSON) -> None:
    """Each line's ``fulfillable_quantity`` / ``fulfillment_status`` and the order's
    ``fulfillment_status`` (null, partial, fulfilled) from its fulfillments and refunds."""
    left, shipped = fulfillable_quantities(order), fulfilled_quantities(order)
    removed = refunded_by_type(order, "cancel")
    for line in order["line_items"]:
        line["fulfillable_quantity"] = left[line["id"]]
        if "current_quantity" in line:  # cancel-type refunds remove units, as edits do
            line["current_quantity"] = min(line["current_quantity"],
                                           line["quantity"] - removed.get(line["id"], 0))
        if shipped.get(line["id"]):
            line["fulfillment_status"] = "partial" if left[line["id"]] else "fulfilled"
    if any(shipped.values()):
        order["fulfillment_status"] = "partial" if any(left.values()) else "fulfilled"


def _update_financial_status(order: JSON) -> None:
    refunded = refunded_amount(order)
    if refunded > 0:
        full = refunded >= Decimal(order["total_price"])
        order["financial_status"] = "refunded" if full else "partially_refunded"


def add_fulfillment(
    order: JSON, items: list[tuple[int, int]], *, fulfillment_id: int, location_id: int,
    tracking_company: str | None, tracking_numbers: list[str], tracking_urls: list[str],
) -> JSON:
    """Record a successful fulfillment of ``items`` ``[(line_item_id, quantity)]`` (already
    validated) and update the line and order fulfillment statuses."""
    by_id = {li["id"]: li for li in order["line_items"]}
    now = shop_time(time.time())
    number = len(order.get("fulfillments", [])) + 1
    fulfillment = {
        "id": fulfillment_id,
        "order_id": order["id"],
        "name": f"{order['name']}.{number}",
        "status": "success",
        "service": "manual",
        "location_id": location_id,
        "created_at": now,
        "updated_at": now,
        "shipment_status": None,
        "tracking_company": tracking_company,
        "tracking_number": tracking_numbers[0] if tracking_numbers else None,
        "tracking_numbers": tracking_numbers,
        "tracking_url": tracking_urls[0] if tracking_urls else None,
        "tracking_urls": tracking_urls,
        "line_items": [
            {**by_id[line_id], "quantity": qty, "fulfillment_status": "fulfilled"}
            for line_id, qty in items
        ],
    }
    order.setdefault("fulfillments", []).append(fulfillment)
    _update_line_states(order)
    order["updated_at"] = now
    return fulfillment


def add_refund(
    order: JSON, items: list[tuple[int, int, str]], *, note: str | None, refund_id: int,
    location_id: int, transactions: list[JSON] | None = None,
) -> JSON:
    """Record a refund of ``items`` ``[(line_item_id, quantity, restock_type)]`` on ``order``
    (quantities already validated) with its ``transactions`` (``{"kind": "refund", "amount",
    "gateway"}``), and update each line's ``fulfillable_quantity`` and the order's
    ``financial_status`` (partially_refunded / refunded once money went back)."""
    by_id = {li["id"]: li for li in order["line_items"]}
    now = shop_time(time.time())
    refund = {
        "id": refund_id,
        "order_id": order["id"],
        "created_at": now,
        "note": note,
        "restock": any(kind != "no_restock" for _, _, kind in items),
        "refund_line_items": [
            {
                "id": refund_id + n + 1,
                "line_item_id": line_id,
                "quantity": qty,
                "restock_type": kind,
                "location_id": location_id if kind != "no_restock" else None,
                "line_item": dict(by_id[line_id]),
                "subtotal": money(Decimal(by_id[line_id]["price"]) * qty),
            }
            for n, (line_id, qty, kind) in enumerate(items)
        ],
        "transactions": [
            {
                "id": refund_id + len(items) + n + 1,
                "order_id": order["id"],
                "kind": "refund",
                "amount": money(Decimal(str(t["amount"]))),
                "gateway": t.get("gateway") or order.get("gateway"),
                "status": "success",
                "currency": order["currency"],
                "created_at": now,
                "parent_id": t.get("parent_id"),
            }
            for n, t in enumerate(transactions or [])
        ],
        "order_adjustments": [],
    }
    order.setdefault("refunds", []).append(refund)
    _update_line_states(order)
    _update_financial_status(order)
    order["updated_at"] = now
    return refund


def mark_cancelled(order: JSON, reason: str) -> None:
    now = shop_time(time.time())
    order.update(cancelled_at=now, cancel_reason=reason, closed_at=now, updated_at=now)
