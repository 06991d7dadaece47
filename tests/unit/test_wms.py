"""The WMS simulator and WmsClient against it, over real HTTP on loopback."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from datetime import datetime

import aiohttp
import pytest
from pydantic import AnyHttpUrl

from retail_sync.connectors.contracts import WmsEvent
from retail_sync.connectors.errors import DecodeError, PermanentError, RateLimitedError, RetryableError
from retail_sync.connectors.wms.client import WmsClient, canonical_carrier, wms_event
from retail_sync.settings import Settings
from retail_sync.simulators.wms.simulator import CARRIERS, WmsSimConfig, WmsSimulator
from retail_sync.streams.models import LineUnits

LINES = [LineUnits(line_id="1", sku="SKU-A", quantity=3), LineUnits(line_id="2", sku="SKU-B", quantity=1)]
TRACKING = {
    "UPS": r"1Z[0-9A-Z]{6}03\d{8}",
    "USPS": r"9400\d{18}",
    "FEDEX": r"\d{12}",
    "DHL": r"\d{10}",
}


@pytest.fixture
async def sim() -> AsyncIterator[WmsSimulator]:
    simulator = WmsSimulator(WmsSimConfig(seed=7, ship_delay_ms=40, return_delay_ms=40))
    await simulator.start("127.0.0.1", 0)
    yield simulator
    await simulator.stop()


@pytest.fixture
async def wms(sim: WmsSimulator) -> AsyncIterator[WmsClient]:
    assert sim.base_url
    client = WmsClient(sim.base_url, "demo-wms-key", timeout_s=5)
    yield client
    await client.close()


async def create(wms: WmsClient, key: str, lines: list[LineUnits] = LINES) -> str:
    return await wms.create_fulfilment_order(key, f"SO-{key}", lines, {"name": "Ann", "country": "US"})


async def events_until(wms: WmsClient, count: int, cursor: str | None = None) -> list[WmsEvent]:
    """Poll until ``count`` events have come (fails after 2 s)."""
    events: list[WmsEvent] = []
    for _ in range(100):
        result = await wms.poll(cursor)
        events.extend(result.events)
        cursor = result.cursor
        if len(events) >= count:
            return events
        await asyncio.sleep(0.02)
    raise AssertionError(f"only {len(events)} of {count} events came")


def units(events: list[WmsEvent]) -> dict[str, int]:
    total: dict[str, int] = {}
    for event in events:
        assert event.shipment is not None
        for line in event.shipment.lines:
            total[line.line_id] = total.get(line.line_id, 0) + line.quantity
    return total


# --- fulfilment orders and shipments ----------------------------------------------------------


async def test_create_is_idempotent_on_the_reference(sim: WmsSimulator, wms: WmsClient) -> None:
    sim.set_config({"hold": True})
    first = await create(wms, "shop:1")
    assert first == "FO-000001"
    assert await create(wms, "shop:1") == first
    assert sim.stats()["orders_created"] == 1 and sim.stats()["idempotent_replays"] == 1
    [order] = sim.orders
    assert order["status"] == "released" and order["erp_sales_order"] == "SO-shop:1"
    assert order["ship_to"] == {"name": "Ann", "country": "US"}


async def test_an_order_ships_after_the_delay_with_carrier_and_tracking(
    sim: WmsSimulator, wms: WmsClient
) -> None:
    sim.set_config({"ship_delay_ms": 150})
    await create(wms, "shop:2")
    assert (await wms.poll(None)).events == []
    [event] = await events_until(wms, 1)
    shipment = event.shipment
    assert event.kind == "shipment" and shipment is not None and event.order_key == "shop:2"
    assert shipment.shipment_id == "SHP-000001" and list(shipment.lines) == LINES
    assert shipment.carrier in CARRIERS
    assert re.fullmatch(TRACKING[shipment.carrier], shipment.tracking_number)
    assert datetime.fromisoformat(shipment.shipped_at).utcoffset() is not None
    assert event.at == shipment.shipped_at
    assert sim.orders[0]["status"] == "shipped"


async def test_partial_shipment_then_the_rest(sim: WmsSimulator, wms: WmsClient) -> None:
    sim.set_config({"hold": True})
    await create(wms, "shop:3")
    first = sim.ship_now("shop:3", [{"line_id": "1", "quantity": 2}])
    assert first is not None and first["lines"] == [{"line_id": "1", "sku": "SKU-A", "quantity": 2}]
    assert sim.orders[0]["status"] == "partially_shipped"
    assert await wms.cancel_fulfilment_order("shop:3") is False
    with pytest.raises(ValueError, match="not those units"):
        sim.ship_now("shop:3", [{"line_id": "1", "quantity": 2}])
    async with aiohttp.ClientSession() as http:  # the rest, through the test-only endpoint
        async with http.post(f"{sim.base_url}/_sim/ship/shop:3") as resp:
            assert resp.status == 200
    events = await events_until(wms, 2)
    assert [len(e.shipment.lines) for e in events if e.shipment] == [1, 2]
    assert units(events) == {"1": 3, "2": 1}
    assert sim.orders[0]["status"] == "shipped" and sim.ship_now("shop:3") is None
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{sim.base_url}/_sim/orders") as resp:
            [order] = await resp.json()
        async with http.get(f"{sim.base_url}/_sim/stats") as resp:
            stats = await resp.json()
    assert order["status"] == "shipped" and len(order["shipments"]) == 2
    assert stats["shipments"] == 2 and stats["units_shipped"] == 4 and stats["cancels_refused"] == 1


async def test_partial_rate_ships_in_two_shipments(sim: WmsSimulator, wms: WmsClient) -> None:
    sim.set_config({"partial_rate": 1.0, "ship_delay_ms": 10})
    await create(wms, "shop:4", [LineUnits(line_id="1", sku="SKU-A", quantity=5)])
    events = await events_until(wms, 2)
    assert len(events) == 2 and units(events) == {"1": 5}
    assert len({e.shipment.shipment_id for e in events if e.shipment}) == 2


async def test_hold_stops_shipping_until_released(sim: WmsSimulator, wms: WmsClient) -> None:
    sim.set_config({"hold": True, "ship_delay_ms": 10})
    await create(wms, "shop:5")
    await asyncio.sleep(0.1)
    assert (await wms.poll(None)).events == [] and sim.orders[0]["status"] == "released"
    async with aiohttp.ClientSession() as http:
        async with http.put(f"{sim.base_url}/_sim/config", json={"hold": False}) as resp:
            assert resp.status == 200 and (await resp.json())["hold"] is False
        async with http.put(f"{sim.base_url}/_sim/config", json={"nope": 1}) as resp:
            assert resp.status == 400
    assert len(await events_until(wms, 1)) == 1


# --- cancellations and returns ----------------------------------------------------------------


async def test_cancel_before_shipment_stops_it(sim: WmsSimulator, wms: WmsClient) -> None:
    sim.set_config({"ship_delay_ms": 60})
    await create(wms, "shop:6")
    assert await wms.cancel_fulfilment_order("shop:6") is True
    assert await wms.cancel_fulfilment_order("shop:6") is True  # idempotent
    assert await wms.cancel_fulfilment_order("never-sent") is True  # nothing there to ship
    await asyncio.sleep(0.15)
    assert (await wms.poll(None)).events == []
    assert sim.orders[0]["status"] == "cancelled" and sim.stats()["cancellations"] == 1


async def test_a_backorder_release_is_its_own_fulfilment_order_of_the_same_order(
        sim: WmsSimulator, wms: WmsClient) -> None:
    await create(wms, "shop:8")
    later = await wms.create_fulfilment_order("shop:8", "SO-shop:8", [LineUnits(line_id="2", sku="SKU-B",
                                                                                quantity=1)],
                                              None, "shop:8#bo1")
    assert later != sim.orders[0]["id"]
    assert [o["reference"] for o in sim.orders] == ["shop:8", "shop:8#bo1"]
    events = await events_until(wms, 2)
    assert {e.order_key for e in events} == {"shop:8"}  # both map back to the order
    by_lines = {tuple(ln.line_id for ln in e.shipment.lines) for e in events if e.shipment}
    assert ("2",) in by_lines
    sim.set_config({"ship_delay_ms": 5000})
    await wms.create_fulfilment_order("shop:8", "SO-shop:8", [LineUnits(line_id="1", sku="SKU-A",
                                                                        quantity=1)],
                                      None, "shop:8#bo2")
    assert await wms.cancel_fulfilment_order("shop:8#bo2") is True  # '#' travels in the path
    assert sim.orders[2]["status"] == "cancelled" and sim.orders[0]["status"] == "shipped"


async def test_cancel_after_shipment_is_refused(sim: WmsSimulator, wms: WmsClient) -> None:
    await create(wms, "shop:7")
    await events_until(wms, 1)
    assert await wms.cancel_fulfilment_order("shop:7") is False
    assert sim.orders[0]["status"] == "shipped"


async def test_an_announced_return_is_received(sim: WmsSimulator, wms: WmsClient) -> None:
    back = [LineUnits(line_id="1", sku="SKU-A", quantity=2)]
    await wms.expect_return("shop:8", "R-1", back)
    await wms.expect_return("shop:8", "R-1", back)  # idempotent
    assert sim.stats()["returns_expected"] == 1
    [event] = await events_until(wms, 1)
    assert event.kind == "return_received" and event.return_id == "R-1"
    assert event.order_key == "shop:8" and list(event.lines) == back and event.at


# --- the event feed ---------------------------------------------------------------------------


async def test_feed_pages_and_resumes_without_skips_or_repeats(sim: WmsSimulator) -> None:
    sim.set_config({"hold": True})
    assert sim.base_url
    client = WmsClient(sim.base_url, "demo-wms-key", page_size=3, max_pages=2)
    try:
        for n in range(8):
            await create(client, f"o:{n}", [LineUnits(line_id="1", sku="S", quantity=1)])
            sim.ship_now(f"o:{n}")
        first = await client.poll(None)  # two pages of three: bounded
        assert [e.order_key for e in first.events] == [f"o:{n}" for n in range(6)]
        rest = await client.poll(first.cursor)
        assert [e.order_key for e in rest.events] == ["o:6", "o:7"]
        idle = await client.poll(rest.cursor)
        assert idle.events == [] and idle.cursor == rest.cursor
        await create(client, "o:8", [LineUnits(line_id="1", sku="S", quantity=1)])
        sim.ship_now("o:8")
        later = await client.poll(idle.cursor)
        assert [e.order_key for e in later.events] == ["o:8"]
        again = await client.poll(first.cursor)  # an older cursor replays, in order
        assert [e.order_key for e in again.events] == ["o:6", "o:7", "o:8"]
    finally:
        await client.close()


async def test_unknown_event_kinds_are_skipped_and_bad_ones_fail() -> None:
    assert wms_event({"kind": "inventory_adjusted", "data": {}}) is None
    with pytest.raises(DecodeError):
        wms_event({"kind": "shipment", "data": {"id": "SHP-1", "reference": "k", "lines": "x"}})
    with pytest.raises(DecodeError):
        wms_event(["not", "an", "event"])
    assert canonical_carrier("FedEx") == "FEDEX" and canonical_carrier("Royal Mail") == "OTHER"


# --- errors -----------------------------------------------------------------------------------


async def test_a_wrong_api_key_is_permanent(sim: WmsSimulator) -> None:
    assert sim.base_url
    client = WmsClient(sim.base_url, "wrong")
    try:
        with pytest.raises(PermanentError) as info:
            await client.poll(None)
        assert info.value.status == 401
    finally:
        await client.close()


async def test_validation_errors_are_permanent(sim: WmsSimulator, wms: WmsClient) -> None:
    with pytest.raises(PermanentError) as info:
        await create(wms, "shop:9", [])
    assert info.value.status == 422 and "lines" in (info.value.body or "")


@pytest.mark.parametrize(("status", "error"), [(503, RetryableError), (429, RateLimitedError)])
async def test_injected_faults_are_retryable(
    sim: WmsSimulator, wms: WmsClient, status: int, error: type[RetryableError]
) -> None:
    sim.set_config({"error_rate": 1.0, "error_status": status})
    with pytest.raises(error) as info:
        await create(wms, "shop:10")
    assert info.value.status == status
    assert sim.orders == []
    if status == 429:
        assert info.value.retry_after == 1.0


async def test_connection_refused_is_retryable(unused_tcp_port: int) -> None:
    client = WmsClient(f"http://127.0.0.1:{unused_tcp_port}", "k")
    try:
        with pytest.raises(RetryableError):
            await client.poll(None)
    finally:
        await client.close()


async def test_from_settings(sim: WmsSimulator) -> None:
    assert WmsClient.from_settings(Settings()) is None  # type: ignore[call-arg]
    settings = Settings(wms_base_url=AnyHttpUrl(str(sim.base_url)), wms_timeout_s=3)  # type: ignore[call-arg]
    client = WmsClient.from_settings(settings)
    assert client is not None
    try:
        assert await create(client, "shop:11") == "FO-000001"
    finally:
        await client.close()
