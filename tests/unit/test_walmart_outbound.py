"""WalmartOutbound against the real Walmart simulator on loopback: single PUTs, one bulk feed for
a large push, seller cancellations (partial, whole, repeated), error mapping."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web

from retail_sync.connectors.contracts import QuantityUpdate, Refund, Shipment
from retail_sync.connectors.errors import PermanentError, RateLimitedError, RetryableError
from retail_sync.connectors.ratelimit import Budgets
from retail_sync.connectors.walmart.outbound import WALMART_CARRIERS, WalmartApi, WalmartOutbound
from retail_sync.connectors.walmart.plan import WALMART_PLANS
from retail_sync.simulators.walmart.orders import CARRIERS
from retail_sync.simulators.walmart.simulator import WalmartSimConfig, WalmartSimulator
from retail_sync.streams.models import LineUnits

JSON = dict[str, Any]


@pytest.fixture
async def sim() -> AsyncIterator[WalmartSimulator]:
    simulator = WalmartSimulator(WalmartSimConfig(seed=11, feed_processing_ms=50))
    await simulator.start("127.0.0.1", 0)
    yield simulator
    await simulator.stop()


def outbound_for(base_url: str, plans: dict[str, Any] | None = None, **kw: Any) -> WalmartOutbound:
    budgets = Budgets("walmart", {**WALMART_PLANS, **(plans or {})})
    api = WalmartApi(base_url, "demo-client-id", "demo-client-secret", timeout_s=2.0, budgets=budgets)
    return WalmartOutbound(api, **{"bulk_min_skus": 20, "feed_poll_s": 0.02, **kw})


@pytest.fixture
async def outbound(sim: WalmartSimulator) -> AsyncIterator[WalmartOutbound]:
    assert sim.base_url
    client = outbound_for(sim.base_url)
    yield client
    await client.close()


async def test_small_push_puts_each_sku(sim: WalmartSimulator, outbound: WalmartOutbound) -> None:
    report = await outbound.push_inventory([QuantityUpdate("WM-KETTLE-01", 4), QuantityUpdate("NOPE", 1)])
    assert report.mechanism == "inventory" and report.applied == ["WM-KETTLE-01"]
    assert list(report.failed) == ["NOPE"] and "CONTENT_NOT_FOUND" in report.failed["NOPE"]
    assert sim.listings.quantity("WM-KETTLE-01") == 4
    assert sim.stats()["requests_inventory"] == 2 and "feeds_received" not in sim.stats()


async def test_25_skus_go_in_exactly_one_feed(sim: WalmartSimulator, outbound: WalmartOutbound) -> None:
    skus = [f"BULK-{i:02}" for i in range(24)]
    sim.set_config({"extra_skus": skus})
    updates = [QuantityUpdate(s, i) for i, s in enumerate(skus)] + [QuantityUpdate("GHOST", 3)]
    report = await outbound.push_inventory(updates)
    assert report.mechanism == "inventory-feed" and report.reference in sim.feeds
    assert sorted(report.applied) == skus and list(report.failed) == ["GHOST"]
    assert "DATA_ERROR" in report.failed["GHOST"]
    assert all(sim.listings.quantity(s) == i for i, s in enumerate(skus))
    stats = sim.stats()
    assert stats["feeds_received"] == 1 and stats.get("requests_inventory", 0) == 0


async def test_feed_details_are_read_page_by_page(sim: WalmartSimulator, outbound: WalmartOutbound) -> None:
    skus = [f"MANY-{i:03}" for i in range(120)]
    sim.set_config({"extra_skus": skus})
    report = await outbound.push_inventory([QuantityUpdate(s, 1) for s in skus])
    assert sorted(report.applied) == skus and not report.failed


async def test_feed_not_processed_in_time_is_retryable(sim: WalmartSimulator) -> None:
    sim.set_config({"feed_processing_ms": 10_000})
    assert sim.base_url
    client = outbound_for(sim.base_url, bulk_min_skus=1, feed_timeout_s=0.2)
    try:
        with pytest.raises(RetryableError, match="not processed"):
            await client.push_inventory([QuantityUpdate("WM-KETTLE-01", 1)])
    finally:
        await client.close()


async def test_a_spent_feed_plan_sends_single_updates_instead_of_a_429(sim: WalmartSimulator) -> None:
    """Walmart's answer to the first feed says no feed token is left (x-current-token-count 0):
    the next large push goes out as single updates rather than earning a 429."""
    sim.set_config({"feeds_burst": 1})
    assert sim.base_url
    client = outbound_for(sim.base_url, bulk_min_skus=1)
    try:
        first = await client.push_inventory([QuantityUpdate("WM-KETTLE-01", 1)])
        second = await client.push_inventory([QuantityUpdate("WM-KETTLE-01", 2)])
    finally:
        await client.close()
    assert (first.mechanism, second.mechanism) == ("inventory-feed", "inventory")
    assert second.applied == ["WM-KETTLE-01"] and sim.listings.quantity("WM-KETTLE-01") == 2
    assert sim.stats().get("throttled_429", 0) == 0


async def test_partial_then_whole_cancellation_repeats_safely(
    sim: WalmartSimulator, outbound: WalmartOutbound
) -> None:
    sim.listings.set("WM-KETTLE-01", 10)
    order = sim.create_order([("WM-KETTLE-01", 3), ("WM-MUG-4PK", 2)])
    assert order is not None and sim.listings.quantity("WM-KETTLE-01") == 7
    po = order["purchaseOrderId"]
    partial = [LineUnits(line_id="1", sku="WM-KETTLE-01", quantity=2)]
    await outbound.cancel_lines(po, partial, whole_order=False, reason="out of stock")
    await outbound.cancel_lines(po, partial, whole_order=False, reason="out of stock")
    assert [(c["line_id"], c["quantity"]) for c in sim.cancellations] == [("1", 2)]
    everything = [LineUnits(line_id="1", sku="WM-KETTLE-01", quantity=3),
                  LineUnits(line_id="2", sku="WM-MUG-4PK", quantity=2)]
    await outbound.cancel_lines(po, everything, whole_order=True, reason="out of stock")
    await outbound.cancel_lines(po, everything, whole_order=True, reason="out of stock")
    assert [(c["line_id"], c["quantity"]) for c in sim.cancellations] == [("1", 2), ("1", 1), ("2", 2)]
    assert {c["reason"] for c in sim.cancellations} == {"SELLER_CANCEL_OUT_OF_STOCK"}
    statuses = {
        s["status"]
        for ln in sim.orders[po]["orderLines"]["orderLine"]
        for s in ln["orderLineStatuses"]["orderLineStatus"]
    }
    assert statuses == {"Cancelled"} and sim.listings.items["WM-KETTLE-01"].seller_cancelled_units == 3


async def test_cancelling_shipped_units_or_unknown_lines_is_permanent(
    sim: WalmartSimulator, outbound: WalmartOutbound
) -> None:
    order = sim.create_order([("WM-KETTLE-01", 1)])
    assert order is not None
    po = order["purchaseOrderId"]
    sim.update_line_status(po, "1", "Shipped")
    with pytest.raises(PermanentError, match="not yet shipped"):
        await outbound.cancel_lines(po, [LineUnits(line_id="1", sku="WM-KETTLE-01", quantity=1)],
                                    whole_order=False, reason="x")
    with pytest.raises(PermanentError, match="no line 7"):
        await outbound.cancel_lines(po, [LineUnits(line_id="7", sku="WM-KETTLE-01", quantity=1)],
                                    whole_order=False, reason="x")
    await outbound.cancel_lines(po, [], whole_order=True, reason="x")  # nothing left to cancel: fine
    with pytest.raises(PermanentError) as caught:
        await outbound.cancel_lines("404404", [], whole_order=True, reason="x")
    assert caught.value.status == 404


async def test_5xx_and_connection_failures_are_retryable() -> None:
    async def handler(request: web.Request) -> web.Response:
        if request.path == "/v3/token":
            return web.json_response({"access_token": "t", "token_type": "Bearer", "expires_in": 900})
        return web.json_response({"errors": {"error": [{"code": "SYSTEM_ERROR"}]}}, status=502)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    client = outbound_for(f"http://127.0.0.1:{runner.addresses[0][1]}")
    down = outbound_for("http://127.0.0.1:9")
    try:
        with pytest.raises(RetryableError) as caught:
            await client.push_inventory([QuantityUpdate("A", 1)])
        assert caught.value.status == 502 and not isinstance(caught.value, RateLimitedError)
        with pytest.raises(RetryableError):
            await down.push_inventory([QuantityUpdate("A", 1)])
    finally:
        await client.close()
        await down.close()
        await runner.cleanup()


def test_from_settings() -> None:
    class S:
        walmart_base_url = None

    assert WalmartOutbound.from_settings(S()) is None


async def test_spent_feed_budget_falls_back_to_paced_single_updates(sim: WalmartSimulator) -> None:
    """Walmart allows few bulk feeds an hour: once our budget is spent a large push goes out as
    single updates, paced below the inventory limit, and Walmart never has to throttle us."""
    assert sim.base_url
    skus = [f"BULK-{i:02}" for i in range(25)]
    sim.set_config({"extra_skus": skus, "inventory_rate_per_s": 200, "inventory_burst": 5})
    client = outbound_for(sim.base_url, plans={"feeds": (1 / 3600, 1), "inventory": (150, 5)})
    try:
        first = await client.push_inventory([QuantityUpdate(s, 1) for s in skus])
        second = await client.push_inventory([QuantityUpdate(s, 2) for s in skus])
    finally:
        await client.close()
    assert first.mechanism == "inventory-feed" and second.mechanism == "inventory"
    assert sorted(second.applied) == skus and all(sim.listings.quantity(s) == 2 for s in skus)
    assert sim.stats().get("throttled_429", 0) == 0


# --- shipments and refunds --------------------------------------------------------------------


def shipment(lines: list[tuple[str, int]], *, sid: str = "SHP-1", tracking: str = "1Z1",
             carrier: str = "UPS") -> Shipment:
    return Shipment(shipment_id=sid, order_key="walmart:po", carrier=carrier, tracking_number=tracking,
                    lines=[LineUnits(line_id=n, sku="SKU", quantity=q) for n, q in lines],
                    shipped_at="2026-01-02T10:00:00Z")


def shipped(sim: WalmartSimulator, po: str, line: str = "1") -> list[tuple[str, str, str | None]]:
    entry = next(ln for ln in sim.orders[po]["orderLines"]["orderLine"] if ln["lineNumber"] == line)
    return [(s["status"], s["statusQuantity"]["amount"], (s.get("trackingInfo") or {}).get("trackingNumber"))
            for s in entry["orderLineStatuses"]["orderLineStatus"]]


def test_carrier_table_covers_every_canonical_carrier_with_spec_codes() -> None:
    assert set(WALMART_CARRIERS) == {"UPS", "USPS", "FEDEX", "DHL", "OTHER"}
    assert all(code in CARRIERS for code in WALMART_CARRIERS.values() if code is not None)
    assert WALMART_CARRIERS["FEDEX"] == "FedEx" and WALMART_CARRIERS["OTHER"] is None


async def test_partial_then_full_shipment_and_repeats_are_no_ops(sim, outbound) -> None:
    order = sim.create_order([("WM-KETTLE-01", 3), ("WM-MUG-4PK", 1)])
    assert order is not None
    po = order["purchaseOrderId"]
    first = shipment([("1", 1)], tracking="1ZA")
    await outbound.confirm_shipment(po, first)
    assert shipped(sim, po) == [("Created", "2", None), ("Shipped", "1", "1ZA")]
    second = shipment([("1", 2), ("2", 1)], sid="SHP-2", tracking="9400", carrier="usps")
    await outbound.confirm_shipment(po, second)
    await outbound.confirm_shipment(po, first)
    await outbound.confirm_shipment(po, second)
    assert shipped(sim, po) == [("Shipped", "1", "1ZA"), ("Shipped", "2", "9400")]
    assert shipped(sim, po, "2") == [("Shipped", "1", "9400")]
    assert sim.stats()["requests_shipping"] == 2
    entries = sim.orders[po]["orderLines"]["orderLine"][1]["orderLineStatuses"]["orderLineStatus"]
    info = entries[0]["trackingInfo"]
    assert info["carrierName"] == {"carrier": "USPS"} and info["shipDateTime"] == 1767348000000


async def test_other_carrier_needs_a_tracking_url(sim) -> None:
    order = sim.create_order([("WM-KETTLE-01", 1)])
    assert order is not None and sim.base_url
    plain, with_url = outbound_for(sim.base_url), outbound_for(
        sim.base_url, other_tracking_url="https://track.example/{tracking_number}")
    try:
        with pytest.raises(PermanentError, match="tracking URL"):
            await plain.confirm_shipment(order["purchaseOrderId"], shipment([("1", 1)], carrier="OTHER"))
        await with_url.confirm_shipment(order["purchaseOrderId"], shipment([("1", 1)], carrier="OTHER"))
        with pytest.raises(PermanentError, match="canonical carrier"):
            await with_url.confirm_shipment(order["purchaseOrderId"], shipment([("1", 1)], carrier="PIGEON"))
    finally:
        await plain.close()
        await with_url.close()
    status = sim.orders[order["purchaseOrderId"]]["orderLines"]["orderLine"][0]["orderLineStatuses"]
    assert status["orderLineStatus"][0]["trackingInfo"]["trackingURL"] == "https://track.example/1Z1"


async def test_shipping_more_than_is_open_is_permanent(sim, outbound) -> None:
    order = sim.create_order([("WM-KETTLE-01", 1)])
    assert order is not None
    await outbound.cancel_lines(order["purchaseOrderId"], [LineUnits(line_id="1", sku="WM-KETTLE-01",
                                                                     quantity=1)],
                                whole_order=False, reason="stock")
    with pytest.raises(PermanentError, match="only 0 open"):
        await outbound.confirm_shipment(order["purchaseOrderId"], shipment([("1", 1)]))


async def test_refund_splits_money_over_lines_and_is_idempotent(sim, outbound) -> None:
    order = sim.create_order([("WM-KETTLE-01", 2), ("WM-USB-C-2M", 1)])
    assert order is not None
    po = order["purchaseOrderId"]
    await outbound.confirm_shipment(po, shipment([("1", 2), ("2", 1)]))
    refund = Refund(refund_id="RET-7", lines=[LineUnits(line_id="1", sku="K", quantity=1),
                                              LineUnits(line_id="2", sku="U", quantity=1)],
                    amount="44.96", currency="USD", reason="damaged", restock=True)
    await outbound.refund(po, refund)
    await outbound.refund(po, refund)
    assert [(r["line_id"], r["amount"], r["reasons"]) for r in sim.refunds] == [
        ("1", "34.99", ["Customer returned item"]), ("2", "9.97", ["Customer returned item"])]
    comments = sim.orders[po]["orderLines"]["orderLine"][0]["refund"]["refundComments"]
    assert "retail-sync refund RET-7" in comments
    money_only = Refund(refund_id="ADJ-1", lines=[LineUnits(line_id="1", sku="WM-KETTLE-01", quantity=1)],
                        amount="5",
                        currency="USD", reason="DamagedItem", restock=False)
    await outbound.refund(po, money_only)
    await outbound.refund(po, money_only)
    assert [(float(r["amount"]), r["reasons"]) for r in sim.refunds[2:]] == [(5.0, ["DamagedItem"])]
    assert sim.stats()["requests_refund"] == 2


async def test_refund_of_an_unshipped_line_is_permanent(sim, outbound) -> None:
    order = sim.create_order([("WM-KETTLE-01", 1)])
    assert order is not None
    refund = Refund(refund_id="R", lines=[LineUnits(line_id="1", sku="K", quantity=1)], amount="1",
                    currency="USD",
                    reason="x", restock=False)
    with pytest.raises(PermanentError, match="not been shipped"):
        await outbound.refund(order["purchaseOrderId"], refund)
