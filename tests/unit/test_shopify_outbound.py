"""ShopifyOutbound against the real Shopify simulator on loopback: inventory levels, pacing under
the call limit, whole and partial seller cancellations (repeatable), error mapping."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from aiohttp import web

from retail_sync.connectors.contracts import QuantityUpdate, Refund, Shipment
from retail_sync.connectors.errors import PermanentError, RateLimitedError, RetryableError
from retail_sync.connectors.ratelimit import Budgets
from retail_sync.connectors.shopify.outbound import (
    SHOPIFY_CARRIERS,
    ShopifyOutbound,
    parse_call_limit,
    shopify_carrier,
)
from retail_sync.connectors.shopify.plan import SHOPIFY_PLANS
from retail_sync.simulators.shopify.simulator import ShopifySimConfig, ShopifySimulator
from retail_sync.streams.models import LineUnits
from tests.unit.test_shopify_simulator import Receiver

TOKEN = "shpat_demo"


@asynccontextmanager
async def fake_shopify(handler: Any) -> AsyncIterator[str]:
    """A server answering every request with ``handler`` (for answers the simulator never gives)."""
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


@pytest.fixture
async def receiver() -> AsyncIterator[str]:
    r = Receiver()
    url = await r.start()
    yield url
    assert r.runner is not None
    await r.runner.cleanup()


@pytest.fixture
async def sim(receiver: str) -> AsyncIterator[ShopifySimulator]:
    simulator = ShopifySimulator(ShopifySimConfig(webhook_url=receiver, secret="s", seed=5, rate_per_s=500))
    await simulator.start()
    yield simulator
    await simulator.stop()


@pytest.fixture
async def outbound(sim: ShopifySimulator) -> AsyncIterator[ShopifyOutbound]:
    client = ShopifyOutbound(str(sim.base_url), TOKEN)
    yield client
    await client.close()


async def test_push_sets_levels_by_sku_and_reports_unknown(sim, outbound) -> None:
    report = await outbound.push_inventory(
        [QuantityUpdate("IPOD2008RED", 4), QuantityUpdate("MUG-CLASSIC", 0), QuantityUpdate("NOPE", 2)]
    )
    assert report.mechanism == "inventory_levels/set"
    assert sorted(report.applied) == ["IPOD2008RED", "MUG-CLASSIC"]
    assert list(report.failed) == ["NOPE"] and "no product variant" in report.failed["NOPE"]
    assert sim.listings.quantity("IPOD2008RED") == 4 and sim.listings.quantity("MUG-CLASSIC") == 0
    assert await outbound.location_id() == sim.config.location_id


async def test_sku_added_later_is_found_by_one_refresh(sim, outbound) -> None:
    await outbound.push_inventory([QuantityUpdate("IPOD2008RED", 1)])
    sim.set_config({"extra_skus": ["NEW-SKU"]})
    report = await outbound.push_inventory([QuantityUpdate("NEW-SKU", 7)])
    assert report.applied == ["NEW-SKU"] and sim.listings.quantity("NEW-SKU") == 7


async def test_products_are_paged(sim) -> None:
    sim.set_config({"extra_skus": [f"P-{i:03}" for i in range(12)]})
    client = ShopifyOutbound(str(sim.base_url), TOKEN, page_limit=5)
    try:
        report = await client.push_inventory([QuantityUpdate("P-011", 3), QuantityUpdate("P-000", 2)])
    finally:
        await client.close()
    assert sorted(report.applied) == ["P-000", "P-011"] and len(client._items) == 17


async def test_sixty_skus_paced_without_a_429(sim) -> None:
    skus = [f"S-{i:02}" for i in range(60)]
    sim.set_config({"extra_skus": skus, "api_bucket_capacity": 20, "api_leak_per_s": 40})
    client = ShopifyOutbound(str(sim.base_url), TOKEN, leak_per_s=40)
    try:
        report = await client.push_inventory([QuantityUpdate(s, 5) for s in skus])
    finally:
        await client.close()
    assert sorted(report.applied) == skus and client.throttled == 0
    assert sim.stats()["status_counts"] == {} and all(sim.listings.quantity(s) == 5 for s in skus)


async def test_a_429_is_waited_out_then_raised_when_it_persists() -> None:
    calls: list[float] = []

    async def throttled(_request: web.Request) -> web.Response:
        calls.append(time.monotonic())
        if len(calls) == 2:  # one 429 for the first SKU, then fine; later always 429
            limit = {"X-Shopify-Shop-Api-Call-Limit": "1/40"}
            return web.json_response({"inventory_level": {}}, headers=limit)
        headers = {"Retry-After": "0.05", "X-Shopify-Shop-Api-Call-Limit": "40/40"}
        return web.json_response({"errors": "Exceeded 2 calls per second"}, status=429, headers=headers)

    async with fake_shopify(throttled) as base:
        client = ShopifyOutbound(base, TOKEN, location_id=1, max_attempts=3, leak_per_s=1000)
        client._items = {"A": 11, "B": 12}
        try:
            assert (await client.push_inventory([QuantityUpdate("A", 1)])).applied == ["A"]
            with pytest.raises(RateLimitedError) as caught:
                await client.push_inventory([QuantityUpdate("B", 1)])
        finally:
            await client.close()
    assert caught.value.retry_after == 0.05 and len(calls) == 5 and client.throttled == 4
    assert calls[1] - calls[0] >= 0.05 and calls[4] - calls[3] >= 0.05


async def test_the_call_limit_header_sets_the_shared_budget() -> None:
    now = [0.0]
    budgets = Budgets("shopify", dict(SHOPIFY_PLANS), clock=lambda: now[0])
    client = ShopifyOutbound("http://shop.invalid", TOKEN, budgets=budgets)
    await client._observe(200, {"X-Shopify-Shop-Api-Call-Limit": "38/40"})
    limiter = budgets.limiter("admin")
    assert limiter.try_acquire() == pytest.approx(0.5)  # leaks 2/s: one call free in 0.5 s
    now[0] = 0.5
    assert limiter.try_acquire() == 0 and limiter.try_acquire() > 0  # 2 kept free
    now[0] = 100.0
    await client._observe(200, {"X-Shopify-Shop-Api-Call-Limit": "1/80"})  # a Plus store
    assert limiter.budget() == (4.0, 78)
    await client._observe(429, {"Retry-After": "3.0"})
    assert limiter.try_acquire() == pytest.approx(3.0) and budgets.stats()["admin"]["throttled"] == 1
    assert parse_call_limit("1/80") == (1, 80) and parse_call_limit("x") is None


async def _order(sim: ShopifySimulator, lines: list[tuple[str, int]]) -> dict[str, Any]:
    order = await sim.send_order(lines)
    assert order is not None
    return order


async def test_whole_cancel_is_recorded_once(sim, outbound) -> None:
    order = await _order(sim, [("IPOD2008RED", 2), ("MUG-CLASSIC", 1)])
    oid = str(order["id"])
    lines = [LineUnits(line_id=str(li["id"]), sku=li["sku"],
                       quantity=li["quantity"]) for li in order["line_items"]]
    await outbound.cancel_lines(oid, lines, whole_order=True, reason="out of stock")
    await outbound.cancel_lines(oid, lines, whole_order=True, reason="out of stock")  # 422 = done
    assert sim.orders[oid]["cancel_reason"] == "inventory" and sim.orders[oid]["cancelled_at"]
    cancelled = sorted((c["sku"], c["quantity"]) for c in sim.cancellations)
    assert cancelled == [("IPOD2008RED", 2), ("MUG-CLASSIC", 1)]
    # a partial repeat after the whole cancellation asks for nothing more
    await outbound.cancel_lines(oid, lines[:1], whole_order=False, reason="out of stock")
    assert len(sim.cancellations) == 2


async def test_partial_cancel_refunds_only_what_is_missing(sim, outbound) -> None:
    sim.listings.set("IPOD2008RED", 10)
    order = await _order(sim, [("IPOD2008RED", 3), ("MUG-CLASSIC", 1)])
    oid, red = str(order["id"]), order["line_items"][0]
    cancel = [LineUnits(line_id=str(red["id"]), sku="IPOD2008RED", quantity=2)]
    await outbound.cancel_lines(oid, cancel, whole_order=False, reason="stock promised elsewhere")
    await outbound.cancel_lines(oid, cancel, whole_order=False, reason="stock promised elsewhere")
    refunds = sim.orders[oid]["refunds"]
    assert len(refunds) == 1 and refunds[0]["refund_line_items"][0]["restock_type"] == "cancel"
    assert [(c["line_id"], c["quantity"], c["reason"]) for c in sim.cancellations] == [
        (str(red["id"]), 2, "stock promised elsewhere")
    ]
    assert sim.listings.items["IPOD2008RED"].seller_cancelled_units == 2
    assert sim.orders[oid]["cancelled_at"] is None


async def test_errors_map_to_the_hierarchy(sim, outbound) -> None:
    with pytest.raises(PermanentError):
        await outbound.cancel_lines("1", [], whole_order=True, reason="x")  # 404
    bad = ShopifyOutbound(str(sim.base_url), "wrong-token")
    try:
        with pytest.raises(PermanentError) as caught:
            await bad.push_inventory([QuantityUpdate("IPOD2008RED", 1)])
        assert caught.value.status == 401
    finally:
        await bad.close()
    down = ShopifyOutbound("http://127.0.0.1:9", TOKEN)
    try:
        with pytest.raises(RetryableError):
            await down.push_inventory([QuantityUpdate("IPOD2008RED", 1)])
    finally:
        await down.close()


async def test_5xx_is_retryable() -> None:
    async def fail(_request: web.Request) -> web.Response:
        headers = {"Retry-After": "1.5"}
        return web.json_response({"errors": "Internal Server Error"}, status=503, headers=headers)

    async with fake_shopify(fail) as base:
        client = ShopifyOutbound(base, TOKEN)
        try:
            with pytest.raises(RetryableError) as caught:
                await client.push_inventory([QuantityUpdate("A", 1)])
        finally:
            await client.close()
    assert caught.value.retry_after == 1.5 and not isinstance(caught.value, RateLimitedError)


def test_from_settings() -> None:
    class S:
        shopify_admin_base_url = None

    assert ShopifyOutbound.from_settings(S()) is None


# --- shipments and refunds --------------------------------------------------------------------


def shipment(lines: list[tuple[int, int]], *, tracking: str = "1Z1", carrier: str = "UPS",
             sid: str = "SHP-1") -> Shipment:
    return Shipment(shipment_id=sid, order_key="shopify:o", carrier=carrier, tracking_number=tracking,
                    lines=[LineUnits(line_id=str(i), sku="SKU", quantity=q) for i, q in lines],
                    shipped_at="2026-01-02T10:00:00Z")


def test_carrier_table_covers_every_canonical_carrier() -> None:
    assert set(SHOPIFY_CARRIERS) == {"UPS", "USPS", "FEDEX", "DHL", "OTHER"}
    assert [shopify_carrier(c) for c in ("ups", "USPS", "FedEx", "DHL", "OTHER")] == [
        "UPS", "USPS", "FedEx", "DHL Express", "Other"]
    with pytest.raises(PermanentError, match="canonical carrier"):
        shopify_carrier("PIGEON")


async def test_partial_then_full_shipment_and_repeats_are_no_ops(sim, outbound) -> None:
    order = await sim.send_order([("IPOD2008RED", 2), ("MUG-CLASSIC", 1)])
    assert order is not None
    oid, (red, mug) = str(order["id"]), [li["id"] for li in order["line_items"]]
    first, second = shipment([(red, 1)]), shipment([(red, 1), (mug, 1)], tracking="FX9", carrier="FEDEX")
    await outbound.confirm_shipment(oid, first)
    assert sim.orders[oid]["fulfillment_status"] == "partial"
    await outbound.confirm_shipment(oid, first)
    await outbound.confirm_shipment(oid, second)
    await outbound.confirm_shipment(oid, second)
    fulfillments = sim.orders[oid]["fulfillments"]
    assert [(f["tracking_number"], f["tracking_company"]) for f in fulfillments] == [
        ("1Z1", "UPS"), ("FX9", "FedEx")]
    assert sim.orders[oid]["fulfillment_status"] == "fulfilled"


async def test_shipping_more_than_is_left_is_permanent(sim, outbound) -> None:
    order = await sim.send_order([("IPOD2008RED", 1)])
    assert order is not None
    with pytest.raises(PermanentError) as caught:
        await outbound.confirm_shipment(str(order["id"]), shipment([(order["line_items"][0]["id"], 2)]))
    assert caught.value.status == 422


async def test_refunds_with_and_without_restock_are_idempotent(sim, outbound) -> None:
    order = await sim.send_order([("TSHIRT-M-BLU", 2)])
    assert order is not None
    oid, line = str(order["id"]), order["line_items"][0]["id"]
    sim.orders[oid]["financial_status"] = "paid"
    await outbound.confirm_shipment(oid, shipment([(line, 2)]))
    back = Refund(refund_id="RMA-1", lines=[LineUnits(line_id=str(line), sku="TSHIRT-M-BLU", quantity=1)],
                  amount="24.50",
                  currency="USD", reason="too small", restock=True)
    goodwill = Refund(refund_id="GW-2", lines=[LineUnits(line_id=str(line), sku="TSHIRT-M-BLU",
                                                         quantity=1)], amount="3.00",
                      currency="USD", reason="late", restock=False)
    for refund in (back, back, goodwill, goodwill):
        await outbound.refund(oid, refund)
    refunds = sim.orders[oid]["refunds"]
    assert [(r["refund_line_items"][0]["restock_type"], r["transactions"][0]["amount"]) for r in refunds] == [
        ("return", "24.50"), ("no_restock", "3.00")]
    assert refunds[0]["note"] == "too small [retail-sync refund RMA-1]"
    assert sim.orders[oid]["financial_status"] == "partially_refunded"
    with pytest.raises(PermanentError, match="EUR"):
        await outbound.refund(oid, Refund("X", [], "1", "EUR", "x", False))


async def test_a_bucket_that_shrank_and_grew_back_is_followed_both_ways() -> None:
    budgets = Budgets("shopify", dict(SHOPIFY_PLANS))
    client = ShopifyOutbound("http://shop.invalid", TOKEN, budgets=budgets)
    await client._observe(200, {"X-Shopify-Shop-Api-Call-Limit": "1/10"})  # cut at a peak
    assert budgets.limiter("admin").budget() == (0.5, 8)
    await client._observe(200, {"X-Shopify-Shop-Api-Call-Limit": "1/40"})  # back to normal
    assert budgets.limiter("admin").budget() == (2.0, 38)
