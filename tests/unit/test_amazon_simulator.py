"""The Amazon SP-API Orders v0 simulator, over HTTP, checked against the spec's own JSON schema."""

from __future__ import annotations

import asyncio
import copy
import json
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from jsonschema import Draft4Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT4

from simulators.amazon import AmazonSimConfig, AmazonSimulator, TokenBucket
from simulators.amazon_orders import ORDER_STATUSES

FIXTURES = Path(__file__).parent.parent / "fixtures"
SPEC_URI = "urn:amzn:orders-api-model:ordersV0"
TOKEN = "Atza|test-token"  # noqa: S105
MARKET = "ATVPDKIKX0DER"
T0 = datetime(2026, 3, 2, 9, 30, tzinfo=UTC)
JSON = dict[str, Any]


def _closed(schema: Any) -> Any:
    """The schema with ``additionalProperties: false`` wherever properties are listed.

    Swagger 2.0 leaves objects open, so a misspelt field would still validate; closing them makes
    the check catch any name the spec does not define.
    """
    if isinstance(schema, dict):
        closed = {k: _closed(v) for k, v in schema.items()}
        if "properties" in closed and "additionalProperties" not in closed:
            closed["additionalProperties"] = False
        return closed
    if isinstance(schema, list):
        return [_closed(v) for v in schema]
    return schema


def _validator(definition: str, *, closed: bool = True) -> Draft4Validator:
    spec = json.loads((FIXTURES / "amazon_orders_v0_definitions.json").read_text())
    spec = _closed(copy.deepcopy(spec)) if closed else spec
    registry = Registry().with_resource(SPEC_URI, Resource.from_contents(spec, default_specification=DRAFT4))
    return Draft4Validator({"$ref": f"{SPEC_URI}#/definitions/{definition}"}, registry=registry)


ORDERS_SCHEMA = _validator("GetOrdersResponse")
ITEMS_SCHEMA = _validator("GetOrderItemsResponse")


def assert_valid(validator: Draft4Validator, body: JSON) -> None:
    errors = [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(body)]
    assert not errors, errors[:5]


class Clock:
    def __init__(self, start: datetime = T0) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def sim_factory(clock: Clock) -> AsyncIterator[Callable[..., Any]]:
    started: list[AmazonSimulator] = []

    async def make(**config: Any) -> AmazonSimulator:
        sim = AmazonSimulator(AmazonSimConfig(access_token=TOKEN, seed=7, **config), clock=clock)
        await sim.start()
        started.append(sim)
        return sim

    yield make
    for sim in started:
        await sim.stop()


@pytest.fixture
async def sim(sim_factory: Callable[..., Any]) -> AmazonSimulator:
    return await sim_factory(time_scale=1000)


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def call(
    http: aiohttp.ClientSession, sim: AmazonSimulator, path: str, token: str | None = TOKEN, **params: Any
) -> tuple[int, JSON, Any]:
    headers = {"x-amz-access-token": token} if token is not None else {}
    async with http.get(f"{sim.base_url}{path}", params=params, headers=headers) as resp:
        return resp.status, await resp.json(), resp.headers


async def get_orders(
    http: aiohttp.ClientSession, sim: AmazonSimulator, **params: Any
) -> tuple[int, JSON, Any]:
    params.setdefault("MarketplaceIds", MARKET)
    if "NextToken" not in params and "CreatedAfter" not in params:
        params.setdefault("LastUpdatedAfter", "2026-01-01T00:00:00Z")
    return await call(http, sim, "/orders/v0/orders", **params)


async def all_pages(http: aiohttp.ClientSession, sim: AmazonSimulator, **params: Any) -> list[JSON]:
    pages, token = [], None
    while True:
        extra = {"NextToken": token} if token else params
        status, body, _ = await get_orders(http, sim, **extra)
        assert status == 200, body
        pages.append(body)
        token = body["payload"].get("NextToken")
        if not token:
            return pages


# --- the contract --------------------------------------------------------------------------


async def test_orders_and_items_validate_against_the_spec_schema(sim, http) -> None:
    for status in ORDER_STATUSES:
        sim.generate_orders(2, status)
    status, body, headers = await get_orders(http, sim, MaxResultsPerPage="5")
    assert status == 200
    assert_valid(ORDERS_SCHEMA, body)
    assert body["payload"]["NextToken"] and body["payload"]["LastUpdatedBefore"] == "2026-03-02T09:30:00Z"
    assert headers["x-amzn-RequestId"] and float(headers["x-amzn-RateLimit-Limit"]) > 0
    for order_id in sim.records:
        status, items, _ = await call(http, sim, f"/orders/v0/orders/{order_id}/orderItems")
        assert status == 200
        assert_valid(ITEMS_SCHEMA, items)
        assert items["payload"]["AmazonOrderId"] == order_id


def test_the_closed_schema_catches_a_misspelt_field() -> None:
    example = json.loads((FIXTURES / "amazon_order_example.json").read_text())
    good = {"payload": {"Orders": [example["order"]]}}
    assert_valid(ORDERS_SCHEMA, good)
    bad = {"payload": {"Orders": [{**example["order"], "OrderStatu": "Shipped"}]}}
    assert list(ORDERS_SCHEMA.iter_errors(bad))
    assert list(ORDERS_SCHEMA.iter_errors({"payload": {"Orders": [{**example["order"], "IsPrime": "no"}]}}))


async def test_orders_are_shaped_like_amazons(sim, http) -> None:
    order_id = sim.add_order(
        "Unshipped",
        lines=[
            {
                "sku": "SKU-1",
                "quantity": 2,
                "unit_price": "10.00",
                "tax": "1.60",
                "discount": "2.00",
                "shipping": "4.99",
            }
        ],
    )
    _, body, _ = await get_orders(http, sim)
    order = body["payload"]["Orders"][0]
    assert order["AmazonOrderId"] == order_id
    assert len(order_id) == 19 and [len(p) for p in order_id.split("-")] == [3, 7, 7]
    assert order["OrderTotal"] == {"CurrencyCode": "USD", "Amount": "24.59"}  # 20 + 1.60 + 4.99 - 2
    assert order["MarketplaceId"] == MARKET and order["SalesChannel"] == "Amazon.com"
    assert set(order["ShippingAddress"]) == {"City", "StateOrRegion", "PostalCode", "CountryCode"}
    assert (order["NumberOfItemsShipped"], order["NumberOfItemsUnshipped"]) == (0, 2)
    _, items, _ = await call(http, sim, f"/orders/v0/orders/{order_id}/orderItems")
    item = items["payload"]["OrderItems"][0]
    assert item["ItemPrice"]["Amount"] == "20.00" and item["QuantityOrdered"] == 2  # a line total


async def test_generated_totals_add_up(sim) -> None:
    for order_id in sim.generate_orders(20):
        record = sim.records[order_id]
        parts = sum(
            Decimal(i[k]["Amount"]) * sign
            for i in record.items
            for k, sign in (("ItemPrice", 1), ("ItemTax", 1), ("ShippingPrice", 1), ("PromotionDiscount", -1))
        )
        assert Decimal(record.order["OrderTotal"]["Amount"]) == parts


async def test_pending_orders_show_no_amounts_until_paid(sim, http, clock) -> None:
    order_id = sim.add_order("Pending")
    _, body, _ = await get_orders(http, sim)
    assert "OrderTotal" not in body["payload"]["Orders"][0]
    _, items, _ = await call(http, sim, f"/orders/v0/orders/{order_id}/orderItems")
    assert not {"ItemPrice", "ItemTax", "PromotionDiscount"} & set(items["payload"]["OrderItems"][0])
    clock.advance(60)
    sim.update_order(order_id, status="Unshipped")
    _, body, _ = await get_orders(http, sim)
    order = body["payload"]["Orders"][0]
    assert order["OrderTotal"]["Amount"] and order["LastUpdateDate"] == "2026-03-02T09:31:00Z"
    assert order["PurchaseDate"] == "2026-03-02T09:30:00Z"


async def test_same_seed_same_orders(sim_factory) -> None:
    a, b = await sim_factory(), await sim_factory()
    assert a.generate_orders(5) == b.generate_orders(5)
    assert [r.order for r in a.records.values()] == [r.order for r in b.records.values()]


# --- pagination and filters --------------------------------------------------------------------


async def test_next_token_pages_cover_every_order_exactly_once(sim, http, clock) -> None:
    for _ in range(23):
        sim.generate_orders(1)
        clock.advance(1)
    pages = await all_pages(http, sim, MaxResultsPerPage="5")
    assert [len(p["payload"]["Orders"]) for p in pages] == [5, 5, 5, 5, 3]
    ids = [o["AmazonOrderId"] for p in pages for o in p["payload"]["Orders"]]
    assert sorted(ids) == sorted(sim.records) and len(set(ids)) == 23
    dates = [o["LastUpdateDate"] for p in pages for o in p["payload"]["Orders"]]
    assert dates == sorted(dates)
    assert {p["payload"]["LastUpdatedBefore"] for p in pages} == {"2026-03-02T09:30:23Z"}


async def test_an_update_during_pagination_is_not_lost(sim, http, clock) -> None:
    ids = sim.generate_orders(6)
    _, first, _ = await get_orders(http, sim, MaxResultsPerPage="3")
    seen = [o["AmazonOrderId"] for o in first["payload"]["Orders"]]
    clock.advance(5)
    late = next(i for i in ids if i not in seen)
    sim.update_order(late, status="Shipped")  # moves past the pass's LastUpdatedBefore
    rest = await all_pages(http, sim, NextToken=first["payload"]["NextToken"])
    seen += [o["AmazonOrderId"] for p in rest for o in p["payload"]["Orders"]]
    assert late not in seen and len(seen) == 5
    _, nxt, _ = await get_orders(http, sim, LastUpdatedAfter=first["payload"]["LastUpdatedBefore"])
    assert late in [o["AmazonOrderId"] for o in nxt["payload"]["Orders"]]


async def test_last_updated_after_returns_only_later_changes(sim, http, clock) -> None:
    old = sim.generate_orders(4)
    clock.advance(600)
    sim.update_order(old[0], status="Shipped")
    new = sim.add_order()
    status, body, _ = await get_orders(http, sim, LastUpdatedAfter="2026-03-02T09:35:00Z")
    assert status == 200
    assert {o["AmazonOrderId"] for o in body["payload"]["Orders"]} == {old[0], new}
    _, body, _ = await get_orders(http, sim, LastUpdatedAfter="2026-03-02T09:35:00Z", OrderStatuses="Shipped")
    assert [o["AmazonOrderId"] for o in body["payload"]["Orders"]] == [old[0]]
    _, body, _ = await get_orders(http, sim, CreatedAfter="2026-03-02T09:35:00+00:00")
    assert [o["AmazonOrderId"] for o in body["payload"]["Orders"]] == [new]
    assert body["payload"]["CreatedBefore"] == "2026-03-02T09:40:00Z"


async def test_other_marketplaces_see_nothing(sim, http) -> None:
    sim.generate_orders(3)
    _, body, _ = await get_orders(http, sim, MarketplaceIds="A1PA6795UKMFR9")
    assert body["payload"]["Orders"] == []


async def test_order_items_page_with_next_token(sim_factory, http) -> None:
    sim = await sim_factory(items_page_size=1)
    order_id = sim.add_order(lines=[{"sku": f"S{i}", "quantity": 1, "unit_price": "1.00"} for i in range(3)])
    skus, token = [], None
    while True:
        params = {"NextToken": token} if token else {}
        _, body, _ = await call(http, sim, f"/orders/v0/orders/{order_id}/orderItems", **params)
        assert_valid(ITEMS_SCHEMA, body)
        skus += [i["SellerSKU"] for i in body["payload"]["OrderItems"]]
        token = body["payload"].get("NextToken")
        if not token:
            break
    assert skus == ["S0", "S1", "S2"]


# --- errors --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "params",
    [
        {"MarketplaceIds": ""},
        {"LastUpdatedAfter": ""},
        {"CreatedAfter": "2026-01-01T00:00:00Z", "LastUpdatedAfter": "2026-01-01T00:00:00Z"},
        {"CreatedAfter": "2026-01-01T00:00:00Z", "LastUpdatedBefore": "2026-02-01T00:00:00Z"},
        {"LastUpdatedAfter": "yesterday"},
        {"LastUpdatedBefore": "2026-03-02T10:00:00Z"},  # after now
        {"MaxResultsPerPage": "101"},
        {"MaxResultsPerPage": "0"},
        {"OrderStatuses": "Shipped,Lost"},
        {"NextToken": "not-a-token"},
    ],
)
async def test_invalid_input_is_400_with_the_spec_error_list(sim, http, params) -> None:
    status, body, headers = await get_orders(http, sim, **params)
    assert status == 400
    assert_valid(ORDERS_SCHEMA, body)
    assert body["errors"][0]["code"] == "InvalidInput" and body["errors"][0]["details"]
    assert headers["x-amzn-RateLimit-Limit"] and headers["x-amzn-RequestId"]


@pytest.mark.parametrize("token", [None, "Atza|wrong"])
async def test_missing_or_wrong_access_token_is_403(sim, http, token) -> None:
    status, body, headers = await call(http, sim, "/orders/v0/orders", token=token, MarketplaceIds=MARKET)
    assert status == 403
    assert_valid(ORDERS_SCHEMA, body)
    assert body["errors"][0]["code"] == "Unauthorized" and "x-amzn-RequestId" in headers


async def test_unknown_order_is_404(sim, http) -> None:
    status, body, _ = await call(http, sim, "/orders/v0/orders/111-0000000-0000000/orderItems")
    assert status == 404
    assert_valid(ITEMS_SCHEMA, body)
    assert body["errors"][0]["code"] == "NotFound"


async def test_injected_failures_answer_5xx_then_recover(sim, http) -> None:
    sim.configure({"fail_next": 2, "fail_status": 503})
    statuses = [(await get_orders(http, sim))[0] for _ in range(3)]
    assert statuses == [503, 503, 200]


# --- usage plans ---------------------------------------------------------------------------


def test_token_bucket_refills_at_its_rate() -> None:
    now = [0.0]
    bucket = TokenBucket(rate=0.5, burst=2, clock=lambda: now[0])
    assert [bucket.take() for _ in range(3)] == [True, True, False]
    now[0] = 1.9
    assert not bucket.take()
    now[0] = 2.0
    assert bucket.take() and not bucket.take()
    now[0] = 100.0
    assert [bucket.take() for _ in range(3)] == [True, True, False]  # never above the burst


async def test_spec_usage_plans_are_the_defaults(sim_factory, http) -> None:
    sim = await sim_factory()
    order_id = sim.add_order()
    assert (await get_orders(http, sim))[2]["x-amzn-RateLimit-Limit"] == "0.0167"
    items_headers = (await call(http, sim, f"/orders/v0/orders/{order_id}/orderItems"))[2]
    assert items_headers["x-amzn-RateLimit-Limit"] == "0.5"
    assert (sim.buckets["getOrders"].burst, sim.buckets["getOrderItems"].burst) == (20, 30)


async def test_burst_exhausted_is_429_quota_exceeded(sim_factory, http) -> None:
    sim = await sim_factory()  # time_scale 1: getOrders refills one call a minute
    statuses = [(await get_orders(http, sim))[0] for _ in range(20)]
    status, body, headers = await get_orders(http, sim)
    assert statuses == [200] * 20 and status == 429
    assert_valid(ORDERS_SCHEMA, body)
    assert body["errors"][0]["code"] == "QuotaExceeded"
    assert headers["x-amzn-RateLimit-Limit"] == "0.0167"
    stats = sim.stats()
    assert stats["throttled"] == 1 and stats["429 getOrders"] == 1 and stats["200 getOrders"] == 20


async def test_time_scale_refills_the_bucket_faster(sim_factory, http) -> None:
    sim = await sim_factory(time_scale=600, rate_overrides={"getOrders": {"burst": 3}})  # 10 calls/s
    assert (await get_orders(http, sim))[2]["x-amzn-RateLimit-Limit"] == "10.02"
    statuses = [(await get_orders(http, sim))[0] for _ in range(5)]
    assert 429 in statuses
    await asyncio.sleep(0.25)
    assert (await get_orders(http, sim))[0] == 200


async def test_lowering_the_budget_at_runtime(sim, http) -> None:
    async with http.put(
        f"{sim.base_url}/_sim/config", json={"rate_overrides": {"getOrders": {"rate": 0.0001, "burst": 1}}}
    ) as resp:
        assert resp.status == 200
    statuses = [(await get_orders(http, sim))[0] for _ in range(3)]
    assert statuses == [200, 429, 429]
    async with http.get(f"{sim.base_url}/_sim/stats") as resp:
        assert (await resp.json())["throttled"] == 2
    async with http.put(f"{sim.base_url}/_sim/config", json={"rate_override": {}}) as resp:
        assert resp.status == 400  # unknown field
    async with http.put(f"{sim.base_url}/_sim/config", json={"rate_overrides": {"getOrder": {}}}) as resp:
        assert resp.status == 400  # unknown operation
    bad_rate = {"rate_overrides": {"getOrders": {"rate": "fast"}}}
    async with http.put(f"{sim.base_url}/_sim/config", json=bad_rate) as resp:
        assert resp.status == 400  # the running config is left as it was
    assert sim.config.plan("getOrders") == (0.0001, 1)


async def test_sim_endpoints_create_and_update_orders(sim, http, clock) -> None:
    async with http.post(f"{sim.base_url}/_sim/orders", json={"count": 3, "status": "Pending"}) as resp:
        assert resp.status == 201
        ids = (await resp.json())["AmazonOrderIds"]
    assert len(ids) == 3 and all(sim.records[i].order["OrderStatus"] == "Pending" for i in ids)
    clock.advance(30)
    async with http.patch(f"{sim.base_url}/_sim/orders/{ids[0]}", json={"OrderStatus": "Canceled"}) as resp:
        assert resp.status == 200
        assert (await resp.json())["LastUpdateDate"] == "2026-03-02T09:30:30Z"
    async with http.patch(f"{sim.base_url}/_sim/orders/{ids[0]}", json={"OrderStatus": "Lost"}) as resp:
        assert resp.status == 400
    assert sim.stats()["orders_updated"] == 1
