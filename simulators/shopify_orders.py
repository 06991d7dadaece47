"""Shopify order resources for the simulator, shaped like the REST Admin ``order`` object.

The template follows Shopify's own fixture (shopify_python_api ``order.json``) trimmed to the
fields an integration reads. Money is a string with two decimals, and the totals are consistent the
way Shopify's are:

    subtotal_price = total_line_items_price - total_discounts        (after discounts)
    total_price    = subtotal_price + total_tax + shipping
                   = total_line_items_price + total_tax + shipping - total_discounts

``total_tax`` is the sum of the line items' ``tax_lines`` (tax on the discounted line amount).
"""

from __future__ import annotations

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
    ) -> None:
        self.rng = random.Random(seed)
        self.shop_domain = shop_domain
        self.currency = currency
        self.skus = skus or DEFAULT_SKUS
        # seeded runs repeat their ids; unseeded runs start from the clock so ids never recur
        base = self.rng.randrange(10**9) if seed is not None else int(time.time() * 1000) % 10**12
        self._next_id = 5_000_000_000_000 + base * 10
        self._order_number = 1000

    def _id(self) -> int:
        self._next_id += self.rng.randint(1, 9)
        return self._next_id

    # --- parts -----------------------------------------------------------------------------

    def _line_item(self, sku: str) -> JSON:
        title, variant, price = _TITLES.get(sku, (f"Product {sku}", "Default", "10.00"))
        qty = self.rng.randint(1, 3)
        gross = Decimal(price) * qty
        discount = (
            (gross * Decimal("0.10")).quantize(CENT) if self.rng.random() < 0.2 else Decimal(0)
        )
        tax = ((gross - discount) * TAX_RATE).quantize(CENT, rounding=ROUND_HALF_UP)
        return {
            "id": self._id(),
            "variant_id": self._id(),
            "product_id": self._id(),
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
            "total_discount": money(discount),
            "discount_allocations": (
                [{"amount": money(discount), "discount_application_index": 0}] if discount else []
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

    @staticmethod
    def _totals(lines: list[JSON], shipping: str) -> JSON:
        items = sum((Decimal(li["price"]) * li["quantity"] for li in lines), Decimal(0))
        discounts = sum((Decimal(li["total_discount"]) for li in lines), Decimal(0))
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

    def order(self) -> JSON:
        """A new, valid order (the body of an ``orders/create`` webhook)."""
        order_id = self._id()
        self._order_number += 1
        first, last = self.rng.choice(_FIRST), self.rng.choice(_LAST)
        email = f"{first}.{last}.{order_id % 100000}@example.com".lower()
        created = shop_time(time.time())
        count = self.rng.randint(1, min(3, len(self.skus)))
        lines = [self._line_item(sku) for sku in self.rng.sample(self.skus, count)]
        ship_title, ship_price = self.rng.choice(_SHIPPING)
        totals = self._totals(lines, ship_price)
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
            "line_items": lines,
            "shipping_lines": [
                {"code": ship_title, "title": ship_title, "price": ship_price, "source": "shopify"}
            ],
            "billing_address": address,
            "shipping_address": dict(address),
            "customer": self._customer(first, last, email, created),
        }

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
