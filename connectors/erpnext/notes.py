"""ERPNext documents after the order: Delivery Notes for shipments, return Delivery Notes
(negative quantities) and Credit Notes (return ``Sales Invoice``) for refunds; pure mapping.

Every call maps our ``line_id`` to its Sales Order item through ``custom_marketplace_line_id``
(``so_detail`` = that item's ``name``, its rate, warehouse); see ``connectors.erpnext.client``
for how they are looked up and posted exactly once.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from retail_sync.connectors.contracts import Refund, Shipment
from retail_sync.connectors.erpnext.documents import amount_text
from retail_sync.connectors.erpnext.fields import LINE_FIELD, RETURN_FIELD, SHIPMENT_FIELD
from retail_sync.connectors.errors import PermanentError

ADJUSTMENT_ACCOUNT = "Refunds and Adjustments"
JSON = dict[str, Any]


def _dec(value: Any) -> Decimal:
    return Decimal(str(value or 0))


def order_item(so: JSON, line_id: str, sku: str) -> JSON:
    """The Sales Order item of our line ``line_id`` (by ``custom_marketplace_line_id``; an order
    typed into the ERP by hand: the first item of ``sku``); PermanentError when there is none."""
    items = so.get("items") or []
    found = next((i for i in items if i.get(LINE_FIELD) == line_id), None)
    found = found or next((i for i in items if i.get("item_code") == sku), None)
    if found is None:
        raise PermanentError(f"ERP sales order {so.get('name')} has no line {line_id} ({sku})")
    return dict(found)


def _header(order_key: str, so: JSON) -> JSON:
    return {
        "docstatus": 1,
        "customer": so.get("customer"),
        "company": so.get("company"),
        "currency": so.get("currency"),
        "po_no": order_key,
        "set_warehouse": so.get("set_warehouse"),
    }


def delivery_note_doc(order_key: str, so: JSON, shipment: Shipment) -> JSON:
    """The submitted Delivery Note for a warehouse shipment against Sales Order ``so``."""
    items = []
    for line in shipment.lines:
        item = order_item(so, line.line_id, line.sku)
        items.append({
            "item_code": item["item_code"], "qty": line.quantity, "rate": item.get("rate"),
            "warehouse": item.get("warehouse") or so.get("set_warehouse"),
            "against_sales_order": so["name"], "so_detail": item["name"],
            LINE_FIELD: line.line_id,
        })  # fmt: skip
    return {
        **_header(order_key, so),
        "posting_date": shipment.shipped_at[:10],
        SHIPMENT_FIELD: shipment.shipment_id,
        "custom_carrier": shipment.carrier,
        "custom_tracking_number": shipment.tracking_number,
        "custom_shipped_at": shipment.shipped_at,
        "items": items,
    }


def return_rows(so: JSON, notes: list[JSON], refund: Refund) -> list[tuple[str, JSON, int]]:
    """(Delivery Note, its row, units) sending ``refund.lines`` back: the oldest shipped rows
    first, each up to what it shipped less what already came back."""
    rows = []
    for line in refund.lines:
        item, need = order_item(so, line.line_id, line.sku), line.quantity
        for note in notes:
            for row in note.get("items") or []:
                if need <= 0 or row.get("so_detail") != item["name"]:
                    continue
                take = min(need, int(_dec(row.get("qty")) - _dec(row.get("returned_qty"))))
                if take > 0:
                    rows.append((note["name"], row, take))
                    need -= take
        if need > 0:
            raise PermanentError(
                f"ERP return {refund.refund_id}: {need} units of line {line.line_id} were not "
                f"delivered (or already returned) on sales order {so.get('name')}"
            )
    return rows


def return_note_doc(order_key: str, so: JSON, refund: Refund,
                    rows: list[tuple[str, JSON, int]]) -> JSON:
    """The submitted return Delivery Note (negative quantities) for ``rows``."""
    sources = {name for name, _, _ in rows}
    return {
        **_header(order_key, so),
        "is_return": 1,
        "return_against": sources.pop() if len(sources) == 1 else None,
        RETURN_FIELD: refund.refund_id,
        "custom_return_reason": refund.reason,
        "items": [{"item_code": row["item_code"], "qty": -qty, "rate": row.get("rate"),
                   "warehouse": row.get("warehouse"), "against_sales_order": so["name"],
                   "so_detail": row.get("so_detail"), "dn_detail": row["name"],
                   LINE_FIELD: row.get(LINE_FIELD)}
                  for _, row, qty in rows],
    }  # fmt: skip


def refund_amount(refund: Refund) -> Decimal:
    try:
        amount = Decimal(refund.amount)
    except (ArithmeticError, ValueError):
        raise PermanentError(f"refund {refund.refund_id}: bad amount {refund.amount!r}") from None
    if not amount.is_finite() or amount <= 0:
        raise PermanentError(f"refund {refund.refund_id}: amount must be positive, got {amount}")
    return amount


def credit_note_doc(order_key: str, so: JSON, refund: Refund, return_against: str | None) -> JSON:
    """The Credit Note for exactly ``refund.amount``: the refunded lines at the order's rates and
    the difference as one Actual charge (see the module doc)."""
    amount, items = refund_amount(refund), []
    for line in refund.lines:
        item = order_item(so, line.line_id, line.sku)
        items.append({"item_code": item["item_code"], "qty": -line.quantity,
                      "rate": item.get("rate"), "sales_order": so["name"],
                      "so_detail": item["name"], LINE_FIELD: line.line_id})  # fmt: skip
    if not items:
        first = (so.get("items") or [{}])[0]
        items.append({"item_code": first.get("item_code"), "qty": 0, "rate": 0,
                      "sales_order": so["name"],
                      "description": f"Refund {refund.refund_id}"})  # fmt: skip
    lines_total = sum((_dec(i["qty"]) * _dec(i["rate"]) for i in items), Decimal(0))
    adjustment = (-lines_total - amount).quantize(Decimal("0.01")) if items else -amount
    taxes = [] if not adjustment else [{
        "charge_type": "Actual", "account_head": ADJUSTMENT_ACCOUNT,
        "description": f"Refund {refund.refund_id}: {refund.reason}",
        "tax_amount": amount_text(adjustment)}]  # fmt: skip
    return {**_header(order_key, so), "is_return": 1, "return_against": return_against,
            RETURN_FIELD: refund.refund_id, "custom_refund_reason": refund.reason,
            "items": items, "taxes": taxes}  # fmt: skip


def invoice_to_credit(invoices: list[JSON], amount: Decimal) -> str | None:
    """The oldest invoice with at least ``amount`` left to credit (its grand total plus the
    negative totals of the credit notes against it), or None."""
    credited: dict[str, Decimal] = {}
    for doc in invoices:
        if doc.get("is_return") and doc.get("return_against"):
            key = doc["return_against"]
            credited[key] = credited.get(key, Decimal(0)) + _dec(doc.get("grand_total"))
    for doc in invoices:
        if not doc.get("is_return") and _dec(doc.get("grand_total")) + credited.get(
            doc["name"], Decimal(0)
        ) >= amount:
            return str(doc["name"])
    return None


__all__ = [
    "credit_note_doc",
    "delivery_note_doc",
    "invoice_to_credit",
    "order_item",
    "refund_amount",
    "return_note_doc",
    "return_rows",
]
