"""The ERP simulator over real HTTP: Frappe-style create/read/list, duplicates, auth, faults."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import aiohttp
import pytest

from retail_sync.simulators.erpnext.docs import DocValidationError, build_sales_order, list_documents
from retail_sync.simulators.erpnext.simulator import ErpSimConfig, ErpSimulator, run_erp_simulator

AUTH = {"Authorization": "token demo-key:demo-secret"}
SO = "/api/resource/Sales%20Order"
JSON = dict[str, Any]


def doc(po_no: object = "shopify:1", **overrides: object) -> dict[str, object]:
    base: dict[str, object] = {
        "customer": "Marketplace Customer",
        "company": "Retail Sync Demo Ltd",
        "po_no": po_no,
        "transaction_date": "2026-01-10",
        "currency": "USD",
        "set_warehouse": "Stores - RSD",
        "custom_marketplace": "shopify",
        "items": [
            {"item_code": "SKU-1", "item_name": "One", "qty": 2, "rate": "19.99"},
            {"item_code": "SKU-2", "qty": 1, "rate": 5},
        ],
        "taxes": [{"charge_type": "Actual", "account_head": "Sales Tax", "tax_amount": "2.70"}],
    }
    return {**base, **overrides}


@pytest.fixture
async def sim() -> AsyncIterator[ErpSimulator]:
    # the SKUs below are invented: the simulator creates their Item on first sight
    simulator = await run_erp_simulator("127.0.0.1", 0, ErpSimConfig(seed=7, unknown_items="create"))
    yield simulator
    await simulator.stop()


@pytest.fixture
async def http(sim: ErpSimulator) -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(base_url=sim.base_url) as session:
        yield session


async def test_create_returns_draft_sales_order(http: aiohttp.ClientSession) -> None:
    async with http.post(SO, json=doc(), headers=AUTH) as resp:
        assert resp.status == 200
        assert "X-Idempotent-Replay" not in resp.headers
        data = (await resp.json())["data"]
    year = datetime.now(UTC).year
    assert data["name"] == f"SAL-ORD-{year}-00001"
    assert (data["doctype"], data["docstatus"], data["status"]) == ("Sales Order", 0, "Draft")
    assert data["grand_total"] == pytest.approx(2 * 19.99 + 5 + 2.70)
    assert data["per_delivered"] == 0 and data["per_billed"] == 0
    assert [i["idx"] for i in data["items"]] == [1, 2]
    assert data["items"][0]["amount"] == pytest.approx(39.98)
    assert data["custom_marketplace"] == "shopify"


async def test_repeat_po_no_for_the_same_customer_is_refused_as_erpnext_does(
    sim: ErpSimulator, http: aiohttp.ClientSession
) -> None:
    async with http.post(SO, json=doc("shopify:9"), headers=AUTH) as resp:
        first = (await resp.json())["data"]
    async with http.post(SO, json=doc("shopify:9"), headers=AUTH) as resp:
        assert resp.status == 417 and "X-Idempotent-Replay" not in resp.headers
        body = await resp.json()
    assert body["exc_type"] == "ValidationError"
    assert f"Sales Order {first['name']} already exists against Customer's Purchase Order" \
        in body["exception"]
    stats = sim.stats()
    assert (stats["orders_created"], stats["duplicates_refused"], stats["posts_received"]) == (
        1,
        1,
        2,
    )


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"customer": ""}, "customer"),
        ({"po_no": None}, "po_no"),
        ({"items": []}, "Items"),
        ({"items": [{"item_code": "A", "qty": 0, "rate": 1}]}, "must be positive"),
        ({"items": [{"item_code": "A", "qty": 1, "rate": "abc"}]}, "Rate must be a number"),
        ({"currency": "US$"}, "Currency"),
        ({"delivery_date": "2026-01-01"}, "Delivery Date"),
    ],
)
async def test_validation_errors_are_417(
    sim: ErpSimulator, http: aiohttp.ClientSession, overrides: dict[str, object], reason: str
) -> None:
    async with http.post(SO, json=doc(**overrides), headers=AUTH) as resp:
        assert resp.status == 417
        body = await resp.json()
    assert body["exc_type"] == "ValidationError"
    assert body["exception"].startswith("frappe.exceptions.ValidationError: ")
    assert reason in body["exception"]
    assert reason in json.loads(json.loads(body["_server_messages"])[0])["message"]
    assert sim.stats()["validation_errors"] == 1 and not sim.orders


async def test_bad_credentials_are_401(sim: ErpSimulator, http: aiohttp.ClientSession) -> None:
    bad = {"Authorization": "token demo-key:wrong"}
    async with http.post(SO, json=doc(), headers=bad) as resp:
        assert resp.status == 401
        assert (await resp.json())["exc_type"] == "AuthenticationError"
    async with http.get(SO) as resp:
        assert resp.status == 401
    assert sim.stats()["auth_failures"] == 2 and not sim.orders


async def test_read_and_list_with_filters(http: aiohttp.ClientSession) -> None:
    for n in range(3):
        async with http.post(SO, json=doc(f"shopify:{n}"), headers=AUTH) as resp:
            name = (await resp.json())["data"]["name"]
    async with http.get(f"{SO}/{name}", headers=AUTH) as resp:
        assert (await resp.json())["data"]["po_no"] == "shopify:2"
    async with http.get(f"{SO}/SAL-ORD-1999-00001", headers=AUTH) as resp:
        assert resp.status == 404
        assert (await resp.json())["exc_type"] == "DoesNotExistError"
    params = {
        "filters": json.dumps([["Sales Order", "po_no", "=", "shopify:1"]]),
        "fields": json.dumps(["name", "po_no"]),
    }
    async with http.get(SO, params=params, headers=AUTH) as resp:
        rows = (await resp.json())["data"]
    assert len(rows) == 1 and rows[0]["po_no"] == "shopify:1" and set(rows[0]) == {"name", "po_no"}
    params = {"filters": json.dumps([["custom_marketplace", "=", "shopify"]]),
              "limit_page_length": "0"}
    async with http.get(SO, params=params, headers=AUTH) as resp:
        assert len((await resp.json())["data"]) == 3
    async with http.get(
        SO, params={"limit_page_length": "2", "limit_start": "2"}, headers=AUTH
    ) as resp:
        assert [set(r) for r in (await resp.json())["data"]] == [{"name"}]


async def test_injected_errors_have_no_effect(
    sim: ErpSimulator, http: aiohttp.ClientSession
) -> None:
    async with http.put("/_sim/config", json={"error_rate": 1.0, "error_status": 503}) as resp:
        assert (await resp.json())["error_rate"] == 1.0
    async with http.post(SO, json=doc(), headers=AUTH) as resp:
        assert resp.status == 503
        assert "exc_type" in await resp.json()
    assert sim.stats()["errors_injected"] == 1 and not sim.orders
    async with http.put("/_sim/config", json={"bogus": 1}) as resp:
        assert resp.status == 400


async def test_control_endpoints_report_orders_with_times(
    sim: ErpSimulator, http: aiohttp.ClientSession
) -> None:
    async with http.post(SO, json=doc("shopify:5"), headers=AUTH) as resp:
        assert resp.status == 200
    async with http.get("/_sim/orders") as resp:
        (row,) = await resp.json()
    assert row["po_no"] == "shopify:5"
    assert row["received_at_epoch"] == sim.order_by_po_no("shopify:5").received_at  # type: ignore[union-attr]
    assert datetime.fromisoformat(row["received_at"]).tzinfo is not None
    async with http.get("/_sim/stats") as resp:
        assert (await resp.json())["orders_created"] == 1
    async with http.post("/_sim/reset") as resp:
        assert resp.status == 200
    assert sim.stats()["orders_created"] == 0 and not sim.orders


def test_on_net_total_tax_and_discount() -> None:
    body = doc(
        discount_amount="4.98",
        apply_discount_on="Net Total",
        taxes=[{"charge_type": "On Net Total", "account_head": "VAT", "rate": 10}],
    )
    built = build_sales_order(body, now=datetime(2026, 1, 10, tzinfo=UTC))
    assert built["total"] == pytest.approx(44.98)
    assert built["net_total"] == pytest.approx(40.0)  # ERPNext: net of the additional discount
    assert built["taxes"][0]["tax_amount"] == pytest.approx(4.0)
    assert built["grand_total"] == pytest.approx(44.98 - 4.98 + 4.0)
    with pytest.raises(DocValidationError):
        build_sales_order(
            doc(taxes=[{"charge_type": "Bogus", "account_head": "X"}]), now=datetime.now(UTC)
        )


# --- stock: submitted orders reserve, stock documents, the Bin change feed --------------------

BIN = "/api/resource/Bin"
WH = "Stores - RSD"


async def post(http: aiohttp.ClientSession, doctype: str, body: object) -> tuple[int, dict]:
    async with http.post(f"/api/resource/{doctype}", json=body, headers=AUTH) as resp:
        return resp.status, await resp.json()


async def test_submitted_order_reserves_once_and_counts_oversold(
    sim: ErpSimulator, http: aiohttp.ClientSession
) -> None:
    sim.receive("SKU-1", 3)
    before = sim.bins()[0]["modified"]
    items = [
        {"item_code": "SKU-1", "qty": 5, "rate": 1, "custom_backorder_qty": 1},
        {"item_code": "SKU-2", "qty": 1, "rate": 5},  # no Bin: a non-stock item
    ]
    status, body = await post(http, "Sales Order", doc("shopify:1", docstatus=1, items=items))
    assert status == 200
    data = body["data"]
    assert (data["docstatus"], data["status"]) == (1, "To Deliver and Bill")
    assert data["creation"] == data["modified"] > before
    assert [i["custom_backorder_qty"] for i in data["items"]] == [1, 0]
    (stock,) = sim.bins()
    assert (stock["actual_qty"], stock["reserved_qty"], stock["projected_qty"]) == (3, 5, -2)
    assert stock["modified"] >= data["creation"]
    status, _ = await post(http, "Sales Order", doc("shopify:1", docstatus=1, items=items))
    assert status == 417 and sim.bins()[0]["reserved_qty"] == 5  # a refused repeat reserves nothing
    assert sim.stats()["oversold_units"] == 1  # 5 promised, 3 free, 1 knowingly backordered
    async with http.get("/_sim/stock") as resp:
        report = await resp.json()
    assert report["oversold"] == {"SKU-1": 1} and report["oversold_units"] == 1
    assert report["bins"][0]["reserved_qty"] == 5


async def test_draft_order_reserves_nothing(sim: ErpSimulator, http: aiohttp.ClientSession) -> None:
    sim.set_stock("SKU-1", 1)
    status, body = await post(http, "Sales Order", doc())
    assert status == 200 and body["data"]["docstatus"] == 0
    assert sim.bins()[0]["reserved_qty"] == 0 and sim.stats()["oversold_units"] == 0


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"docstatus": 2}, "docstatus"),
        ({"items": [{"item_code": "A", "qty": 2, "rate": 1, "custom_backorder_qty": 3}]},
         "Backorder Qty"),
        ({"items": [{"item_code": "A", "qty": 2, "rate": 1, "custom_backorder_qty": -1}]},
         "Backorder Qty"),
    ],
)  # fmt: skip
async def test_submit_validation_errors_are_417(
    sim: ErpSimulator, http: aiohttp.ClientSession, overrides: dict[str, object], reason: str
) -> None:
    status, body = await post(http, "Sales Order", doc(**overrides))
    assert status == 417 and reason in body["exception"] and not sim.orders


async def test_stock_documents_over_http(sim: ErpSimulator, http: aiohttp.ClientSession) -> None:
    receipt = {"stock_entry_type": "Material Receipt", "docstatus": 1, "company": "C",
               "items": [{"item_code": "SKU-1", "qty": 10, "t_warehouse": WH}]}  # fmt: skip
    status, body = await post(http, "Stock Entry", receipt)
    assert status == 200
    entry = body["data"]["name"]
    status, body = await post(http, "Sales Order", doc("shopify:7", docstatus=1))
    so_name = body["data"]["name"]
    note = {"docstatus": 1, "items": [
        {"item_code": "SKU-1", "qty": 2, "warehouse": WH, "against_sales_order": so_name}]}
    status, body = await post(http, "Delivery Note", note)
    assert status == 200 and body["data"]["status"] == "Completed"  # invoiced on delivery
    assert body["data"]["custom_sales_invoice"].startswith("ACC-SINV-")
    (stock,) = sim.bins()
    assert (stock["actual_qty"], stock["reserved_qty"]) == (8, 0)
    status, body = await post(http, "Stock Reconciliation", {"docstatus": 1, "items": [
        {"item_code": "SKU-1", "qty": 4, "warehouse": WH}]})  # fmt: skip
    assert status == 200 and sim.bins()[0]["actual_qty"] == 4
    params = {"fields": json.dumps(["voucher_type", "actual_qty", "qty_after_transaction"]),
              "order_by": "creation asc"}  # fmt: skip
    async with http.get("/api/resource/Stock Ledger Entry", params=params, headers=AUTH) as resp:
        ledger = (await resp.json())["data"]
    assert [(r["voucher_type"], r["actual_qty"], r["qty_after_transaction"]) for r in ledger] == [
        ("Stock Entry", 10, 10), ("Delivery Note", -2, 8), ("Stock Reconciliation", -4, 4)]
    async with http.get(f"/api/resource/Stock Entry/{entry}", headers=AUTH) as resp:
        assert (await resp.json())["data"]["company"] == "C"
    async with http.get(f"/api/resource/Bin/{stock['name']}", headers=AUTH) as resp:
        assert (await resp.json())["data"]["actual_qty"] == 4
    async with http.get("/api/resource/Delivery Note/MAT-DN-1999-00001", headers=AUTH) as resp:
        assert resp.status == 404
    assert sim.stats()["stock_documents"] == 3


async def test_stock_document_errors(sim: ErpSimulator, http: aiohttp.ClientSession) -> None:
    issue = {"stock_entry_type": "Material Issue", "docstatus": 1,
             "items": [{"item_code": "SKU-1", "qty": 1, "s_warehouse": WH}]}  # fmt: skip
    status, body = await post(http, "Stock Entry", issue)
    assert status == 417 and "needed in Warehouse" in body["exception"]
    status, body = await post(http, "Stock Entry", {**issue, "stock_entry_type": "Repack"})
    assert status == 417 and "not supported" in body["exception"]
    status, body = await post(http, "Bin", {"item_code": "SKU-1"})
    assert status == 403 and body["exc_type"] == "PermissionError"
    async with http.get("/api/resource/Supplier", headers=AUTH) as resp:
        assert resp.status == 404
    assert not sim.bins() and sim.stats()["validation_errors"] == 2


async def test_bin_change_feed_by_modified(sim: ErpSimulator, http: aiohttp.ClientSession) -> None:
    for n in range(4):
        sim.receive(f"SKU-{n}", n + 1)
    sim.set_stock("SKU-0", 7)  # now the most recently modified
    cursor = sim.bins()[2]["modified"]  # SKU-2
    params = {
        "fields": json.dumps(["item_code", "actual_qty", "modified"]),
        "filters": json.dumps([["Bin", "modified", ">=", cursor]]),
        "order_by": "modified asc",
        "limit_page_length": "2",
    }
    async with http.get(BIN, params=params, headers=AUTH) as resp:
        rows = (await resp.json())["data"]
    assert [r["item_code"] for r in rows] == ["SKU-2", "SKU-3"]
    params |= {"limit_start": "1", "filters": json.dumps([["modified", ">", cursor]])}
    async with http.get(BIN, params=params, headers=AUTH) as resp:
        assert [r["item_code"] for r in (await resp.json())["data"]] == ["SKU-0"]
    async with http.get(BIN, params={"limit_page_length": "0"}, headers=AUTH) as resp:
        newest_first = [r["name"] for r in (await resp.json())["data"]]
    assert newest_first[0] == next(b["name"] for b in sim.bins() if b["item_code"] == "SKU-0")


async def test_sim_stock_endpoints_and_reset(
    sim: ErpSimulator, http: aiohttp.ClientSession
) -> None:
    async with http.post("/_sim/stock", json={"item_code": "SKU-9", "qty": 6}) as resp:
        assert resp.status == 200
        assert (await resp.json())["actual_qty"] == 6
    async with http.post("/_sim/stock", json={"item_code": "SKU-9", "qty": 2,
                                              "warehouse": "Outlet - RSD"}) as resp:
        assert resp.status == 200
    async with http.post("/_sim/stock", json={"item_code": "SKU-9", "qty": -1}) as resp:
        assert resp.status == 400
    async with http.post("/_sim/stock", json={"qty": 1}) as resp:
        assert resp.status == 400
    async with http.get("/_sim/stock") as resp:
        bins = (await resp.json())["bins"]
    assert [(b["warehouse"], b["actual_qty"], b["projected_qty"]) for b in bins] == [
        ("Outlet - RSD", 2, 2), (WH, 6, 6)]
    assert [e["voucher_type"] for e in sim.stock.ledger] == ["Stock Reconciliation"] * 2
    last = max(b["modified"] for b in bins)
    async with http.post("/_sim/reset") as resp:
        assert resp.status == 200
    assert not sim.bins() and not sim.stock.ledger
    assert sim.receive("SKU-9", 1)["modified"] > last  # the clock never goes back


def test_list_order_by_and_comparisons() -> None:
    docs = [{"name": n, "qty": q, "w": w} for n, q, w in
            [("a", 3.0, "X"), ("b", 1.0, "Y"), ("c", 2.0, "X"), ("d", None, "Y")]]  # fmt: skip

    def names(**query: str) -> list[str]:
        return [r["name"] for r in list_documents(docs, query, doctype="T")]

    assert names(order_by="qty asc") == ["d", "b", "c", "a"]
    assert names(order_by="`tabT`.qty desc") == ["a", "c", "b", "d"]
    assert names(order_by="w asc, qty desc") == ["a", "c", "b", "d"]
    assert names(filters='[["qty", ">=", 2]]') == ["a", "c"]
    assert names(filters='[["qty", "<", "2"]]') == ["b"]
    assert names(filters='[["w", "not in", ["X"]]]') == ["b", "d"]
    with pytest.raises(DocValidationError):
        names(order_by="qty; drop table")
    with pytest.raises(DocValidationError):
        names(filters='[["qty", "like", "1"]]')


# --- after the order --------------------------------------------------------------------------


async def shipped_order(sim: ErpSimulator, http: aiohttp.ClientSession) -> tuple[str, JSON]:
    """A submitted order (SKU-1 x2, SKU-2 x1) with one unit of SKU-1 shipped as WMS-1."""
    sim.set_stock("SKU-1", 5)
    _, body = await post(http, "Sales Order", doc("shopify:7", docstatus=1))
    so = body["data"]
    note = {"docstatus": 1, "custom_shipment_id": "WMS-1", "items": [
        {"item_code": "SKU-1", "qty": 1, "warehouse": WH, "against_sales_order": so["name"],
         "so_detail": so["items"][0]["name"]}]}  # fmt: skip
    status, body = await post(http, "Delivery Note", note)
    assert status == 200
    return so["name"], body["data"]


async def cancel(http: aiohttp.ClientSession, body: JSON) -> tuple[int, JSON]:
    async with http.post("/api/method/frappe.client.cancel", json=body, headers=AUTH) as resp:
        return resp.status, await resp.json()


async def test_cancel_method_over_http(sim: ErpSimulator, http: aiohttp.ClientSession) -> None:
    sim.set_stock("SKU-1", 5)
    _, body = await post(http, "Sales Order", doc("shopify:1", docstatus=1))
    name, created = body["data"]["name"], body["data"]["modified"]
    assert sim.bins()[0]["reserved_qty"] == 2
    status, answer = await cancel(http, {"doctype": "Sales Order", "name": name, "reason": "x"})
    assert status == 200 and answer["message"]["status"] == "Cancelled"
    assert answer["message"]["modified"] > created and sim.bins()[0]["reserved_qty"] == 0
    assert (await cancel(http, {"doctype": "Sales Order", "name": name}))[0] == 200
    _, draft = await post(http, "Sales Order", doc("shopify:2"))
    assert (await cancel(http, {"doctype": "Sales Order", "name": draft["data"]["name"]}))[0] == 417
    assert (await cancel(http, {"doctype": "Sales Order", "name": "NOPE"}))[0] == 404
    assert (await cancel(http, {"doctype": "Bin", "name": name}))[0] == 417
    assert sim.stats()["cancellations"] == 1


async def test_delivery_note_is_unique_per_shipment_and_moves_the_order(
    sim: ErpSimulator, http: aiohttp.ClientSession
) -> None:
    name, note = await shipped_order(sim, http)
    order = sim.orders[name].doc
    assert (order["status"], order["per_delivered"]) == ("To Deliver and Bill", 33.33)
    assert order["billing_status"] == "Partly Billed"
    async with http.post("/api/resource/Delivery Note", headers=AUTH, json={
            "docstatus": 1, "custom_shipment_id": "WMS-1", "items": []}) as resp:  # fmt: skip
        assert resp.status == 417 and "X-Idempotent-Replay" not in resp.headers
        body = await resp.json()
        assert body["exc_type"] == "UniqueValidationError", body
        assert "Shipment ID must be unique" in body["exception"]
    async with http.get("/_sim/finance") as resp:
        (invoice,) = await resp.json()
    assert invoice == {"name": note["custom_sales_invoice"], "is_return": 0, "po_no": "shopify:7",
                       "sales_order": name, "grand_total": pytest.approx(19.99 + 2.70 * 19.99
                                                                         / 44.98, abs=0.01),
                       "return_against": None}  # fmt: skip
    status, body = await post(http, "Sales Invoice", {"customer": "C", "items": []})
    assert status == 417 and "only a Credit Note" in body["exception"]
    status, body = await post(http, "Delivery Note", {"docstatus": 1, "is_return": 1,
                                                      "return_against": note["name"], "items": [
        {"item_code": "SKU-1", "qty": -2, "warehouse": WH}]})  # fmt: skip
    assert status == 417 and "exceeds" in body["exception"]


async def test_erp_side_cancel_and_the_order_change_list(
    sim: ErpSimulator, http: aiohttp.ClientSession
) -> None:
    _, body = await post(http, "Sales Order", doc("shopify:1", docstatus=1))
    name = body["data"]["name"]
    async with http.post(f"/_sim/orders/{name}/cancel", json={"reason": "fraud"}) as resp:
        assert resp.status == 200 and (await resp.json())["custom_cancel_reason"] == "fraud"
    async with http.post("/_sim/orders/NOPE/close", json={}) as resp:
        assert resp.status == 404
    async with http.post(f"/_sim/orders/{name}/close", json={}) as resp:
        assert resp.status == 400  # a cancelled order cannot be closed
    params = {"fields": json.dumps(["name", "status", "custom_cancel_reason", "modified"]),
              "filters": json.dumps([["Sales Order", "modified", ">=", body["data"]["modified"]]]),
              "order_by": "modified asc, name asc"}  # fmt: skip
    async with http.get(SO, params=params, headers=AUTH) as resp:
        rows = (await resp.json())["data"]
    assert [(r["name"], r["status"], r["custom_cancel_reason"]) for r in rows] == [
        (name, "Cancelled", "fraud")]


OTHER = "Other Customer"


async def test_a_list_through_an_index_answers_what_a_scan_answers(
        sim: ErpSimulator, http: aiohttp.ClientSession) -> None:
    """The simulator narrows a Sales Order list through its indexes (name, po_no, the unique
    order-key field), as the database would; the answer must be the scan's, for each of them and
    with further filters, fields and pages."""
    sim.config = sim.config.updated({"allow_against_multiple_purchase_orders": True})
    sim.masters.customers.add(OTHER)
    for i, po in enumerate(["shopify:1", "shopify:2", "shopify:1", "amazon:3"]):
        body = doc(po, custom_marketplace_order_key=f"key-{i}",
                   customer="Marketplace Customer" if i != 2 else OTHER)
        async with http.post(SO, json=body, headers=AUTH) as resp:
            assert resp.status == 200, await resp.text()
    names = [stored.doc["name"] for stored in sim.orders.values()]
    queries = [
        [["po_no", "=", "shopify:1"]],
        [["Sales Order", "po_no", "=", "shopify:1"], ["customer", "=", OTHER]],
        [["custom_marketplace_order_key", "=", "key-3"]],
        [["custom_marketplace_order_key", "=", "key-404"]],
        [["name", "=", names[1]]],
        {"po_no": "shopify:2"},
        [["customer", "=", OTHER]],  # no index: a scan
        [["custom_marketplace_order_key", "in", ["key-0", "key-2", "key-9"]]],
        [["po_no", "in", ["amazon:3", "shopify:1"]], ["docstatus", "=", 0]],
    ]
    every = [stored.doc for stored in reversed(sim.orders.values())]
    for filters in queries:
        query = {"filters": json.dumps(filters), "fields": json.dumps(["name", "po_no"]),
                 "limit_page_length": "0"}
        async with http.get(SO, params=query, headers=AUTH) as resp:
            assert resp.status == 200
            got = (await resp.json())["data"]
        assert got == list_documents(every, query, doctype="Sales Order"), filters
    assert len(list_documents(every, {"filters": json.dumps(queries[0]), "limit_page_length": "0"},
                              doctype="Sales Order")) == 2  # the comparison compares something
