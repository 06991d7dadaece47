"""WalmartOrdersClient against the real Walmart simulator over HTTP: auth, paging, ack, errors."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta, timezone

import pytest
from aiohttp import web

from retail_sync.connectors.errors import DecodeError, PermanentError, RateLimitedError, RetryableError
from retail_sync.connectors.walmart.client import (
    WalmartOrdersClient,
    error_for_status,
    retry_after_from,
    walmart_date,
)
from retail_sync.simulators.walmart.simulator import WalmartSimConfig, WalmartSimulator

BASE = datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC)
SINCE = datetime(2023, 11, 1, tzinfo=UTC)


class FakeClock:
    def __init__(self) -> None:
        self.now = 50.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def sim() -> AsyncIterator[WalmartSimulator]:
    config = WalmartSimConfig(seed=3, base_time_ms=int(BASE.timestamp() * 1000), acknowledge_burst=100)
    simulator = WalmartSimulator(config)
    await simulator.start("127.0.0.1", 0)
    yield simulator
    await simulator.stop()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def client(sim: WalmartSimulator, clock: FakeClock) -> AsyncIterator[WalmartOrdersClient]:
    assert sim.base_url
    walmart = WalmartOrdersClient(
        sim.base_url, "demo-client-id", "demo-client-secret", timeout_s=2.0, clock=clock
    )
    yield walmart
    await walmart.close()


async def collect(client: WalmartOrdersClient, limit: int = 100) -> list[str]:
    return [o["purchaseOrderId"] async for o in client.released_orders(SINCE, limit=limit)]


# --- auth --------------------------------------------------------------------------------------


async def test_token_is_cached_and_refreshed_a_minute_before_expiry(
    sim: WalmartSimulator, client: WalmartOrdersClient, clock: FakeClock
) -> None:
    orders = sim.generate_orders(2)
    for order in orders:
        assert (await client.get_order(order["purchaseOrderId"]))["purchaseOrderId"] == order[
            "purchaseOrderId"
        ]
    assert client.tokens_fetched == 1 and sim.stats()["tokens_issued"] == 1
    clock.now += 900 - 61
    await client.get_order(orders[0]["purchaseOrderId"])
    assert client.tokens_fetched == 1
    clock.now += 2  # within the last minute of the 15-minute token
    await client.get_order(orders[0]["purchaseOrderId"])
    assert client.tokens_fetched == 2


async def test_401_fetches_a_new_token_once(sim: WalmartSimulator, client: WalmartOrdersClient) -> None:
    po = sim.generate_orders(1)[0]["purchaseOrderId"]
    await client.get_order(po)
    sim.expire_tokens()
    assert (await client.get_order(po))["purchaseOrderId"] == po
    assert client.tokens_fetched == 2 and sim.stats()["auth_failures"] == 1


async def test_wrong_credentials_are_permanent(sim: WalmartSimulator) -> None:
    assert sim.base_url
    walmart = WalmartOrdersClient(sim.base_url, "demo-client-id", "wrong", timeout_s=2.0)
    try:
        with pytest.raises(PermanentError, match="UNAUTHORIZED.GMP_GATEWAY_API") as caught:
            await walmart.get_order("1")
        assert caught.value.status == 401
    finally:
        await walmart.close()


async def test_wrong_service_name_header_is_still_sent(sim: WalmartSimulator) -> None:
    assert sim.base_url
    walmart = WalmartOrdersClient(sim.base_url, "demo-client-id", "demo-client-secret", svc_name="")
    try:
        with pytest.raises(PermanentError, match="INVALID_REQUEST_HEADER.GMP_GATEWAY_API: WM_SVC.NAME"):
            await walmart.get_order("1")
    finally:
        await walmart.close()


# --- orders ------------------------------------------------------------------------------------


async def test_released_orders_follow_next_cursor(sim: WalmartSimulator, client: WalmartOrdersClient) -> None:
    created = [o["purchaseOrderId"] for o in sim.generate_orders(25)]
    assert await collect(client, limit=10) == created
    assert sim.stats()["requests_released"] == 3


async def test_released_orders_acknowledged_while_paging_arrive_once(
    sim: WalmartSimulator, client: WalmartOrdersClient
) -> None:
    created = [o["purchaseOrderId"] for o in sim.generate_orders(25)]
    seen = []
    async for order in client.released_orders(SINCE, limit=7):
        acknowledged = await client.acknowledge(order["purchaseOrderId"])
        statuses = {
            s["status"]
            for line in acknowledged["orderLines"]["orderLine"]
            for s in line["orderLineStatuses"]["orderLineStatus"]
        }
        assert statuses == {"Acknowledged"}
        seen.append(order["purchaseOrderId"])
    assert seen == created
    assert await collect(client) == []  # Walmart's 404 CONTENT_NOT_FOUND for "no orders" is an empty list


async def test_created_start_is_sent_as_utc(sim: WalmartSimulator, client: WalmartOrdersClient) -> None:
    created = [o["purchaseOrderId"] for o in sim.generate_orders(5)]  # one a minute
    local = (BASE + timedelta(minutes=3)).astimezone(timezone(timedelta(hours=-6)))
    assert walmart_date(local) == "2023-11-14T22:16:20.000Z"
    assert [o["purchaseOrderId"] async for o in client.released_orders(local)] == created[3:]
    with pytest.raises(ValueError, match="timezone-aware"):
        walmart_date(datetime(2023, 1, 1))  # noqa: DTZ001 - the point of the test


async def test_orders_modified_since_sees_status_updates(
    sim: WalmartSimulator, client: WalmartOrdersClient
) -> None:
    orders = sim.generate_orders(3)
    await asyncio.sleep(0.002)  # Walmart dates have millisecond resolution
    mark = datetime.now(UTC)
    await asyncio.sleep(0.002)
    sim.update_line_status(orders[2]["purchaseOrderId"], "1", "Shipped")
    updated = [o async for o in client.orders_modified_since(mark, created_start=SINCE)]
    assert [o async for o in client.orders_modified_since(mark)] == []  # created > 7 days ago
    assert [o["purchaseOrderId"] for o in updated] == [orders[2]["purchaseOrderId"]]


async def test_unknown_order_is_permanent_with_walmart_code(client: WalmartOrdersClient) -> None:
    with pytest.raises(PermanentError, match="CONTENT_NOT_FOUND.GMP_ORDER_API") as caught:
        await client.acknowledge("123")
    assert caught.value.status == 404


async def test_bad_request_is_permanent(client: WalmartOrdersClient) -> None:
    with pytest.raises(PermanentError, match="INVALID_REQUEST_PARAM.GMP_ORDER_API") as caught:
        await collect(client, limit=500)
    assert caught.value.status == 400


# --- throttling and transport errors -------------------------------------------------------


async def test_429_is_rate_limited_with_retry_after_from_replenish_time(
    sim: WalmartSimulator, client: WalmartOrdersClient, clock: FakeClock
) -> None:
    """Another app of the seller spent the budget: Walmart's 429 carries the replenish time,
    which pauses our budget too."""
    sim.generate_orders(1)
    sim.set_config({"released_rate_per_s": 0.5, "released_burst": 1})
    assert sim.base_url
    other = WalmartOrdersClient(sim.base_url, "demo-client-id", "demo-client-secret", timeout_s=2.0)
    try:
        assert len(await collect(other)) == 1
    finally:
        await other.close()
    with pytest.raises(RateLimitedError, match="REQUEST_THRESHOLD_VIOLATED") as caught:
        await collect(client)
    assert caught.value.status == 429
    assert caught.value.retry_after is not None and 1.5 < caught.value.retry_after <= 2.05
    assert sim.stats()["throttled_429"] == 1
    assert client.budgets.stats()["released"]["throttled"] == 1
    assert client.budgets.limiter("released").try_acquire() > 1.4  # we wait the replenish out


async def test_an_empty_token_count_waits_for_the_replenish_instead_of_a_429(
    sim: WalmartSimulator, client: WalmartOrdersClient
) -> None:
    sim.generate_orders(1)
    sim.set_config({"released_rate_per_s": 5, "released_burst": 1})
    assert len(await collect(client)) == 1  # the answer says x-current-token-count: 0
    started = time.monotonic()
    assert len(await collect(client)) == 1
    assert time.monotonic() - started >= 0.1  # waited for Walmart's next token (0.2 s)
    assert sim.stats().get("throttled_429", 0) == 0


async def test_connection_refused_is_retryable(sim: WalmartSimulator) -> None:
    assert sim.base_url
    url = sim.base_url
    await sim.stop()
    walmart = WalmartOrdersClient(url, "demo-client-id", "demo-client-secret", timeout_s=1.0)
    try:
        with pytest.raises(RetryableError):
            await walmart.get_order("1")
    finally:
        await walmart.close()


@pytest.fixture
async def odd_server() -> AsyncIterator[str]:
    """A real server that answers the token call, then 503, a slow answer, or a non-JSON 200."""

    async def token(_request: web.Request) -> web.Response:
        return web.json_response({"access_token": "t", "token_type": "Bearer", "expires_in": 900})

    async def unavailable(_request: web.Request) -> web.Response:
        return web.json_response(
            {"errors": {"error": [{"code": "SYSTEM_ERROR.GMP_GATEWAY_API"}]}},
            status=503,
            headers={"Retry-After": "3"},
        )

    async def slow(_request: web.Request) -> web.Response:
        await asyncio.sleep(2)
        return web.json_response({})

    async def garbled(_request: web.Request) -> web.Response:
        return web.Response(text="<html>maintenance</html>")

    app = web.Application()
    app.router.add_post("/v3/token", token)
    app.router.add_get("/v3/orders/unavailable", unavailable)
    app.router.add_get("/v3/orders/slow", slow)
    app.router.add_get("/v3/orders/garbled", garbled)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    await runner.cleanup()


async def test_5xx_timeouts_and_garbage_map_to_the_hierarchy(odd_server: str) -> None:
    walmart = WalmartOrdersClient(odd_server, "id", "secret", timeout_s=0.3)
    try:
        with pytest.raises(RetryableError, match="SYSTEM_ERROR") as caught:
            await walmart.get_order("unavailable")
        assert caught.value.retry_after == 3 and not isinstance(caught.value, RateLimitedError)
        with pytest.raises(RetryableError, match="timed out"):
            await walmart.get_order("slow")
        with pytest.raises(DecodeError, match="not JSON"):
            await walmart.get_order("garbled")
    finally:
        await walmart.close()


def test_error_mapping_is_pure() -> None:
    now = time.time()
    headers = {"x-next-replenish-time": str(int((now + 1.5) * 1000))}
    assert retry_after_from(headers, now) == pytest.approx(1.5, abs=0.01)
    assert retry_after_from({"x-next-replenish-time": "1"}, now) == 0.0  # already past
    assert retry_after_from({}, now) is None
    assert isinstance(error_for_status(429, "", {}, "x", now), RateLimitedError)
    assert isinstance(error_for_status(502, "bad gateway", {}, "x", now), RetryableError)
    body = '{"errors": {"error": [{"code": "INVALID_REQUEST_CONTENT.GMP_ORDER_API", "description": "bad"}]}}'
    error = error_for_status(400, body, {}, "ack 1", now)
    assert isinstance(error, PermanentError)
    assert str(error) == "Walmart ack 1: HTTP 400 INVALID_REQUEST_CONTENT.GMP_ORDER_API: bad"


# --- WalmartSource: buyer cancellations through the modified-orders poll ------------------------


async def test_source_delivers_buyer_cancellations_from_the_modified_poll() -> None:
    from retail_sync.connectors.walmart.client import WalmartSource
    from retail_sync.connectors.walmart.mapper import map_order

    sim = WalmartSimulator(WalmartSimConfig(seed=4, acknowledge_burst=100))
    await sim.start("127.0.0.1", 0)
    assert sim.base_url
    client = WalmartOrdersClient(sim.base_url, "demo-client-id", "demo-client-secret", timeout_s=2.0)
    source = WalmartSource(client, lookback=timedelta(days=1), max_per_poll=50)
    try:
        sim.generate_orders(2)
        first = await source.poll(None)
        assert sorted(o.delivery_id.split("@")[1] for o in first.orders) == ["released", "released"]
        await source.after_persist(first.orders)
        assert first.cursor is not None and first.cursor.endswith("Z")
        po = first.orders[0].marketplace_order_id
        sim.cancel_by_buyer(po)
        second = await source.poll(first.cursor)
        kinds = [(o.marketplace_order_id, o.delivery_id.split("@")[1]) for o in second.orders]
        assert kinds == [(po, "cancelled")]
        assert map_order(json.loads(second.orders[0].body)).fulfillment_status == "cancelled"
        await source.after_persist(second.orders)  # not acknowledged again: nothing to acknowledge
        assert sim.stats()["acknowledged"] == 2
        again = await source.poll(first.cursor)  # a restart from the stored cursor repeats it
        assert [o.delivery_id for o in again.orders] == [o.delivery_id for o in second.orders]
        sim.book.modified_ms[po] -= 60_000  # changed long before the newest cursor
        assert (await source.poll(second.cursor)).orders == []
    finally:
        await source.close()
        await sim.stop()
