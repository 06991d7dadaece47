"""Exactly once into an ERP that behaves like ERPNext (issue 12 item 1), over real HTTP.

ERPNext has no idempotent insert: a repeated Sales Order with the same ``po_no`` is refused for
the same customer (or created again, with a warning, per the Selling Setting); only a unique
Custom Field makes a second insert fail. The connector must therefore look up before creating,
treat "already exists" as success and find an order a timed-out post created. The simulator's
stored documents are checked against ERPNext's doctype files in ../shared/specs/erpnext.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import aiohttp
import pytest

from retail_sync.connectors.erpnext.client import ErpNextConnector
from retail_sync.connectors.erpnext.fields import CUSTOM_FIELDS
from retail_sync.connectors.errors import PermanentError, RetryableError
from retail_sync.simulators.erpnext.docs import build_sales_order
from retail_sync.simulators.erpnext.meta import DEFAULT_FIELDS, Masters, doctype_fields
from retail_sync.simulators.erpnext.simulator import ErpSimConfig, ErpSimulator, run_erp_simulator
from tests.specs import spec_path
from tests.unit.test_erp_connector import SKU_A, SKU_B, make_order, refund, shipment
from tests.unit.test_erp_connector import two_line_order as order_of_two

JSON = dict[str, Any]
AUTH = {"Authorization": "token demo-key:demo-secret"}


@pytest.fixture(params=[False, True], ids=["refuse-repeat-po", "warn-repeat-po"])
async def sim(request: pytest.FixtureRequest) -> AsyncIterator[ErpSimulator]:
    """Both ERPNext behaviours for a repeated po_no (Selling Settings)."""
    config = ErpSimConfig(seed=3, allow_against_multiple_purchase_orders=request.param)
    simulator = await run_erp_simulator("127.0.0.1", 0, config)
    yield simulator
    await simulator.stop()


@pytest.fixture
async def erp(sim: ErpSimulator) -> AsyncIterator[ErpNextConnector]:
    assert sim.base_url
    connector = ErpNextConnector(sim.base_url, "demo-key", "demo-secret", timeout_s=0.5)
    yield connector
    await connector.close()


def po_numbers(sim: ErpSimulator) -> list[str]:
    return [stored.doc["po_no"] for stored in sim.orders.values()]


async def test_a_repeated_create_is_one_sales_order(sim: ErpSimulator,
                                                    erp: ErpNextConnector) -> None:
    first = await erp.create_sales_order("shopify:1", make_order("1"))
    again = await erp.create_sales_order("shopify:1", make_order("1"))
    assert first.created and not again.created
    assert again.erp_sales_order == first.erp_sales_order and again.created_at
    assert po_numbers(sim) == ["shopify:1"]
    doc = sim.orders[first.erp_sales_order].doc
    assert doc["customer"] == "Shopify Customer"  # the channel's Customer
    assert doc["custom_marketplace_order_key"] == "shopify:1"


async def test_a_post_that_timed_out_after_the_erp_created_the_order(
        sim: ErpSimulator, erp: ErpNextConnector) -> None:
    sim.set_config({"slow_rate": 1.0, "slow_ms": 1200})  # answers after our 0.5 s timeout
    with pytest.raises(RetryableError, match="timed out"):
        await erp.create_sales_order("shopify:2", make_order("2"))
    await asyncio.sleep(1.0)  # the ERP finishes the insert behind our back
    assert po_numbers(sim) == ["shopify:2"]
    sim.set_config({"slow_rate": 0.0})
    retry = await erp.create_sales_order("shopify:2", make_order("2"))
    assert not retry.created and po_numbers(sim) == ["shopify:2"]
    assert retry.erp_sales_order == next(iter(sim.orders))


async def test_racing_posts_past_the_lookup_make_one_order(sim: ErpSimulator,
                                                           erp: ErpNextConnector) -> None:
    """Both look up (nothing yet), both post: the ERP refuses the second, which then finds the
    first one (two workers during a rebalance)."""
    sim.set_config({"latency_ms": 50})
    results = await asyncio.gather(*(erp.create_sales_order("shopify:3", make_order("3"))
                                     for _ in range(4)))  # fmt: skip
    assert po_numbers(sim) == ["shopify:3"]
    assert sorted(r.created for r in results) == [False, False, False, True]
    assert len({r.erp_sales_order for r in results}) == 1
    assert sim.stats()["duplicates_refused"] >= 1  # the unique field (or validate_po) refused


async def test_the_erp_alone_does_not_deduplicate_po_no(sim: ErpSimulator) -> None:
    """What ERPNext does with a repeated po_no and no unique reference: refuse for the same
    customer, or (Selling Setting on) create a second order with a warning; another customer's
    po_no never clashes. So exactly-once cannot rest on po_no."""
    body = {"customer": "Shopify Customer", "company": "Retail Sync Demo Ltd", "po_no": "P-1",
            "items": [{"item_code": "MUG-CLASSIC", "qty": 1, "rate": 5}]}  # fmt: skip
    async with aiohttp.ClientSession(base_url=str(sim.base_url), headers=AUTH) as http:
        statuses, bodies = [], []
        for customer in ("Shopify Customer", "Shopify Customer", "Amazon Customer"):
            async with http.post("/api/resource/Sales Order",
                                 json={**body, "customer": customer}) as resp:
                statuses.append(resp.status)
                bodies.append(await resp.json())
                assert "X-Idempotent-Replay" not in resp.headers
    if sim.config.allow_against_multiple_purchase_orders:
        assert statuses == [200, 200, 200] and len(sim.orders) == 3
        assert "already exists against" in bodies[1]["_server_messages"]
    else:
        assert statuses == [200, 417, 200] and len(sim.orders) == 2
        assert bodies[1]["exc_type"] == "ValidationError"
        assert "already exists against Customer's Purchase Order P-1" in bodies[1]["exception"]


async def test_shipment_and_return_after_a_timeout_are_posted_once(
        sim: ErpSimulator, erp: ErpNextConnector) -> None:
    sim.set_stock(SKU_A, 10)
    sim.set_stock(SKU_B, 10)
    so = (await erp.create_sales_order("shopify:1", order_of_two("shopify:1"))).erp_sales_order
    ship = shipment("WMS-1", ("LA", SKU_A, 3), ("LB", SKU_B, 1))
    sim.set_config({"slow_rate": 1.0, "slow_ms": 1200})
    with pytest.raises(RetryableError):
        await erp.post_shipment("shopify:1", so, ship)
    await asyncio.sleep(1.0)
    sim.set_config({"slow_rate": 0.0})
    result = await erp.post_shipment("shopify:1", so, ship)
    assert not result.created and result.sales_invoice
    assert sim.stats()["delivery_notes"] == 1 and sim.stats()["invoices"] == 1
    back = refund("R-1", "10.00", ("LA", SKU_A, 1), restock=True)
    sim.set_config({"slow_rate": 1.0, "slow_ms": 1200})
    with pytest.raises(RetryableError):
        await erp.post_return("shopify:1", so, back)
    await asyncio.sleep(1.5)
    sim.set_config({"slow_rate": 0.0})
    returned = await erp.post_return("shopify:1", so, back)
    assert returned.credit_note and returned.return_delivery_note
    stats = sim.stats()
    assert (stats["returns"], stats["credit_notes"]) == (1, 1)


async def test_unknown_links_are_refused_as_frappe_does(sim: ErpSimulator,
                                                        erp: ErpNextConnector) -> None:
    plain = make_order("5")
    order = plain.model_copy(update={"lines": [plain.lines[0].model_copy(
        update={"sku": "NO-SUCH-ITEM"})]})
    with pytest.raises(PermanentError) as info:
        await erp.create_sales_order("shopify:5", order)
    assert info.value.status == 417
    assert "LinkValidationError" in str(info.value) and "Item Code: NO-SUCH-ITEM" in str(info.value)
    erp.channel_customers = {"shopify": "Nobody"}
    with pytest.raises(PermanentError, match="Could not find Customer: Nobody"):
        await erp.create_sales_order("shopify:6", make_order("6"))
    assert not sim.orders


# --- ERPNext's totals: exchange rates and discounts ---------------------------------------------

NOW = datetime(2026, 1, 10, tzinfo=UTC)


def so_body(**overrides: Any) -> JSON:
    return {"customer": "Amazon Customer", "company": "Retail Sync Demo Ltd", "po_no": "amazon:1",
            "items": [{"item_code": "RS-MUG-350", "qty": 2, "price_list_rate": 50,
                       "discount_percentage": 10}],
            "taxes": [{"charge_type": "On Net Total", "account_head": "VAT", "rate": 20}],
            **overrides}  # fmt: skip


def test_exchange_rate_and_discounts_in_totals() -> None:
    doc = build_sales_order(so_body(currency="EUR", additional_discount_percentage=10,
                                    apply_discount_on="Net Total"), now=NOW, masters=Masters())
    item = doc["items"][0]
    assert (item["rate"], item["amount"], item["discount_amount"]) == (45.0, 90.0, 5.0)
    assert (doc["total"], doc["discount_amount"], doc["net_total"]) == (90.0, 9.0, 81.0)
    assert doc["taxes"][0]["tax_amount"] == pytest.approx(16.2)
    assert doc["grand_total"] == pytest.approx(97.2)
    assert doc["conversion_rate"] == 1.08  # the ERP's Currency Exchange EUR -> USD
    assert doc["base_grand_total"] == pytest.approx(104.98)  # 97.2 * 1.08, to the cent
    assert item["base_net_amount"] == pytest.approx(81 * 1.08)
    given = build_sales_order(so_body(currency="EUR", conversion_rate=1.1), now=NOW,
                              masters=Masters())
    assert given["base_total"] == pytest.approx(99.0)
    with pytest.raises(ValueError, match="Exchange Rate is mandatory"):
        build_sales_order(so_body(currency="CHF"), now=NOW, masters=Masters())
    on_grand = build_sales_order(so_body(discount_amount="8"), now=NOW, masters=Masters())
    assert on_grand["grand_total"] == pytest.approx(90 + 18 - 8)  # Grand Total is the default


def test_fields_the_doctype_does_not_define_are_dropped() -> None:
    body = so_body(bogus_header="x", custom_marketplace="amazon")
    body["items"][0].update(bogus_row=1, custom_marketplace_line_id="L1")
    doc = build_sales_order(body, now=NOW, masters=Masters())
    assert "bogus_header" not in doc and doc["custom_marketplace"] == "amazon"
    assert "bogus_row" not in doc["items"][0]
    assert doc["items"][0]["custom_marketplace_line_id"] == "L1"


# --- every stored document against ERPNext's doctype files --------------------------------------

SPEC_FILES = {"Sales Order": "sales_order.json", "Sales Order Item": "sales_order_item.json",
              "Delivery Note": "delivery_note.json",
              "Delivery Note Item": "delivery_note_item.json", "Bin": "bin.json",
              "Stock Ledger Entry": "stock_ledger_entry.json"}  # fmt: skip
NUMERIC = {"Float", "Currency", "Percent", "Int", "Check"}
TEXT = {"Data", "Link", "Select", "Small Text", "Text", "Text Editor", "Date", "Datetime",
        "Time", "Dynamic Link", "Long Text", "Code", "Read Only"}


def spec_fields(doctype: str) -> dict[str, JSON]:
    path = spec_path("erpnext", SPEC_FILES[doctype])  # fails in CI, skips elsewhere, if absent
    return {f["fieldname"]: f for f in json.loads(path.read_text())["fields"]}


def test_the_vendored_field_lists_are_the_spec_files() -> None:
    vendored = doctype_fields()
    for doctype in SPEC_FILES:
        spec = {name: f for name, f in spec_fields(doctype).items()
                if f["fieldtype"] not in ("Section Break", "Column Break", "Tab Break", "HTML",
                                          "Button", "Image", "Fold", "Heading")}  # fmt: skip
        assert set(vendored[doctype]) == set(spec), doctype
        for name, meta in vendored[doctype].items():
            assert meta.get("fieldtype") == spec[name]["fieldtype"], (doctype, name)


def check_document(doctype: str, doc: JSON, problems: list[str]) -> None:
    """Every field a doctype field or a declared Custom Field, of roughly the right type."""
    spec = spec_fields(doctype)
    custom = CUSTOM_FIELDS.get(doctype, {})
    for name, value in doc.items():
        meta = spec.get(name) or custom.get(name)
        if meta is None:
            if name not in DEFAULT_FIELDS:
                problems.append(f"{doctype}.{name} is not a field")
            continue
        kind = meta["fieldtype"]
        if value is None:
            continue
        if kind == "Table":
            child = meta["options"]
            for row in value:
                if child in SPEC_FILES:
                    check_document(child, row, problems)
        elif kind in NUMERIC and (isinstance(value, bool) or not isinstance(value, int | float)):
            problems.append(f"{doctype}.{name} ({kind}) = {value!r}")
        elif kind in TEXT and not isinstance(value, str):
            problems.append(f"{doctype}.{name} ({kind}) = {value!r}")
        elif kind == "Select" and meta.get("options") and name != "naming_series" \
                and value not in meta["options"].split("\n"):
            problems.append(f"{doctype}.{name} = {value!r} not in its options")
        elif kind == "Check" and value not in (0, 1):
            problems.append(f"{doctype}.{name} (Check) = {value!r}")


async def test_stored_documents_follow_the_erpnext_doctypes(sim: ErpSimulator,
                                                            erp: ErpNextConnector) -> None:
    sim.set_stock(SKU_A, 10)
    sim.set_stock(SKU_B, 10)
    so = (await erp.create_sales_order("shopify:1", order_of_two("shopify:1"))).erp_sales_order
    await erp.create_sales_order("shopify:2", make_order("2"), backorders={"466157049": 1})
    await erp.post_shipment("shopify:1", so, shipment("WMS-1", ("LA", SKU_A, 3)))
    await erp.post_return("shopify:1", so, refund("R-1", "10.00", ("LA", SKU_A, 1), restock=True))
    await erp.cancel_sales_order(next(n for n in sim.orders if n != so), "buyer asked")
    problems: list[str] = []
    for stored in sim.orders.values():
        check_document("Sales Order", stored.doc, problems)
    notes = list(sim.stock.documents["Delivery Note"].values())
    assert len(notes) == 2
    for note in notes:
        check_document("Delivery Note", note, problems)
    for row in sim.bins():
        check_document("Bin", row, problems)
    for entry in sim.stock.ledger:
        check_document("Stock Ledger Entry", entry, problems)
    invoice_fields = doctype_fields()["Sales Invoice"]
    for invoice in sim.finance.invoices.values():
        unknown = set(invoice) - set(invoice_fields) - set(CUSTOM_FIELDS["Sales Invoice"]) \
            - DEFAULT_FIELDS
        problems.extend(f"Sales Invoice.{name} is not a field" for name in sorted(unknown))
    assert problems == []
