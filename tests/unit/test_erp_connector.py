"""ErpNextConnector against the real ERP simulator over HTTP: results and error mapping."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from urllib.parse import quote_plus

import aiohttp
import pytest
from pydantic import AnyHttpUrl

from retail_sync.connectors.contracts import (
    ErpPostResult,
    ErpReturnResult,
    ErpShipmentResult,
    Refund,
    SalesOrderPost,
    Shipment,
)
from retail_sync.connectors.erpnext.bulk import in_chunks
from retail_sync.connectors.erpnext.bulk import order_doc as bulk_doc
from retail_sync.connectors.erpnext.client import (
    ErpNextConnector,
    error_for_status,
    post_result,
    sales_order_doc,
)
from retail_sync.connectors.erpnext.frappe import frappe_time
from retail_sync.connectors.erpnext.order_feed import ErpOrderFeed, order_change
from retail_sync.connectors.errors import DecodeError, PermanentError, RateLimitedError, RetryableError
from retail_sync.settings import Settings
from retail_sync.simulators.erpnext.simulator import ErpSimConfig, ErpSimulator, run_erp_simulator
from retail_sync.streams.models import Address, Customer, LineUnits, Money, Order, OrderLine


def usd(amount: str) -> Money:
    return Money(amount=Decimal(amount), currency="USD")


def make_order(order_id: str = "450789469", *, quantity: int = 2) -> Order:
    line = OrderLine(
        line_id="466157049",
        sku="IPOD2008GREEN",
        title="IPod Nano - 8gb",
        quantity=quantity,
        unit_price=usd("199.005"),
        tax=usd("11.94"),
        discount=usd("10.00"),
    )
    created = datetime(2026, 1, 10, 23, 30, tzinfo=timezone(timedelta(hours=-5)))
    return Order(
        channel="shopify",
        marketplace_order_id=order_id,
        marketplace_order_name="#1001",
        created_at=created,
        updated_at=created,
        currency="USD",
        lines=[line],
        subtotal=usd("388.01"),
        shipping=usd("4.99"),
        tax_total=usd("11.94"),
        discount_total=usd("10.00"),
        total=usd("404.94"),
        customer=Customer(email="bob@example.com", name="Bob Norman", marketplace_customer_id="7"),
        shipping_address=Address(name="Bob Norman", country_code="US"),
    )


@pytest.fixture
async def sim() -> AsyncIterator[ErpSimulator]:
    simulator = await run_erp_simulator("127.0.0.1", 0, ErpSimConfig(seed=1))
    yield simulator
    await simulator.stop()


@pytest.fixture
async def erp(sim: ErpSimulator) -> AsyncIterator[ErpNextConnector]:
    assert sim.base_url
    connector = ErpNextConnector(sim.base_url, "demo-key", "demo-secret", timeout_s=2.0)
    yield connector
    await connector.close()


def test_sales_order_doc_maps_the_canonical_order() -> None:
    doc = sales_order_doc("shopify:1", make_order(), company="C", customer="Cust", warehouse="W")
    assert doc["po_no"] == doc["custom_marketplace_order_key"] == "shopify:1"
    assert doc["custom_marketplace_order_id"] == "450789469"
    assert doc["docstatus"] == 1  # submitted on insert, so the ERP reserves
    assert doc["transaction_date"] == doc["delivery_date"] == "2026-01-11"  # UTC date
    assert (doc["customer"], doc["company"], doc["set_warehouse"]) == ("Cust", "C", "W")
    assert doc["contact_email"] == "bob@example.com"
    assert (doc["custom_buyer_name"], doc["custom_buyer_id"]) == ("Bob Norman", "7")
    assert doc["items"] == [
        {
            "item_code": "IPOD2008GREEN",
            "item_name": "IPod Nano - 8gb",
            "qty": 2,
            "rate": "194.005",  # the discounted rate: 10.00 off two units (issue 12 item 2)
            "uom": "Nos",
            "delivery_date": "2026-01-11",
            "warehouse": "W",
            "custom_marketplace_line_id": "466157049",
            "price_list_rate": "199.005",
            "discount_amount": "5.000",
        }
    ]
    assert [t["tax_amount"] for t in doc["taxes"]] == ["11.94", "4.99"]
    assert "discount_amount" not in doc  # the line discount is in the rate, not taken twice


def test_sales_order_doc_carries_backorders() -> None:
    order = make_order()
    doc = sales_order_doc("shopify:1", order, company="C", customer="Cust", warehouse="W",
                          backorders={"466157049": 1})  # fmt: skip
    assert doc["items"][0]["custom_backorder_qty"] == 1
    plain = sales_order_doc("shopify:1", order, company="C", customer="Cust", warehouse="W",
                            backorders={"466157049": 0})  # fmt: skip
    assert "custom_backorder_qty" not in plain["items"][0]
    with pytest.raises(ValueError, match="999"):
        sales_order_doc("shopify:1", order, company="C", customer="Cust", warehouse="W",
                        backorders={"999": 1})  # fmt: skip


async def test_create_submits_reserves_and_returns_created_at(
    sim: ErpSimulator, erp: ErpNextConnector
) -> None:
    sim.set_stock("IPOD2008GREEN", 1)
    result = await erp.create_sales_order(
        "shopify:10", make_order("10", quantity=3), backorders={"466157049": 1}
    )
    stored = sim.orders[result.erp_sales_order].doc
    assert stored["docstatus"] == 1 and stored["items"][0]["custom_backorder_qty"] == 1
    assert result.created_at == frappe_time(stored["creation"]) is not None
    assert sim.bins()[0]["reserved_qty"] == 3
    assert sim.stats()["oversold_units"] == 1  # 3 promised, 1 free, 1 accepted as backorder
    again = await erp.create_sales_order("shopify:10", make_order("10", quantity=3))
    assert not again.created and again.created_at == result.created_at
    assert sim.bins()[0]["reserved_qty"] == 3


async def test_backorder_beyond_quantity_is_permanent(
    sim: ErpSimulator, erp: ErpNextConnector
) -> None:
    with pytest.raises(PermanentError) as info:
        await erp.create_sales_order("shopify:11", make_order("11"), backorders={"466157049": 5})
    assert info.value.status == 417 and "Backorder Qty" in str(info.value)
    assert not sim.orders


async def test_create_then_repeat_is_idempotent(sim: ErpSimulator, erp: ErpNextConnector) -> None:
    first = await erp.create_sales_order("shopify:450789469", make_order())
    assert first.created and first.erp_sales_order.startswith("SAL-ORD-")
    again = await erp.create_sales_order("shopify:450789469", make_order())
    assert again.erp_sales_order == first.erp_sales_order and not again.created
    assert sim.stats()["orders_created"] == 1
    stored = sim.orders[first.erp_sales_order].doc
    assert stored["grand_total"] == pytest.approx(398.01 - 10 + 11.94 + 4.99)


async def test_read_back_by_name_and_po_no(erp: ErpNextConnector) -> None:
    result = await erp.create_sales_order("shopify:2", make_order("2"))
    by_name = await erp.get_sales_order(result.erp_sales_order)
    assert by_name["po_no"] == "shopify:2" and by_name["items"][0]["item_code"] == "IPOD2008GREEN"
    assert await erp.find_by_po_no("shopify:2") == by_name
    assert await erp.find_by_po_no("shopify:404") is None
    with pytest.raises(PermanentError) as info:
        await erp.get_sales_order("SAL-ORD-1999-99999")
    assert info.value.status == 404


async def test_validation_error_is_permanent(sim: ErpSimulator, erp: ErpNextConnector) -> None:
    erp.customer, erp.channel_customers = "", {}  # the ERP refuses an order without a customer
    with pytest.raises(PermanentError) as info:
        await erp.create_sales_order("shopify:3", make_order("3"))
    assert info.value.status == 417
    assert "ValidationError" in str(info.value) and "customer" in str(info.value)
    assert not sim.orders


async def test_injected_5xx_is_retryable(sim: ErpSimulator, erp: ErpNextConnector) -> None:
    sim.set_config({"error_rate": 1.0, "error_status": 503})
    with pytest.raises(RetryableError) as info:
        await erp.create_sales_order("shopify:4", make_order("4"))
    assert info.value.status == 503 and not isinstance(info.value, RateLimitedError)
    sim.set_config({"error_rate": 0.0})
    assert (await erp.create_sales_order("shopify:4", make_order("4"))).created


async def test_injected_429_is_rate_limited(sim: ErpSimulator, erp: ErpNextConnector) -> None:
    sim.set_config({"error_rate": 1.0, "error_status": 429})
    with pytest.raises(RateLimitedError) as info:
        await erp.create_sales_order("shopify:5", make_order("5"))
    assert info.value.retry_after == 1.0


async def test_wrong_credentials_are_permanent(sim: ErpSimulator) -> None:
    assert sim.base_url
    erp = ErpNextConnector(sim.base_url, "demo-key", "nope")
    try:
        with pytest.raises(PermanentError) as info:
            await erp.create_sales_order("shopify:6", make_order("6"))
    finally:
        await erp.close()
    assert info.value.status == 401 and "AuthenticationError" in str(info.value)


async def test_timeout_is_retryable(sim: ErpSimulator) -> None:
    assert sim.base_url
    sim.set_config({"latency_ms": 500})
    erp = ErpNextConnector(sim.base_url, "demo-key", "demo-secret", timeout_s=0.1)
    try:
        with pytest.raises(RetryableError, match="timed out"):
            await erp.create_sales_order("shopify:7", make_order("7"))
    finally:
        await erp.close()


async def test_connection_refused_is_retryable(sim: ErpSimulator) -> None:
    assert sim.base_url
    url = sim.base_url
    await sim.stop()
    erp = ErpNextConnector(url, "demo-key", "demo-secret", timeout_s=1.0)
    try:
        with pytest.raises(RetryableError):
            await erp.create_sales_order("shopify:8", make_order("8"))
    finally:
        await erp.close()


async def test_from_settings(sim: ErpSimulator) -> None:
    assert sim.base_url
    sim.masters.companies["ACME"] = "USD"  # a company the ERP knows
    settings = Settings(erp_base_url=AnyHttpUrl(sim.base_url), erp_company="ACME")  # type: ignore[call-arg]
    erp = ErpNextConnector.from_settings(settings)
    try:
        result = await erp.create_sales_order("shopify:9", make_order("9"))
    finally:
        await erp.close()
    assert sim.orders[result.erp_sales_order].doc["company"] == "ACME"


def test_response_mapping_edge_cases() -> None:
    with pytest.raises(PermanentError, match="without data.name"):
        post_result(200, '{"data": {}}', {})
    assert post_result(201, '{"data": {"name": "X"}}', {}).created
    assert post_result(201, '{"data": {"name": "X"}}', {}).created_at is None
    stamped = post_result(200, '{"data": {"name": "X", "creation": "2026-01-10 12:00:00.5"}}', {})
    assert stamped.created_at == datetime(2026, 1, 10, 12, 0, 0, 500_000, UTC)
    with pytest.raises(PermanentError):
        post_result(200, '{"data": []}', {})
    err = error_for_status(409, "x" * 10_000, {}, "create")
    assert isinstance(err, PermanentError) and len(err.body or "") == 4096
    assert isinstance(error_for_status(502, "<html>", {}, "create"), RetryableError)


# --- after the order: shipments, cancellations, returns, the order-change feed ----------------

SKU_A, SKU_B = "IPOD2008GREEN", "IPOD2008BLACK"


def two_line_order(order_id: str) -> Order:
    """Line A: 3 x 10.00, line B: 1 x 5.50; tax 1.55, shipping 4.00 -> 41.05."""
    base = make_order(order_id)
    lines = [
        OrderLine(line_id="LA", sku=SKU_A, title="A", quantity=3, unit_price=usd("10.00"),
                  tax=usd("0"), discount=usd("0")),
        OrderLine(line_id="LB", sku=SKU_B, title="B", quantity=1, unit_price=usd("5.50"),
                  tax=usd("0"), discount=usd("0")),
    ]  # fmt: skip
    return base.model_copy(update={
        "lines": lines, "subtotal": usd("35.50"), "tax_total": usd("1.55"),
        "shipping": usd("4.00"), "discount_total": usd("0"), "total": usd("41.05")})  # fmt: skip


def shipment(shipment_id: str, *lines: tuple[str, str, int]) -> Shipment:
    return Shipment(shipment_id=shipment_id, order_key="shopify:1",
                    lines=[LineUnits(line_id=lid, sku=sku, quantity=q) for lid, sku,
                           q in lines], carrier="UPS",
                    tracking_number="1Z999", shipped_at="2026-01-11T10:00:00+00:00")  # fmt: skip


def refund(refund_id: str, amount: str, *lines: tuple[str, str, int], restock: bool) -> Refund:
    return Refund(refund_id=refund_id, lines=[LineUnits(line_id=lid, sku=s, quantity=q) for lid, s,
                                              q in lines],
                  amount=amount, currency="USD", reason="damaged", restock=restock)  # fmt: skip


async def placed(sim: ErpSimulator, erp: ErpNextConnector, key: str = "shopify:1") -> str:
    sim.set_stock(SKU_A, 10)
    sim.set_stock(SKU_B, 10)
    return (await erp.create_sales_order(key, two_line_order(key))).erp_sales_order


async def test_shipment_posts_a_delivery_note_and_its_invoice_once(
    sim: ErpSimulator, erp: ErpNextConnector
) -> None:
    so = await placed(sim, erp)
    ship = shipment("WMS-1", ("LA", SKU_A, 3), ("LB", SKU_B, 1))
    result = await erp.post_shipment("shopify:1", so, ship)
    assert result.created and result.delivery_note.startswith("MAT-DN-")
    assert result.sales_invoice and result.sales_invoice.startswith("ACC-SINV-")
    again = await erp.post_shipment("shopify:1", so, ship)
    assert again == ErpShipmentResult(result.delivery_note, result.sales_invoice, created=False)
    note = sim.stock.find("Delivery Note", result.delivery_note)
    assert note is not None and (note["custom_carrier"], note["custom_tracking_number"]) == (
        "UPS", "1Z999")
    invoice = sim.finance.find(result.sales_invoice)
    assert invoice is not None and invoice["grand_total"] == pytest.approx(41.05)
    assert (invoice["po_no"], invoice["is_return"]) == ("shopify:1", 0)
    assert {row["sales_order"] for row in invoice["items"]} == {so}
    order = sim.orders[so].doc
    assert (order["status"], order["per_delivered"], order["per_billed"]) == ("Completed", 100, 100)
    assert {b["item_code"]: (b["actual_qty"], b["reserved_qty"]) for b in sim.bins()} == {
        SKU_A: (7, 0), SKU_B: (9, 0)}
    stats = sim.stats()
    assert (stats["delivery_notes"], stats["invoices"]) == (1, 1)


async def test_partial_then_full_shipment(sim: ErpSimulator, erp: ErpNextConnector) -> None:
    so = await placed(sim, erp)
    first = await erp.post_shipment("shopify:1", so, shipment("WMS-1", ("LA", SKU_A, 1)))
    order = sim.orders[so].doc
    assert (order["status"], order["delivery_status"]) == ("To Deliver and Bill", "Partly Delivered")
    assert order["per_delivered"] == 25.0 and order["items"][0]["delivered_qty"] == 1
    second = await erp.post_shipment(
        "shopify:1", so, shipment("WMS-2", ("LA", SKU_A, 2), ("LB", SKU_B, 1)))
    assert (order["status"], order["delivery_status"]) == ("Completed", "Fully Delivered")
    invoices = [sim.finance.find(str(r.sales_invoice)) for r in (first, second)]
    totals = [inv["grand_total"] for inv in invoices if inv]
    assert totals[0] == pytest.approx(10 + 1.55 * 10 / 35.5 + 4 * 10 / 35.5, abs=0.01)
    assert sum(totals) == pytest.approx(41.05)  # the last invoice takes the rest of the charges
    with pytest.raises(PermanentError) as info:
        await erp.post_shipment("shopify:1", so, shipment("WMS-3", ("LA", SKU_A, 1)))
    assert info.value.status == 417 and "over limit" in str(info.value)


async def test_unknown_line_is_permanent(sim: ErpSimulator, erp: ErpNextConnector) -> None:
    so = await placed(sim, erp)
    with pytest.raises(PermanentError, match="no line"):
        await erp.post_shipment("shopify:1", so, shipment("WMS-1", ("LX", "NOPE", 1)))


async def test_cancel_frees_the_reservation_and_is_idempotent(
    sim: ErpSimulator, erp: ErpNextConnector
) -> None:
    so = await placed(sim, erp)
    await erp.cancel_sales_order(so, "buyer asked")
    await erp.cancel_sales_order(so, "buyer asked")
    order = sim.orders[so].doc
    assert (order["docstatus"], order["status"], order["custom_cancel_reason"]) == (
        2, "Cancelled", "buyer asked")
    assert all(b["reserved_qty"] == 0 for b in sim.bins()) and sim.stats()["cancellations"] == 1
    with pytest.raises(PermanentError, match="is cancelled"):
        await erp.post_shipment("shopify:1", so, shipment("WMS-1", ("LA", SKU_A, 1)))


async def test_cancel_after_a_delivery_is_refused(sim: ErpSimulator, erp: ErpNextConnector) -> None:
    so = await placed(sim, erp)
    note = (await erp.post_shipment("shopify:1", so, shipment("W", ("LA", SKU_A, 1)))).delivery_note
    with pytest.raises(PermanentError) as info:
        await erp.cancel_sales_order(so, "too late")
    assert info.value.status == 417
    assert f"Cannot cancel because submitted Delivery Note {note} exists" in str(info.value)
    with pytest.raises(PermanentError) as missing:
        await erp.cancel_sales_order("SAL-ORD-1999-99999", "x")
    assert missing.value.status == 404


async def test_return_with_restock_and_credit_note(sim: ErpSimulator, erp: ErpNextConnector) -> None:
    so = await placed(sim, erp)
    shipped = await erp.post_shipment(
        "shopify:1", so, shipment("W", ("LA", SKU_A, 3), ("LB", SKU_B, 1)))
    back = refund("R-1", "12.00", ("LA", SKU_A, 1), restock=True)  # 10.00 + 2.00 tax/shipping
    result = await erp.post_return("shopify:1", so, back)
    assert result.created and result.return_delivery_note and result.credit_note
    assert sim.stock.bins[SKU_A, "Stores - RSD"].actual_qty == 8  # 10 - 3 + 1
    note = sim.stock.find("Delivery Note", result.return_delivery_note)
    assert note is not None and (note["is_return"], note["return_against"]) == (
        1, shipped.delivery_note)
    assert note["items"][0]["qty"] == -1 and note["status"] == "Return"
    credit = sim.finance.find(result.credit_note)
    assert credit is not None and credit["grand_total"] == -12.0
    assert (credit["is_return"], credit["return_against"]) == (1, shipped.sales_invoice)
    assert sim.orders[so].doc["items"][0]["returned_qty"] == 1
    assert await erp.post_return("shopify:1", so, back) == ErpReturnResult(
        result.return_delivery_note, result.credit_note, created=False)
    assert sim.stock.bins[SKU_A, "Stores - RSD"].actual_qty == 8
    stats = sim.stats()
    assert (stats["returns"], stats["credit_notes"]) == (1, 1)
    with pytest.raises(PermanentError, match="not\\s+delivered"):
        await erp.post_return("shopify:1", so, refund("R-2", "30", ("LA", SKU_A, 3), restock=True))


async def test_refund_only_and_limited_to_what_was_invoiced(
    sim: ErpSimulator, erp: ErpNextConnector
) -> None:
    so = await placed(sim, erp)
    await erp.post_shipment("shopify:1", so, shipment("W1", ("LA", SKU_A, 1)))
    await erp.post_shipment("shopify:1", so, shipment("W2", ("LA", SKU_A, 2), ("LB", SKU_B, 1)))
    goodwill = await erp.post_return("shopify:1", so, refund("R-1", "5.00", restock=False))
    assert goodwill.return_delivery_note is None and goodwill.created
    credit = sim.finance.find(goodwill.credit_note)
    assert credit is not None and credit["grand_total"] == -5.0
    assert sim.stock.bins[SKU_A, "Stores - RSD"].actual_qty == 7  # nothing came back
    # more than either invoice alone: a credit note against the order
    big = await erp.post_return("shopify:1", so, refund("R-2", "30.00", restock=False))
    assert sim.finance.find(big.credit_note)["return_against"] is None  # type: ignore[index]
    with pytest.raises(PermanentError) as info:
        await erp.post_return("shopify:1", so, refund("R-3", "6.10", restock=False))
    assert info.value.status == 417 and "exceeds" in str(info.value)  # 41.05 - 35 = 6.05 left
    assert [s["grand_total"] for s in sim.finance.summaries()][-2:] == [-5.0, -30.0]


async def test_order_feed_reports_erp_side_cancellations(
    sim: ErpSimulator, erp: ErpNextConnector
) -> None:
    assert sim.base_url
    feed = ErpOrderFeed(sim.base_url, "demo-key", "demo-secret", timeout_s=2.0, page_size=2)
    try:
        first = await placed(sim, erp, "shopify:1")
        assert (await feed.poll(None)).changes == []
        others = [(await erp.create_sales_order(k, two_line_order(k))).erp_sales_order
                  for k in ("shopify:2", "shopify:3", "shopify:4")]  # fmt: skip
        sim.cancel_order(others[0], "fraud")
        sim.close_order(others[1], "no stock")
        await erp.cancel_sales_order(others[2], "buyer asked")
        result = await feed.poll(None)
        assert [(c.order_key, c.status, c.reason) for c in result.changes] == [
            ("shopify:2", "Cancelled", "fraud"), ("shopify:3", "Closed", "no stock"),
            ("shopify:4", "Cancelled", "buyer asked")]  # fmt: skip
        assert result.cursor == sim.orders[others[2]].doc["modified"]
        again = await feed.poll(result.cursor)
        assert [c.erp_sales_order for c in again.changes] == [others[2]]
        sim.cancel_order(first, None)
        later = await feed.poll(result.cursor)
        assert [(c.erp_sales_order, c.reason) for c in later.changes] == [
            (others[2], "buyer asked"), (first, None)]
    finally:
        await feed.close()


async def test_order_feed_from_settings_and_errors(sim: ErpSimulator) -> None:
    assert sim.base_url
    settings = Settings(erp_base_url=AnyHttpUrl(sim.base_url), erp_api_key="bad")  # type: ignore[call-arg,arg-type]
    feed = ErpOrderFeed.from_settings(settings)
    try:
        with pytest.raises(PermanentError) as info:
            await feed.poll(None)
        assert info.value.status == 401
    finally:
        await feed.close()
    with pytest.raises(DecodeError):
        order_change({"name": "SO-1", "status": "Cancelled"})


# --- many Sales Orders in a few requests: frappe.client.insert_many (issue 16) ----------------


def posts(*ids: str) -> list[SalesOrderPost]:
    return [SalesOrderPost(f"shopify:{i}", make_order(i)) for i in ids]


async def test_many_orders_in_three_requests_exactly_once(sim: ErpSimulator,
                                                          erp: ErpNextConnector) -> None:
    [early] = await erp.create_sales_orders(posts("1"))  # an order the ERP already holds
    assert early.created and early.created_at is not None
    before = sim.stats()["posts_received"]
    results = await erp.create_sales_orders(posts("2", "1", "3", "2"))  # "2" twice: one order
    assert sim.stats()["posts_received"] - before == 1  # one insert_many for "2" and "3"
    assert [r.created for r in results] == [True, False, True, True]
    assert results[1] == ErpPostResult(early.erp_sales_order, False, early.created_at)
    assert results[0] == results[3]
    for key, result in zip(["shopify:2", "shopify:3"], [results[0], results[2]], strict=True):
        stored = sim.order_by_po_no(key)
        assert stored is not None and stored.doc["name"] == result.erp_sales_order
        assert stored.doc["docstatus"] == 1  # submitted: the ERP reserves, as a single post
        assert result.created_at is not None
    again = await erp.create_sales_orders(posts("2", "3"))  # a retry: found, nothing new
    assert [r.erp_sales_order for r in again] == [results[0].erp_sales_order,
                                                  results[2].erp_sales_order]
    assert not any(r.created for r in again) and len(sim.orders) == 3


async def test_more_than_two_hundred_go_in_requests_of_two_hundred(
        sim: ErpSimulator, erp: ErpNextConnector) -> None:
    before = sim.stats()["posts_received"]
    results = await erp.create_sales_orders(posts(*(str(i) for i in range(201))))
    assert sim.stats()["posts_received"] - before == 2
    assert len({r.erp_sales_order for r in results}) == 201 and len(sim.orders) == 201


async def test_a_backlog_of_real_order_keys_goes_in_list_requests_the_server_accepts(
        sim: ErpSimulator, erp: ErpNextConnector) -> None:
    """Under a backlog the dispatch agent posts ~300 orders at once; their keys in one list URL
    passed the 8 KiB request line the server accepts (HTTP 400), and every such batch went one
    by one. The lookups go in chunks of at most ``IN_FILTER_BYTES`` of keys."""
    ids = [str(5001442751171 + i) for i in range(320)]  # Shopify ids of today's length
    await erp.create_sales_orders(posts(*ids[:40]))  # some the ERP already holds
    before = sim.stats()["posts_received"]
    results = await erp.create_sales_orders(posts(*ids))
    assert sim.stats()["posts_received"] - before == 2  # 280 new: two insert_many
    assert [r.created for r in results] == [False] * 40 + [True] * 280
    assert len({r.erp_sales_order for r in results}) == 320 and len(sim.orders) == 320


def test_in_chunks_keep_each_url_under_the_budget() -> None:
    keys = [f"amazon:114-{i:07d}-{i:07d}" for i in range(500)]
    chunks = in_chunks(keys, budget=2000)
    assert [k for chunk in chunks for k in chunk] == keys and len(chunks) > 1
    for chunk in chunks:
        assert len(quote_plus(json.dumps(chunk))) <= 2000
    assert in_chunks(["x" * 5000], budget=2000) == [["x" * 5000]]  # alone, not dropped
    assert in_chunks([]) == []


async def test_one_refused_order_refuses_the_whole_request(sim: ErpSimulator,
                                                            erp: ErpNextConnector) -> None:
    bad = SalesOrderPost("shopify:bad", make_order("9").model_copy(update={"lines": [
        make_order("9").lines[0].model_copy(update={"sku": "NO-SUCH-ITEM"})]}))
    with pytest.raises(PermanentError, match="NO-SUCH-ITEM"):
        await erp.create_sales_orders([*posts("7", "8"), bad])
    assert sim.orders == {}  # all or nothing, as one Frappe request's transaction


async def test_the_simulator_refuses_what_frappe_refuses(sim: ErpSimulator,
                                                         erp: ErpNextConnector) -> None:
    auth = {"Authorization": "token demo-key:demo-secret"}
    url = f"{sim.base_url}/api/method/frappe.client.insert_many"
    doc = bulk_doc(erp, posts("1")[0])  # a valid Sales Order, as the connector writes it
    async with aiohttp.ClientSession() as http:
        async with http.post(url, json={"docs": [doc] * 201}, headers=auth) as resp:
            assert resp.status == 417 and "Only 200" in await resp.text()
        async with http.post(url, json={"docs": [doc, doc]}, headers=auth) as resp:
            assert resp.status == 417 and "must be unique" in await resp.text()  # within one
        async with http.post(url, json={"docs": [doc]}) as resp:
            assert resp.status in (401, 403)  # no token
        assert sim.orders == {}
        async with http.post(url, json={"docs": json.dumps([doc])}, headers=auth) as resp:
            assert resp.status == 200  # docs as JSON text, as a form would send them
            [name] = (await resp.json())["message"]
    assert list(sim.orders) == [name]
