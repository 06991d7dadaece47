"""ERP finance: invoices raised on delivery and Credit Notes in the simulator's pure FinanceBook."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from retail_sync.simulators.erpnext.docs import DocValidationError, build_sales_order
from retail_sync.simulators.erpnext.finance import FinanceBook

NOW = datetime(2026, 1, 10, 12, 0, tzinfo=UTC)
JSON = dict[str, Any]


def sales_order() -> JSON:
    """A x3 at 10.00, B x1 at 5.50; tax 1.55 and shipping 4.00; discount 1.00 -> 40.05."""
    doc = build_sales_order({
        "customer": "C", "company": "Co", "po_no": "shopify:1", "docstatus": 1,
        "discount_amount": "1.00", "apply_discount_on": "Net Total",
        "items": [{"item_code": "A", "qty": 3, "rate": "10"}, {"item_code": "B", "qty": 1,
                                                                "rate": "5.5"}],
        "taxes": [{"charge_type": "Actual", "account_head": "Tax", "tax_amount": "1.55"},
                  {"charge_type": "Actual", "account_head": "Freight", "tax_amount": "4.00"}],
    }, now=NOW)  # fmt: skip
    return {**doc, "name": "SO-1"}


def deliver(book: FinanceBook, order: JSON, note: str, *rows: tuple[int, float],
            completes: bool) -> JSON:
    items = [(order["items"][i], {"name": f"{note}-{i}", "qty": q}) for i, q in rows]
    invoice, _ = book.invoice_delivery(order, {"name": note}, items, NOW, completes=completes)
    return invoice


def credit(**overrides: Any) -> JSON:
    body: JSON = {"is_return": 1, "sales_order": "SO-1", "custom_return_id": "R-1",
                  "items": [{"item_code": "A", "qty": -1, "rate": 10}]}  # fmt: skip
    return {**body, **overrides}


def test_invoices_bill_charges_proportionally_and_add_up() -> None:
    book, order = FinanceBook(), sales_order()
    first = deliver(book, order, "DN-1", (0, 1), completes=False)
    assert first["name"] == "ACC-SINV-2026-00001" and first["status"] == "Unpaid"
    share = 10 / 35.5
    assert first["grand_total"] == pytest.approx(10 + (5.55 - 1.0) * share, abs=0.01)
    assert first["outstanding_amount"] == first["grand_total"] and first["is_return"] == 0
    assert (first["items"][0]["so_detail"], first["items"][0]["dn_detail"]) == (
        order["items"][0]["name"], "DN-1-0")
    second = deliver(book, order, "DN-2", (0, 2), (1, 1), completes=True)
    assert first["grand_total"] + second["grand_total"] == pytest.approx(40.05)
    assert book.counts() == (2, 0)


def test_credit_notes_are_limited_to_what_was_invoiced() -> None:
    book, order = FinanceBook(), sales_order()
    invoice = deliver(book, order, "DN-1", (0, 1), completes=False)  # about 11.28

    def lookup(name: str | None, po_no: str | None) -> JSON | None:
        return order if name == "SO-1" or po_no == "shopify:1" else None

    note = book.credit_note(credit(return_against=invoice["name"]), lookup, NOW)
    assert (note["grand_total"], note["status"], note["po_no"]) == (-10.0, "Return", "shopify:1")
    assert invoice["status"] == "Credit Note Issued"
    assert invoice["outstanding_amount"] == pytest.approx(invoice["grand_total"] - 10)
    assert book.replay({"custom_return_id": "R-1"}) is note
    refused = [
        (credit(custom_return_id="R-2", return_against=invoice["name"],
                taxes=[{"account_head": "Adj", "tax_amount": -2}]), "exceeds"),
        (credit(custom_return_id="R-3", sales_order=None, po_no="shopify:1",
                items=[{"item_code": "A", "qty": -1, "rate": 2}]), "exceeds"),
        (credit(is_return=0), "only a Credit Note"),
        (credit(return_against="ACC-SINV-1999-00001"), "not found"),
        (credit(sales_order="NOPE"), "not found"),
        (credit(items=[{"item_code": "A", "qty": 1, "rate": 1}]), "negative"),
        (credit(items=[{"item_code": "A", "qty": 0, "rate": 0}]), "negative Grand Total"),
        (credit(taxes=[{"charge_type": "On Net Total", "account_head": "T"}]), "Actual"),
        (credit(items=[]), "Items"),
    ]  # fmt: skip
    for body, reason in refused:
        with pytest.raises(DocValidationError, match=reason):
            book.credit_note(body, lookup, NOW)
    refund_only = book.credit_note(credit(
        custom_return_id=None, custom_refund_id="R-9", items=[{"item_code": "A", "qty": 0}],
        taxes=[{"account_head": "Adj", "tax_amount": "-1.28"}]), lookup, NOW)  # fmt: skip
    assert refund_only["grand_total"] == -1.28 and book.replay({"custom_refund_id": "R-9"})
    assert book.counts() == (1, 2)
    assert [s["is_return"] for s in book.summaries()] == [0, 1, 1]
