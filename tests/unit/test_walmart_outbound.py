"""WalmartOutbound against the real Walmart simulator on loopback: single PUTs, one bulk feed for
a large push, seller cancellations (partial, whole, repeated), error mapping."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web

from connectors.base import CancelLine, QuantityUpdate
from connectors.errors import PermanentError, RateLimitedError, RetryableError
from connectors.walmart_outbound import WalmartApi, WalmartOutbound
from simulators.walmart import WalmartSimConfig, WalmartSimulator

JSON = dict[str, Any]


@pytest.fixture
async def sim() -> AsyncIterator[WalmartSimulator]:
    simulator = WalmartSimulator(WalmartSimConfig(seed=11, feed_processing_ms=50))
    await simulator.start("127.0.0.1", 0)
    yield simulator
    await simulator.stop()


def outbound_for(base_url: str, **kw: Any) -> WalmartOutbound:
    api = WalmartApi(base_url, "demo-client-id", "demo-client-secret", timeout_s=2.0)
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


async def test_throttled_feed_is_rate_limited(sim: WalmartSimulator) -> None:
    sim.set_config({"feeds_burst": 1})
    assert sim.base_url
    client = outbound_for(sim.base_url, bulk_min_skus=1)
    try:
        await client.push_inventory([QuantityUpdate("WM-KETTLE-01", 1)])
        with pytest.raises(RateLimitedError) as caught:
            await client.push_inventory([QuantityUpdate("WM-KETTLE-01", 2)])
    finally:
        await client.close()
    assert caught.value.retry_after is not None and caught.value.retry_after > 60


async def test_partial_then_whole_cancellation_repeats_safely(
    sim: WalmartSimulator, outbound: WalmartOutbound
) -> None:
    sim.listings.set("WM-KETTLE-01", 10)
    order = sim.create_order([("WM-KETTLE-01", 3), ("WM-MUG-4PK", 2)])
    assert order is not None and sim.listings.quantity("WM-KETTLE-01") == 7
    po = order["purchaseOrderId"]
    partial = [CancelLine("1", "WM-KETTLE-01", 2)]
    await outbound.cancel_lines(po, partial, whole_order=False, reason="out of stock")
    await outbound.cancel_lines(po, partial, whole_order=False, reason="out of stock")
    assert [(c["line_id"], c["quantity"]) for c in sim.cancellations] == [("1", 2)]
    everything = [CancelLine("1", "WM-KETTLE-01", 3), CancelLine("2", "WM-MUG-4PK", 2)]
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
        await outbound.cancel_lines(po, [CancelLine("1", "WM-KETTLE-01", 1)], whole_order=False, reason="x")
    with pytest.raises(PermanentError, match="no line 7"):
        await outbound.cancel_lines(po, [CancelLine("7", "WM-KETTLE-01", 1)], whole_order=False, reason="x")
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
    from connectors.ratelimit import TokenBucket

    assert sim.base_url
    skus = [f"BULK-{i:02}" for i in range(25)]
    sim.set_config({"extra_skus": skus, "inventory_rate_per_s": 200, "inventory_burst": 5})
    client = outbound_for(sim.base_url, feed_budget=TokenBucket(1 / 3600, 1),
                          inventory_budget=TokenBucket(150, 5))
    try:
        first = await client.push_inventory([QuantityUpdate(s, 1) for s in skus])
        second = await client.push_inventory([QuantityUpdate(s, 2) for s in skus])
    finally:
        await client.close()
    assert first.mechanism == "inventory-feed" and second.mechanism == "inventory"
    assert sorted(second.applied) == skus and all(sim.listings.quantity(s) == 2 for s in skus)
    assert sim.stats().get("throttled_429", 0) == 0
