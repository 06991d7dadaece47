"""Pure finance logic of the ERP simulator: Sales Invoices raised on delivery and Credit Notes.

The simulated ERP is configured to invoice on delivery: each submitted Delivery Note against a
Sales Order makes one submitted ``Sales Invoice`` (series ``ACC-SINV-.YYYY.-``) for the rows it
shipped, at the order's rates, with ``po_no`` (our order key) on the header and
``sales_order``/``so_detail``/``delivery_note``/``dn_detail`` on every row (ERPNext's Sales
Invoice has no header link to the order: the rows carry it; fields the doctype does not define
are dropped, ``simulators.erpnext.meta``). The order's charges (tax and shipping rows, its
discount) are billed **proportionally**: each invoice carries the share of every charge that
its net amount is of the order's net total, and the invoice that completes the delivery takes
what is left, so the invoices of a fully shipped order add up to its grand total to the cent.

A **Credit Note** is a ``Sales Invoice`` with ``is_return`` 1, posted by the integration:
negative ``qty`` rows (0 is allowed: an amount-only adjustment row) at non-negative rates, plus
``Actual`` charge rows of any sign; its ``grand_total`` must be negative. ``return_against`` (the
original invoice) is optional, as in ERPNext; without it, a row's ``sales_order`` or the
header's ``po_no`` names the order. What it credits may not exceed what is left of the
original invoice (its grand total less earlier credit notes against it) nor of the whole
order. It lowers the original's ``outstanding_amount`` and marks it "Credit Note Issued".
``custom_return_id`` is a unique Custom Field: the server (``simulators.erpnext.simulator``) refuses a
second credit note with the same one.
Posting a regular (non-return) invoice is refused: the ERP raises those.
No I/O here.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import datetime
from decimal import Decimal
from typing import Any

from retail_sync.simulators.erpnext.docs import (
    CENT,
    DocValidationError,
    _money,
    _number,
    _required_str,
    frappe_timestamp,
)
from retail_sync.simulators.erpnext.meta import keep_defined

JSON = dict[str, Any]
SALES_INVOICE = "Sales Invoice"
NAMING_SERIES = "ACC-SINV-.YYYY.-"
_ADMIN = "Administrator"
_DISCOUNT = -1  # key of the order's discount among its billed charges
#: header fields a client may not set on a credit note
_SERVER_FIELDS = {
    "name", "doctype", "docstatus", "idx", "owner", "creation", "modified", "modified_by",
    "status", "items", "taxes", "total", "net_total", "grand_total", "rounded_total",
    "outstanding_amount", "total_taxes_and_charges", "naming_series",
}  # fmt: skip
OrderLookup = Callable[[str | None, str | None], JSON | None]  # (sales_order, po_no) -> order


def _dec(value: Any) -> Decimal:
    return Decimal(str(value or 0))


class FinanceBook:
    """Every Sales Invoice and Credit Note, and what each order's charges have billed so far."""

    def __init__(self) -> None:
        self.invoices: dict[str, JSON] = {}
        self._series: dict[int, int] = {}
        self._by_return_id: dict[str, str] = {}
        self._charged: dict[str, dict[int, Decimal]] = {}  # order -> charge idx -> billed
        #: invoice -> its Sales Order (ERPNext keeps it on the rows, ``Sales Invoice Item``)
        self.order_of: dict[str, str] = {}

    # --- reading ---------------------------------------------------------------------------

    def docs(self) -> list[JSON]:
        """Newest first, as Frappe lists by default."""
        return list(reversed(self.invoices.values()))

    def find(self, name: str) -> JSON | None:
        return self.invoices.get(name)

    def replay(self, body: Any) -> JSON | None:
        """The credit note already posted under this body's return id, if any."""
        key = _return_id(body)
        return self.invoices[self._by_return_id[key]] if key in self._by_return_id else None

    def summaries(self) -> list[JSON]:
        keys = ("name", "is_return", "po_no", "grand_total", "return_against")
        return [{**{k: doc.get(k) for k in keys}, "sales_order": self.order_of.get(doc["name"])}
                for doc in self.invoices.values()]  # fmt: skip

    def counts(self) -> tuple[int, int]:
        """(invoices, credit notes)."""
        returns = sum(1 for doc in self.invoices.values() if doc["is_return"])
        return len(self.invoices) - returns, returns

    def _left_on_order(self, order: str) -> Decimal:
        docs = [d for d in self.invoices.values() if self.order_of.get(d["name"]) == order]
        return sum((_dec(d["grand_total"]) for d in docs), Decimal(0))

    def _left_on_invoice(self, invoice: JSON) -> Decimal:
        credits = [d for d in self.invoices.values() if d.get("return_against") == invoice["name"]]
        return _dec(invoice["grand_total"]) + sum((_dec(d["grand_total"]) for d in credits),
                                                   Decimal(0))  # fmt: skip

    # --- invoices raised on delivery -------------------------------------------------------

    def invoice_delivery(self, order: JSON, note: JSON, rows: list[tuple[JSON, JSON]],
                         now: datetime, *, completes: bool) -> tuple[JSON, dict[str, Decimal]]:
        """The invoice for ``rows`` ((Sales Order Item, Delivery Note Item)) of ``note``, and the
        net amount billed per Sales Order Item; ``completes``: the note completes the order's
        delivery (the invoice takes what is left of every charge)."""
        items: list[JSON] = []
        billed: dict[str, Decimal] = {}
        for idx, (so_item, dn_item) in enumerate(rows, start=1):
            amount = _dec(dn_item["qty"]) * _dec(so_item["rate"])
            billed[so_item["name"]] = billed.get(so_item["name"], Decimal(0)) + amount
            items.append(_invoice_item(idx, order, note, so_item, dn_item, amount))
        net = sum(billed.values(), Decimal(0))
        share = net / _dec(order["total"]) if _dec(order["total"]) else Decimal(0)
        charged = self._charged.setdefault(order["name"], {})

        def portion(key: int, full: Decimal) -> Decimal:
            amount = full - charged.get(key, Decimal(0)) if completes else (full * share)
            amount = amount.quantize(CENT)
            charged[key] = charged.get(key, Decimal(0)) + amount
            return amount

        discount = portion(_DISCOUNT, _dec(order.get("discount_amount")))
        taxes = [
            {"charge_type": "Actual", "account_head": tax["account_head"],
             "description": tax.get("description"), "idx": i,
             "tax_amount": _money(portion(tax["idx"], _dec(tax["tax_amount"])))}
            for i, tax in enumerate(order.get("taxes") or [], start=1)
        ]  # fmt: skip
        header = {"customer": order["customer"], "company": order.get("company"),
                  "currency": order.get("currency"), "po_no": order["po_no"],
                  "conversion_rate": order.get("conversion_rate", 1.0),
                  "discount_amount": _money(discount)}  # fmt: skip
        doc = self._store(header, items, taxes, net - discount, now, is_return=False,
                          order=order["name"])
        return doc, billed

    # --- credit notes ----------------------------------------------------------------------

    def credit_note(self, body: Any, order_of: OrderLookup, now: datetime) -> JSON:
        """Validate and submit a posted Credit Note (see the module doc). Raises
        DocValidationError, changing nothing, when a rule is broken."""
        if not isinstance(body, dict):
            raise DocValidationError("Request body must be a JSON object")
        if not body.get("is_return"):
            raise DocValidationError(
                "Sales Invoices are raised by the ERP on delivery; only a Credit Note "
                "(is_return 1) can be posted"
            )
        original = self._original(body.get("return_against"))
        rows = [r for r in body.get("items") or [] if isinstance(r, dict)]
        named = next((r.get("sales_order") for r in rows if r.get("sales_order")),
                     body.get("sales_order"))  # the server drops the header one (no such field)
        order = order_of(self.order_of.get(original["name"]) if original else named,
                         body.get("po_no"))  # fmt: skip
        if order is None:
            raise DocValidationError("Credit Note: Sales Order (sales_order or po_no) not found")
        items = [_credit_item(row, idx) for idx, row in enumerate(_rows(body), start=1)]
        taxes = [_credit_charge(row, idx) for idx, row in enumerate(body.get("taxes") or [], 1)]
        net = sum((_dec(i["amount"]) for i in items), Decimal(0))
        grand = net + sum((_dec(t["tax_amount"]) for t in taxes), Decimal(0))
        if grand >= 0:
            raise DocValidationError("A Credit Note must have a negative Grand Total")
        self._check_limit(-grand, self._left_on_order(order["name"]), f"Sales Order {order['name']}")
        if original is not None:
            self._check_limit(-grand, self._left_on_invoice(original), original["name"])
        custom = {k: v for k, v in body.items() if k not in _SERVER_FIELDS}
        header = {**custom, "customer": order["customer"], "company": order.get("company"),
                  "currency": order.get("currency"), "po_no": order["po_no"],
                  "conversion_rate": order.get("conversion_rate", 1.0),
                  "return_against": original["name"] if original else None}  # fmt: skip
        doc = self._store(header, items, taxes, net, now, is_return=True, order=order["name"])
        if original is not None:
            outstanding = max(Decimal(0), _dec(original["outstanding_amount"]) + grand)
            original.update(outstanding_amount=_money(outstanding), status="Credit Note Issued",
                            modified=doc["modified"])  # fmt: skip
        self._by_return_id[_return_id(body)] = doc["name"]
        return doc

    def _original(self, name: Any) -> JSON | None:
        if name in (None, ""):
            return None
        original = self.invoices.get(name) if isinstance(name, str) else None
        if original is None or original["is_return"]:
            raise DocValidationError(f"Return Against: Sales Invoice {name!r} not found")
        return original

    @staticmethod
    def _check_limit(amount: Decimal, left: Decimal, what: str) -> None:
        if amount > left:
            raise DocValidationError(
                f"Credit Note of {_money(amount):.2f} exceeds the {_money(left):.2f} still "
                f"invoiced on {what}"
            )

    # --- storing ---------------------------------------------------------------------------

    def _store(self, header: JSON, items: list[JSON], taxes: list[JSON], net: Decimal,
               now: datetime, *, is_return: bool, order: str) -> JSON:
        name = self._next_name(now)
        stamp = frappe_timestamp(now)
        tax_total = sum((_dec(t["tax_amount"]) for t in taxes), Decimal(0))
        grand = net + tax_total
        total = sum((_dec(i["amount"]) for i in items), Decimal(0))
        doc = {
            **header, "name": name, "doctype": SALES_INVOICE, "docstatus": 1, "idx": 0,
            "naming_series": NAMING_SERIES, "owner": _ADMIN, "modified_by": _ADMIN,
            "creation": stamp, "modified": stamp, "posting_date": now.date().isoformat(),
            "due_date": now.date().isoformat(), "is_return": int(is_return),
            "update_stock": 0, "status": "Return" if is_return else "Unpaid",
            "total": _money(total), "net_total": _money(net),
            "total_taxes_and_charges": _money(tax_total), "grand_total": _money(grand),
            "rounded_total": _money(grand), "outstanding_amount": _money(grand),
            "items": [{**i, "parent": name} for i in items],
            "taxes": [{**t, "doctype": "Sales Taxes and Charges", "parent": name} for t in taxes],
        }  # fmt: skip
        doc.setdefault("return_against", None)
        rate = _dec(doc.get("conversion_rate") or 1)
        for key in ("total", "net_total", "total_taxes_and_charges", "grand_total",
                    "rounded_total", "discount_amount"):
            if key in doc:
                doc[f"base_{key}"] = _money(_dec(doc[key]) * rate)
        doc = keep_defined(SALES_INVOICE, doc)
        self.invoices[name] = doc
        self.order_of[name] = order
        return doc

    def _next_name(self, now: datetime) -> str:
        counter = self._series.get(now.year, 0) + 1
        self._series[now.year] = counter
        return f"ACC-SINV-{now.year}-{counter:05d}"


# --- rows ---------------------------------------------------------------------------------------


def _return_id(body: Any) -> str:
    if not isinstance(body, dict):
        return ""
    key = body.get("custom_return_id") or body.get("custom_refund_id")
    return key if isinstance(key, str) else ""


def _rows(body: JSON) -> list[Any]:
    rows = body.get("items")
    if not isinstance(rows, list) or not rows:
        raise DocValidationError("Error: Value missing for Sales Invoice: Items")
    return rows


def _invoice_item(idx: int, order: JSON, note: JSON, so_item: JSON, dn_item: JSON,
                  amount: Decimal) -> JSON:
    return {
        "name": uuid.uuid4().hex[:10], "doctype": "Sales Invoice Item", "idx": idx,
        "item_code": so_item["item_code"], "item_name": so_item.get("item_name"),
        "qty": dn_item["qty"], "rate": so_item["rate"], "amount": _money(amount),
        "warehouse": dn_item.get("warehouse"), "sales_order": order["name"],
        "so_detail": so_item["name"], "delivery_note": note["name"],
        "dn_detail": dn_item["name"],
        "custom_marketplace_line_id": so_item.get("custom_marketplace_line_id"),
    }  # fmt: skip


def _credit_item(row: Any, idx: int) -> JSON:
    if not isinstance(row, dict):
        raise DocValidationError(f"Row #{idx}: item must be an object")
    code = _required_str(row, "item_code", f"Row #{idx} Item Code")
    qty = _number(row.get("qty"), f"Row #{idx}: Quantity")
    rate = _number(row.get("rate", 0), f"Row #{idx}: Rate")
    if qty > 0 or rate < 0:
        raise DocValidationError(
            f"Row #{idx}: a Credit Note row needs a negative (or zero) Quantity and a rate >= 0"
        )
    return {**row, "name": uuid.uuid4().hex[:10], "doctype": "Sales Invoice Item", "idx": idx,
            "parenttype": SALES_INVOICE, "parentfield": "items",
            "item_code": code, "qty": float(qty), "rate": float(rate),
            "amount": _money(qty * rate)}  # fmt: skip


def _credit_charge(row: Any, idx: int) -> JSON:
    if not isinstance(row, dict) or row.get("charge_type", "Actual") != "Actual":
        raise DocValidationError(f"Taxes row #{idx}: only Actual charges on a Credit Note")
    account = _required_str(row, "account_head", f"Taxes row #{idx} Account Head")
    amount = _number(row.get("tax_amount", 0), f"Taxes row #{idx}: Amount")
    return {**row, "charge_type": "Actual", "account_head": account, "idx": idx,
            "tax_amount": _money(amount)}  # fmt: skip
