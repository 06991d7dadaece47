"""ErpNextConnector against the real ERP simulator over HTTP: results and error mapping."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest
from pydantic import AnyHttpUrl

from connectors.erp import ErpNextConnector, error_for_status, post_result, sales_order_doc
from connectors.errors import PermanentError, RateLimitedError, RetryableError
from retail_sync.settings import Settings
from simulators.erp import ErpSimConfig, ErpSimulator, run_erp_simulator
from streams.models import Address, Customer, Money, Order, OrderLine


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
    assert doc["po_no"] == "shopify:1" and doc["marketplace_order_id"] == "450789469"
    assert doc["docstatus"] == 1  # submitted on insert, so the ERP reserves
    assert doc["transaction_date"] == doc["delivery_date"] == "2026-01-11"  # UTC date
    assert (doc["customer"], doc["company"], doc["set_warehouse"]) == ("Cust", "C", "W")
    assert doc["customer_email"] == "bob@example.com"
    assert doc["items"] == [
        {
            "item_code": "IPOD2008GREEN",
            "item_name": "IPod Nano - 8gb",
            "qty": 2,
            "rate": "199.005",
            "uom": "Nos",
            "delivery_date": "2026-01-11",
            "warehouse": "W",
            "marketplace_line_id": "466157049",
        }
    ]
    assert [t["tax_amount"] for t in doc["taxes"]] == ["11.94", "4.99"]
    assert doc["discount_amount"] == "10.00"


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
    assert result.created_at == stored["creation"]
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
    erp.customer = ""  # the ERP refuses a Sales Order without a customer
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
    assert stamped.created_at == "2026-01-10 12:00:00.5"
    with pytest.raises(PermanentError):
        post_result(200, '{"data": []}', {})
    err = error_for_status(409, "x" * 10_000, {}, "create")
    assert isinstance(err, PermanentError) and len(err.body or "") == 4096
    assert isinstance(error_for_status(502, "<html>", {}, "create"), RetryableError)
