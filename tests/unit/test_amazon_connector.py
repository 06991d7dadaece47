"""AmazonOrdersClient against the real Amazon simulator over HTTP: pages, items and error mapping."""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

import retail_sync.connectors.amazon.client
from retail_sync.connectors.amazon.client import (
    AmazonOrdersClient,
    OrdersPage,
    amazon_time,
    error_for_status,
    orders_query,
)
from retail_sync.connectors.amazon.mapper import map_order
from retail_sync.connectors.errors import DecodeError, PermanentError, RateLimitedError, RetryableError
from retail_sync.simulators.amazon.simulator import AmazonSimConfig, AmazonSimulator

TOKEN = "Atza|connector-test"  # noqa: S105
MARKET = ["ATVPDKIKX0DER"]
T0 = datetime(2026, 3, 2, 9, 30, tzinfo=UTC)
SINCE = "2026-03-01T00:00:00Z"


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def make_sim(clock: Clock) -> AsyncIterator[Callable[..., Any]]:
    started: list[AmazonSimulator] = []

    async def make(**config: Any) -> AmazonSimulator:
        config.setdefault("time_scale", 1000)
        sim = AmazonSimulator(AmazonSimConfig(access_token=TOKEN, seed=3, **config), clock=clock)
        await sim.start()
        started.append(sim)
        return sim

    yield make
    for sim in started:
        await sim.stop()


@pytest.fixture
async def sim(make_sim: Callable[..., Any]) -> AmazonSimulator:
    return await make_sim()


@pytest.fixture
async def client_for() -> AsyncIterator[Callable[..., AmazonOrdersClient]]:
    made: list[AmazonOrdersClient] = []

    def make(sim: AmazonSimulator, token: str = TOKEN, timeout_s: float = 2.0) -> AmazonOrdersClient:
        assert sim.base_url
        made.append(AmazonOrdersClient(sim.base_url, token, timeout_s=timeout_s))
        return made[-1]

    yield make
    for client in made:
        await client.close()


@pytest.fixture
def client(sim: AmazonSimulator, client_for: Callable[..., AmazonOrdersClient]) -> AmazonOrdersClient:
    return client_for(sim)


# --- reading orders ----------------------------------------------------------------------------


async def test_get_orders_returns_a_page(sim, client) -> None:
    ids = sim.generate_orders(3)
    page = await client.get_orders(marketplace_ids=MARKET, last_updated_after=SINCE)
    assert isinstance(page, OrdersPage)
    assert sorted(o["AmazonOrderId"] for o in page.orders) == sorted(ids)
    assert page.next_token is None and page.last_updated_before == "2026-03-02T09:30:00Z"
    assert client.rate_limits == {"getOrders": pytest.approx(16.7)}  # 0.0167/s x time_scale 1000


async def test_iter_orders_since_walks_every_page_once(sim, client) -> None:
    ids = sim.generate_orders(11)
    pages = [
        p
        async for p in client.iter_orders_since(
            marketplace_ids=MARKET, last_updated_after=T0 - timedelta(days=1), max_results=4
        )
    ]
    assert [len(p.orders) for p in pages] == [4, 4, 3]
    assert [p.next_token is None for p in pages] == [False, False, True]
    seen = [o["AmazonOrderId"] for p in pages for o in p.orders]
    assert sorted(seen) == sorted(ids) and len(set(seen)) == 11


async def test_the_cursor_finds_updates_and_new_orders(sim, client, clock) -> None:
    first = sim.generate_orders(3)
    page = await client.get_orders(marketplace_ids=MARKET, created_after=SINCE)
    assert page.created_before == "2026-03-02T09:30:00Z" and page.last_updated_before is None
    cursor = (await client.get_orders(marketplace_ids=MARKET, last_updated_after=SINCE)).last_updated_before
    clock.now += timedelta(minutes=5)
    sim.update_order(first[1], status="Shipped")
    new = sim.add_order()
    later = await client.get_orders(marketplace_ids=MARKET, last_updated_after=cursor)
    statuses = {o["AmazonOrderId"]: o["OrderStatus"] for o in later.orders}
    # both bounds are inclusive: orders last updated exactly at the cursor come again (dedupe absorbs it)
    assert statuses == {first[0]: "Unshipped", first[1]: "Shipped", first[2]: "Unshipped", new: "Unshipped"}
    clock.now += timedelta(minutes=5)
    again = await client.get_orders(marketplace_ids=MARKET, last_updated_after=later.last_updated_before)
    assert {o["AmazonOrderId"] for o in again.orders} == {first[1], new}  # only the boundary second


async def test_get_order_items_follows_next_token(make_sim, client_for) -> None:
    sim = await make_sim(items_page_size=2)
    lines = [{"sku": f"SKU-{i}", "quantity": 1, "unit_price": "5.00"} for i in range(5)]
    order_id = sim.add_order(lines=lines)
    items = await client_for(sim).get_order_items(order_id)
    assert [i["SellerSKU"] for i in items] == [f"SKU-{i}" for i in range(5)]
    assert sim.stats()["200 getOrderItems"] == 3


async def test_orders_from_the_client_map_to_canonical_orders(sim, client) -> None:
    sim.generate_orders(4)
    page = await client.get_orders(marketplace_ids=MARKET, last_updated_after=SINCE)
    for raw in page.orders:
        order = map_order(raw, await client.get_order_items(raw["AmazonOrderId"]))
        assert order.order_key == f"amazon:{raw['AmazonOrderId']}"
        assert order.total.amount == order.subtotal.amount + order.shipping.amount + order.tax_total.amount


async def test_the_session_is_lazy_and_reopens_after_close(sim, client) -> None:
    assert client._session is None
    await client.get_orders(marketplace_ids=MARKET, last_updated_after=SINCE)
    await client.close()
    assert client._session is None
    await client.get_orders(marketplace_ids=MARKET, last_updated_after=SINCE)


def test_the_connector_does_not_know_about_the_simulator() -> None:
    assert "/_sim" not in inspect.getsource(retail_sync.connectors.amazon.client)


# --- errors --------------------------------------------------------------------------------------


async def test_wrong_token_is_permanent_unauthorized(sim, client_for) -> None:
    with pytest.raises(PermanentError) as info:
        await client_for(sim, token="Atza|expired").get_orders(
            marketplace_ids=MARKET, last_updated_after=SINCE
        )
    assert info.value.status == 403 and "Unauthorized" in str(info.value)
    assert "x-amzn-RequestId" in str(info.value)


async def test_invalid_input_is_permanent_with_amazons_reason(client) -> None:
    with pytest.raises(PermanentError) as info:
        await client.get_orders(marketplace_ids=MARKET, created_after="last tuesday")
    assert info.value.status == 400
    assert "InvalidInput: Invalid Input (CreatedAfter is not an ISO 8601 date" in str(info.value)


async def test_unknown_order_is_permanent_404(client) -> None:
    with pytest.raises(PermanentError) as info:
        await client.get_order_items("111-0000000-0000000")
    assert info.value.status == 404 and "NotFound" in str(info.value)


async def test_429_is_rate_limited_with_retry_after_from_the_rate_header(make_sim, client_for) -> None:
    sim = await make_sim(time_scale=1, rate_overrides={"getOrders": {"rate": 0.5, "burst": 1}})
    client = client_for(sim)
    await client.get_orders(marketplace_ids=MARKET, last_updated_after=SINCE)
    with pytest.raises(RateLimitedError) as info:
        await client.get_orders(marketplace_ids=MARKET, last_updated_after=SINCE)
    assert info.value.status == 429 and info.value.retry_after == pytest.approx(2.0)
    assert "QuotaExceeded" in str(info.value) and client.rate_limits["getOrders"] == 0.5
    assert sim.stats()["throttled"] == 1


async def test_5xx_is_retryable_not_rate_limited(sim, client) -> None:
    sim.configure({"fail_next": 1, "fail_status": 500})
    with pytest.raises(RetryableError) as info:
        await client.get_orders(marketplace_ids=MARKET, last_updated_after=SINCE)
    assert not isinstance(info.value, RateLimitedError) and info.value.status == 500
    assert "InternalFailure" in str(info.value)
    await client.get_orders(marketplace_ids=MARKET, last_updated_after=SINCE)  # recovered


async def test_timeout_is_retryable(make_sim, client_for) -> None:
    sim = await make_sim(latency_ms=500)
    with pytest.raises(RetryableError, match="timed out"):
        await client_for(sim, timeout_s=0.1).get_orders(marketplace_ids=MARKET, last_updated_after=SINCE)


async def test_connection_refused_is_retryable(make_sim, client_for) -> None:
    sim = await make_sim()
    client = client_for(sim)
    await sim.stop()
    with pytest.raises(RetryableError):
        await client.get_orders(marketplace_ids=MARKET, last_updated_after=SINCE)


def test_error_mapping_without_a_rate_header() -> None:
    err = error_for_status(429, '{"errors": []}', {"Retry-After": "3"}, "getOrders")
    assert isinstance(err, RateLimitedError) and err.retry_after == 3.0
    err = error_for_status(429, "", {}, "getOrders")
    assert isinstance(err, RateLimitedError) and err.retry_after is None
    err = error_for_status(503, "<html>busy</html>", {}, "getOrders")
    assert type(err) is RetryableError and "<html>busy</html>" in str(err)


def test_a_200_without_payload_is_a_decode_error() -> None:
    with pytest.raises(DecodeError):
        retail_sync.connectors.amazon.client.payload_of('{"errors": []}', "getOrders")
    with pytest.raises(DecodeError):
        retail_sync.connectors.amazon.client.payload_of("<html>", "getOrders")


# --- query building ------------------------------------------------------------------------------


def test_orders_query_needs_exactly_one_after_date() -> None:
    with pytest.raises(ValueError, match="exactly one"):
        orders_query(MARKET, None, None, None, 100)
    with pytest.raises(ValueError, match="exactly one"):
        orders_query(MARKET, SINCE, SINCE, None, 100)
    with pytest.raises(ValueError, match="1-100"):
        orders_query(MARKET, SINCE, None, None, 101)
    assert orders_query(["A", "B"], None, None, "tok", 10) == {
        "MarketplaceIds": "A,B",
        "MaxResultsPerPage": "10",
        "NextToken": "tok",
    }


def test_amazon_time_is_utc_iso8601() -> None:
    eastern = timezone(timedelta(hours=-5))
    assert amazon_time(datetime(2026, 3, 2, 4, 30, tzinfo=eastern)) == "2026-03-02T09:30:00Z"
    assert amazon_time(datetime(2026, 3, 2, 9, 30, 0, 250000, tzinfo=UTC)) == "2026-03-02T09:30:00.250Z"
    with pytest.raises(ValueError, match="naive"):
        amazon_time(datetime(2026, 3, 2, 9, 30))  # noqa: DTZ001


def test_poll_mark_skips_orders_read_at_the_same_timestamp() -> None:
    from retail_sync.connectors.amazon.client import PollMark

    mark = PollMark("2026-11-27T10:00:00Z")
    same = {"AmazonOrderId": "A", "LastUpdateDate": "2026-11-27T10:00:00Z"}
    later = {"AmazonOrderId": "B", "LastUpdateDate": "2026-11-27T10:00:05Z"}
    assert not mark.covers(same)
    mark.advance(same)
    assert mark.covers(same) and not mark.covers(later)
    mark.advance(later)
    assert mark.after == "2026-11-27T10:00:05Z" and mark.done == ["B"]
    again = PollMark.load(mark.dump())
    assert again == mark and again.covers(later)
    assert PollMark.load("2026-11-27T10:00:00Z") == PollMark("2026-11-27T10:00:00Z")
    assert PollMark.load(None) is None


async def test_a_poll_does_not_read_the_boundary_second_again(sim, client, clock) -> None:
    """Both bounds are inclusive: orders updated at the cursor's second come back in the next
    getOrders, and their items are not fetched again (getOrderItems is 0.5 calls/s)."""
    from retail_sync.connectors.amazon.client import AmazonSource

    source = AmazonSource(client, marketplace_ids=MARKET, lookback=timedelta(days=400),
                          max_per_poll=100)
    ids = sim.generate_orders(3)
    first = await source.poll(None)
    assert sorted(o.marketplace_order_id for o in first.orders) == sorted(ids)
    again = await source.poll(first.cursor)  # nothing changed, the same second
    assert again.orders == [] and sim.stats()["200 getOrderItems"] == 3
    clock.now += timedelta(seconds=1)
    sim.update_order(ids[0], status="Shipped")
    later = await source.poll(again.cursor)
    assert [o.marketplace_order_id for o in later.orders] == [ids[0]]  # an update still comes


async def test_a_429_on_order_items_keeps_what_was_read_and_the_listing(make_sim, client_for, clock) -> None:
    """getOrderItems allows 2 calls, then one every 0.5 s; 6 orders listed by one getOrders. A
    429 part-way keeps the orders already read (returned, cursor past them) and the rest of the
    listing: the next polls go on with getOrderItems only. Every order's items are read once and
    getOrders is called once (it allows one call a minute; before, each pass listed again, and a
    429 on a pass's first order raised and lost the listing)."""
    from retail_sync.connectors.amazon.client import AmazonSource

    sim = await make_sim(time_scale=1, rate_overrides={"getOrderItems": {"rate": 2.0, "burst": 2}})
    source = AmazonSource(client_for(sim), marketplace_ids=MARKET, lookback=timedelta(days=400),
                          max_per_poll=100)
    ids = []
    for _ in range(6):  # one order a second: each its own LastUpdateDate
        ids += sim.generate_orders(1)
        clock.now += timedelta(seconds=1)
    got: list[str] = []
    cursor, passes, paused = None, 0, 0
    while len(got) < len(ids) and passes < 20:
        result = await source.poll(cursor)
        got += [o.marketplace_order_id for o in result.orders]
        paused += result.pause_s is not None
        cursor, passes = result.cursor, passes + 1
    stats = sim.stats()
    assert sorted(got) == sorted(ids) and len(got) == len(set(got))
    assert paused >= 1 and stats["throttled"] >= 1  # it did hit the 429
    assert stats["200 getOrderItems"] == len(ids)  # nothing read twice
    assert stats["200 getOrders"] == 1  # the listing was kept
    final = await source.poll(cursor)  # a new pass from Amazon's bound: nothing new
    assert final.orders == [] and sim.stats()["200 getOrderItems"] == len(ids)
