"""The ERPNext Sales Order of a canonical order: pure mapping, no I/O.

The canonical order becomes a Sales Order inserted and submitted (``"docstatus": 1``, so the ERP
reserves its stock) under the channel's Customer (``RETAIL_SYNC_ERP_CHANNEL_CUSTOMERS``: one
Customer per marketplace, the buyer in ``contact_email``/``custom_buyer_*``), whose ``po_no`` and
unique Custom Field ``custom_marketplace_order_key`` are our ``order_key``. Units the engine
accepted without stock travel per item in the Custom Field ``custom_backorder_qty``. Every field
written is an ERPNext field or one of ``connectors.erpnext.fields.CUSTOM_FIELDS``.

The documents after the order (shipments, returns, credit notes) are in
``connectors.erpnext.notes``; ``connectors.erpnext.client`` posts both.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

from retail_sync.connectors.erpnext.fields import (
    LINE_FIELD,
    MARKETPLACE_WAREHOUSE,
    ORDER_KEY_FIELD,
)
from retail_sync.streams.models import Address, NameValue, Order, OrderLine

SALES_ORDER = "Sales Order"
DELIVERY_NOTE, SALES_INVOICE = "Delivery Note", "Sales Invoice"
JSON = dict[str, Any]
CENT, RATE_PLACES = Decimal("0.01"), Decimal("0.0001")
TAX_ACCOUNT, SHIPPING_ACCOUNT = "Sales Tax", "Freight and Forwarding Charges"

# --- pure mapping -----------------------------------------------------------------------------


def amount_text(value: Decimal) -> str:
    """Decimal as a plain string, so no precision is lost in JSON."""
    return format(value, "f")


def discounted_rate(line: OrderLine) -> Decimal:
    """The unit price the buyer paid: the line's price less its discount spread over its units
    (Shopify ``discount_allocations``, Amazon ``PromotionDiscount``, Walmart negative PRODUCT
    charges), to 4 places when it does not divide (as unit prices are, streams.models)."""
    rate = line.unit_price.amount - line.discount.amount / line.quantity
    exponent = rate.as_tuple().exponent
    if isinstance(exponent, int) and exponent < -4:
        rate = rate.quantize(RATE_PLACES, ROUND_HALF_EVEN)
    return max(rate, Decimal(0))


def _pairs(pairs: list[NameValue]) -> str | None:
    return "\n".join(f"{p.name}: {p.value}" for p in pairs) or None


def _items(
    order: Order, delivery_date: str, warehouse: str, backorders: Mapping[str, int]
) -> list[JSON]:
    """One item per line at the discounted rate: ``price_list_rate`` the marketplace's unit
    price, ``discount_amount`` the discount per unit, ``rate`` what the buyer paid per unit."""
    unknown = set(backorders) - {line.line_id for line in order.lines}
    if unknown:
        raise ValueError(f"backorders name lines the order does not have: {sorted(unknown)}")
    items = []
    for line in order.lines:
        rate = discounted_rate(line)
        item: JSON = {
            "item_code": line.sku,
            "item_name": line.title or line.sku,
            "qty": line.quantity,
            "rate": amount_text(rate),
            "uom": "Nos",
            "delivery_date": delivery_date,
            "warehouse": warehouse,
            LINE_FIELD: line.line_id,
        }
        if rate != line.unit_price.amount:
            item["price_list_rate"] = amount_text(line.unit_price.amount)
            item["discount_amount"] = amount_text(line.unit_price.amount - rate)
        if line.properties:  # e.g. the engraving text the warehouse must apply
            item["additional_notes"] = _pairs(line.properties)
        if line.marketplace_product_id:  # the marketplace's own code of the item (ASIN)
            item["customer_item_code"] = line.marketplace_product_id
        if line.condition:
            item["custom_item_condition"] = line.condition
        if backorders.get(line.line_id):
            item["custom_backorder_qty"] = backorders[line.line_id]
        items.append(item)
    return items


def line_discounts(order: Order) -> Decimal:
    """What the items' discounted rates take off, in the order's currency (to the cent)."""
    return sum(((ln.unit_price.amount - discounted_rate(ln)) * ln.quantity
                for ln in order.lines), Decimal(0)).quantize(CENT)


def _actual_charge(account_head: str, description: str, amount: Decimal) -> JSON:
    return {
        "charge_type": "Actual",
        "account_head": account_head,
        "description": description,
        "tax_amount": amount_text(amount),
    }


def _tax_rows(order: Order) -> list[JSON]:
    """One ``Actual`` row per tax of the order by name and rate (``description`` "State Tax
    6.25%", ``rate`` the percentage), their amounts summing to ``tax_total`` (spread in proportion
    when the order was cut to fewer units); one "Marketplace sales tax" row when the channel
    names no tax (Amazon). Rows are fixed amounts: the marketplace computed the tax, the ERP must
    not compute it again."""
    total = order.tax_total.amount
    named = [t for t in order.tax_lines if t.amount.amount]
    stated = sum((t.amount.amount for t in named), Decimal(0))
    if not named or not stated:
        return [_actual_charge(TAX_ACCOUNT, "Marketplace sales tax", total)]
    rows, left = [], total
    for i, tax in enumerate(named):
        amount = left if i == len(named) - 1 else (tax.amount.amount * total / stated).quantize(CENT)
        left -= amount
        percent = None if tax.rate is None else (tax.rate * 100).normalize()
        row = _actual_charge(TAX_ACCOUNT, tax.title if percent is None else
                             f"{tax.title} {format(percent, 'f')}%", amount)
        if percent is not None:
            row["rate"] = amount_text(percent)
        rows.append(row)
    return rows


def _taxes(order: Order) -> list[JSON]:
    """Tax (unless already inside the prices) and shipping as fixed-amount rows."""
    rows = []
    if order.tax_total.amount and not order.taxes_included:
        rows.extend(_tax_rows(order))
    if order.shipping.amount:
        method = f"Shipping: {order.shipping_method}" if order.shipping_method else "Shipping"
        rows.append(_actual_charge(SHIPPING_ACCOUNT, method, order.shipping.amount))
    return rows


def address_text(address: Address | None) -> str | None:
    """An address as ERPNext displays one (its address template: lines, city, region and postal
    code, country, phone), for the read-only display fields."""
    if address is None:
        return None
    place = " ".join(p for p in (address.city, address.region, address.postal_code) if p)
    rows = [address.name, address.company, address.line1, address.line2, place,
            address.country_code, f"Phone: {address.phone}" if address.phone else None]
    return "\n".join(r for r in rows if r) or None


def _date_not_before(moment: Any, floor: str) -> str:
    return max(moment.date().isoformat(), floor) if moment is not None else floor


def _customer_fields(order: Order) -> JSON:
    """The buyer: email in ERPNext's ``contact_email``, name and marketplace id in Custom
    Fields (``customer``/``customer_name`` are the channel's Customer)."""
    billing, shipping = order.billing_address, order.shipping_address
    phone = order.customer.phone or (billing and billing.phone) or (shipping and shipping.phone)
    more = {"contact_phone": phone or None, "address_display": address_text(billing),
            "shipping_address": address_text(shipping)}
    return {
        "contact_email": order.customer.email,
        "custom_buyer_name": order.customer.name,
        "custom_buyer_id": order.customer.marketplace_customer_id,
        **{k: v for k, v in more.items() if v is not None},
    }


def _carried_fields(order: Order) -> JSON:
    """The rest of what finance and the warehouse need, in Custom Fields (``fields``; absent when
    the order has nothing to say)."""
    codes = ", ".join(d.code if d.amount is None else f"{d.code} ({d.amount.amount})"
                      for d in order.discount_codes)
    fields: JSON = {
        "custom_ship_by": order.ship_by.strftime("%Y-%m-%d %H:%M:%S") if order.ship_by else None,
        "custom_shipping_method": order.shipping_method,
        "custom_fulfilled_by": order.fulfilled_by,
        "custom_is_prime": 1 if order.is_prime else None,
        "custom_is_gift": 1 if order.is_gift else None,
        "custom_marketplace_order_type": order.order_type,
        "custom_original_order_id": order.original_order_id,
        "custom_discount_codes": codes or None,
        "custom_buyer_note": order.note,
        "custom_note_attributes": _pairs(order.note_attributes),
        "custom_buyer_po_no": order.buyer_po_number,
    }
    return {k: v for k, v in fields.items() if v is not None}


def sales_order_doc(
    order_key: str,
    order: Order,
    *,
    company: str,
    customer: str,
    warehouse: str,
    backorders: Mapping[str, int] | None = None,
    marketplace_warehouse: str = MARKETPLACE_WAREHOUSE,
) -> JSON:
    """The ERPNext Sales Order document for a canonical order: submitted on insert (so the ERP
    reserves stock), ``po_no`` and the unique ``custom_marketplace_order_key`` our order key.
    ``backorders`` maps a line_id to the units of that line accepted without stock
    (``custom_backorder_qty``); a line_id not in the order is a ValueError. Items are at the
    discounted rate; ``delivery_date`` is the promised delivery date when the channel states one.
    An order the marketplace fulfils from its own stock (Amazon AFN) is booked in
    ``marketplace_warehouse`` (so it reserves none of ours) with ``skip_delivery_note``: our
    warehouse never ships it (docs/ARCHITECTURE.md §5g).
    """
    transaction_date = order.created_at.date().isoformat()  # created_at is UTC
    delivery_date = _date_not_before(order.deliver_by, transaction_date)
    if order.fulfilled_by_marketplace:
        warehouse = marketplace_warehouse
    doc: JSON = {
        "docstatus": 1,
        "customer": customer,
        "company": company,
        "order_type": "Sales",
        "po_no": order_key,
        ORDER_KEY_FIELD: order_key,
        "po_date": transaction_date,
        "transaction_date": transaction_date,
        "delivery_date": delivery_date,
        "currency": order.currency,
        "set_warehouse": warehouse,
        "custom_marketplace": order.channel,
        "custom_marketplace_order_id": order.marketplace_order_id,
        "custom_marketplace_order_name": order.marketplace_order_name,
        **_customer_fields(order),
        **_carried_fields(order),
        "items": _items(order, delivery_date, warehouse, backorders or {}),
        "taxes": _taxes(order),
    }
    if order.fulfilled_by_marketplace:
        doc["skip_delivery_note"] = 1
    # what the items' rates do not already take off (an order-level or shipping discount)
    rest = order.discount_total.amount - line_discounts(order)
    if rest > 0:
        doc["apply_discount_on"] = "Net Total"
        doc["discount_amount"] = amount_text(rest)
    return doc


__all__ = [
    "DELIVERY_NOTE",
    "SALES_INVOICE",
    "SALES_ORDER",
    "address_text",
    "amount_text",
    "discounted_rate",
    "line_discounts",
    "sales_order_doc",
]
