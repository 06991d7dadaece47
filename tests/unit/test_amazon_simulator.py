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

from retail_sync.simulators.amazon.orders import ORDER_STATUSES
from retail_sync.simulators.amazon.simulator import AmazonSimConfig, AmazonSimulator
from retail_sync.simulators.bucket import Bucket
from tests.specs import SPECS as SHARED_SPECS
from tests.specs import in_ci, needs_spec, spec_path

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
    return await sim_factory(time_scale=1000, feed_processing_ms=20)


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
    bucket = Bucket(rate=0.5, burst=2, clock=lambda: now[0])
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
    assert headers["x-amzn-RequestId"] and "x-amzn-RateLimit-Limit" not in headers  # as the spec
    stats = sim.stats()
    assert stats["throttled"] == 1 and stats["429 getOrders"] == 1 and stats["200 getOrders"] == 20


@needs_spec("amazon")
async def test_a_429_carries_the_headers_the_spec_documents(sim_factory, http) -> None:
    """ordersV0.json documents only x-amzn-RequestId on a 429 (the rate header on 200 and 4xx);
    ``rate_limit_header_on_429`` adds the rate header there too, for clients that read it."""
    spec = json.loads(spec_path("amazon", "ordersV0.json").read_text())
    documented = spec["paths"]["/orders/v0/orders"]["get"]["responses"]["429"]["headers"]
    assert set(documented) == {"x-amzn-RequestId"}
    sim = await sim_factory(rate_overrides={"getOrders": {"rate": 0.0001, "burst": 1}})
    ok, throttled = [(await get_orders(http, sim))[2] for _ in range(2)]
    assert "x-amzn-RateLimit-Limit" in ok
    assert {h for h in throttled if h.lower().startswith("x-amzn")} == set(documented)
    sim.configure({"rate_limit_header_on_429": True})
    assert (await get_orders(http, sim))[2]["x-amzn-RateLimit-Limit"] == "0.0001"


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


# --- listings, feeds and seller cancellations ---------------------------------------------------

SELLER = "A2SIMSELLER01"
SPECS = SHARED_SPECS / "amazon"
needs_specs = needs_spec("amazon")


def spec_validator(file: str, definition: str | None = None) -> Any:
    """A validator of the reference spec (Swagger definitions: Draft 4; JSON schemas: Draft 7)."""
    from jsonschema import Draft7Validator

    spec = json.loads(spec_path("amazon", file).read_text())
    if definition is None:
        return Draft7Validator(spec)
    uri = f"urn:spec:{file}"
    registry = Registry().with_resource(uri, Resource.from_contents(spec, default_specification=DRAFT4))
    return Draft4Validator({"$ref": f"{uri}#/definitions/{definition}"}, registry=registry)


async def send(http: aiohttp.ClientSession, sim: AmazonSimulator, method: str, path: str, *,
               body: Any = None, **params: Any) -> tuple[int, Any, Any]:
    headers = {"x-amz-access-token": TOKEN}
    async with http.request(method, f"{sim.base_url}{path}", json=body, params=params,
                            headers=headers) as resp:
        return resp.status, await resp.json(content_type=None), resp.headers


def qty_patch(quantity: Any, op: str = "replace") -> JSON:
    return {"productType": "PRODUCT", "patches": [{
        "op": op, "path": "/attributes/fulfillment_availability",
        "value": [{"fulfillment_channel_code": "DEFAULT", "quantity": quantity}]}]}


async def patch(http: aiohttp.ClientSession, sim: AmazonSimulator, sku: str, body: Any,
                seller: str = SELLER, **params: Any) -> tuple[int, Any, Any]:
    params.setdefault("marketplaceIds", MARKET)
    return await send(http, sim, "PATCH", f"/listings/2021-08-01/items/{seller}/{sku}", body=body, **params)


async def sim_order(http: aiohttp.ClientSession, sim: AmazonSimulator,
                    *items: tuple[str, int]) -> tuple[int, JSON]:
    body = {"items": [{"sku": s, "quantity": q} for s, q in items]}
    async with http.post(f"{sim.base_url}/_sim/orders", json=body) as resp:
        return resp.status, await resp.json()


async def test_patch_sets_the_listing_and_get_reads_it_back(sim, http) -> None:
    status, body, headers = await patch(http, sim, "SKU-1", qty_patch(7))
    assert status == 200 and body["status"] == "ACCEPTED" and body["sku"] == "SKU-1"
    assert body["submissionId"] and body["issues"] == [] and headers["x-amzn-RateLimit-Limit"]
    assert sim.listings.quantity("SKU-1") == 7
    path = f"/listings/2021-08-01/items/{SELLER}/SKU-1"
    status, item, _ = await send(http, sim, "GET", path, marketplaceIds=MARKET,
                                 includedData="summaries,fulfillmentAvailability")
    assert status == 200
    assert item["fulfillmentAvailability"] == [{"fulfillmentChannelCode": "DEFAULT", "quantity": 7}]
    assert item["summaries"][0]["marketplaceId"] == MARKET
    status, item, _ = await send(http, sim, "GET", path, marketplaceIds=MARKET)
    assert "fulfillmentAvailability" not in item and item["summaries"]  # default: summaries
    async with http.get(f"{sim.base_url}/_sim/inventory") as resp:
        assert (await resp.json())["items"]["SKU-1"]["quantity"] == 7


@needs_specs
async def test_listings_answers_validate_against_the_spec(sim, http) -> None:
    submission = spec_validator("listingsItems_2021-08-01.json", "ListingsItemSubmissionResponse")
    item = spec_validator("listingsItems_2021-08-01.json", "Item")
    errors = spec_validator("listingsItems_2021-08-01.json", "ErrorList")
    for body in ((await patch(http, sim, "SKU-1", qty_patch(3)))[1],
                 (await patch(http, sim, "SKU-2", qty_patch(-1)))[1]):
        assert_valid(submission, body)
    got = (await send(http, sim, "GET", f"/listings/2021-08-01/items/{SELLER}/SKU-1", marketplaceIds=MARKET,
                      includedData="summaries,fulfillmentAvailability,issues"))[1]
    assert_valid(item, got)
    assert_valid(errors, (await patch(http, sim, "SKU-1", {"patches": []}))[1])


@pytest.mark.parametrize(("quantity", "sku"), [(-1, "SKU-1"), ("5", "SKU-1"), (True, "SKU-1"),
                                              (3, "X" * 41)])
async def test_a_bad_value_is_invalid_with_issues(sim, http, quantity, sku) -> None:
    status, body, _ = await patch(http, sim, sku, qty_patch(quantity))
    assert status == 200 and body["status"] == "INVALID" and body["issues"][0]["severity"] == "ERROR"
    assert sim.listings.items == {}


@pytest.mark.parametrize(("body", "params", "seller", "expected"), [
    ({"patches": [{"op": "replace", "path": "/x"}]}, {}, SELLER, 400),  # no productType
    ({"productType": "PRODUCT", "patches": []}, {}, SELLER, 400),
    ({"productType": "PRODUCT", "patches": [{"op": "move", "path": "/x"}]}, {}, SELLER, 400),
    (qty_patch(1), {"marketplaceIds": ""}, SELLER, 400),
    (qty_patch(1), {"marketplaceIds": "A1PA6795UKMFR9"}, SELLER, 400),
    (qty_patch(1), {}, "SOMEONE-ELSE", 403),
])
async def test_bad_requests_are_spec_errors(sim, http, body, params, seller, expected) -> None:
    status, answer, _ = await patch(http, sim, "SKU-1", body, seller=seller, **params)
    assert status == expected and answer["errors"][0]["code"] and answer["errors"][0]["details"]


async def test_get_of_an_unknown_sku_is_404_and_unknown_included_data_400(sim, http) -> None:
    path = f"/listings/2021-08-01/items/{SELLER}/NOPE"
    assert (await send(http, sim, "GET", path, marketplaceIds=MARKET))[0] == 404
    await patch(http, sim, "NOPE", qty_patch(1))
    assert (await send(http, sim, "GET", path, marketplaceIds=MARKET, includedData="prices"))[0] == 400


async def test_seller_side_usage_plans_come_from_the_spec(sim_factory, http) -> None:
    sim = await sim_factory()
    headers = (await patch(http, sim, "SKU-1", qty_patch(1)))[2]
    assert headers["x-amzn-RateLimit-Limit"] == "5"
    plans = {op: (b.rate, b.burst) for op, b in sim.buckets.items()}
    assert {op: plan for op, plan in plans.items()
            if op not in ("getOrders", "getOrderItems", "confirmShipment")} == {
        "patchListingsItem": (5, 5), "getListingsItem": (5, 10), "createFeedDocument": (0.5, 15),
        "createFeed": (0.0083, 15), "getFeed": (2, 15), "getFeedDocument": (0.0222, 10)}
    statuses = [(await patch(http, sim, f"S{i}", qty_patch(1)))[0] for i in range(5)]
    assert statuses == [200, 200, 200, 200, 429]  # burst 5, one already spent
    assert sim.stats()["429 patchListingsItem"] == 1


async def feed(http: aiohttp.ClientSession, sim: AmazonSimulator, feed_type: str, content: bytes) -> JSON:
    """Upload ``content``, create the feed, wait for it; the finished Feed and its report."""
    status, doc, _ = await send(http, sim, "POST", "/feeds/2021-06-30/documents",
                                body={"contentType": "application/json; charset=UTF-8"})
    assert status == 201 and doc["url"].startswith(sim.base_url)
    async with http.put(doc["url"], data=content) as resp:
        assert resp.status == 200
    status, created, _ = await send(http, sim, "POST", "/feeds/2021-06-30/feeds", body={
        "feedType": feed_type, "marketplaceIds": [MARKET], "inputFeedDocumentId": doc["feedDocumentId"]})
    assert status == 202, created
    seen = []
    while True:
        status, got, _ = await send(http, sim, "GET", f"/feeds/2021-06-30/feeds/{created['feedId']}")
        seen.append(got["processingStatus"])
        if got["processingStatus"] in ("DONE", "FATAL"):
            break
        await asyncio.sleep(0.02)
    _, where, _ = await send(http, sim, "GET", f"/feeds/2021-06-30/documents/{got['resultFeedDocumentId']}")
    async with http.get(where["url"]) as resp:
        got["report"] = await resp.read()
    got["seen"] = seen
    return got


def listings_feed(*messages: JSON, seller: str = SELLER) -> bytes:
    return json.dumps({"header": {"sellerId": seller, "version": "2.0"}, "messages": list(messages)}).encode()


def message(n: int, sku: str, quantity: Any) -> JSON:
    return {"messageId": n, "sku": sku, "operationType": "PATCH", **qty_patch(quantity)}


async def test_listings_feed_applies_when_processed_and_reports_issues(sim_factory, http) -> None:
    sim = await sim_factory(time_scale=1000, feed_processing_ms=100)
    content = listings_feed(message(1, "A", 5), message(2, "B", -3), message(3, "X" * 41, 1),
                            {"messageId": 4, "sku": "C", "operationType": "PARTIAL_UPDATE",
                             "productType": "P",
                             "attributes": {"fulfillment_availability": [
                                 {"fulfillment_channel_code": "DEFAULT", "quantity": 9}]}})
    done = await feed(http, sim, "JSON_LISTINGS_FEED", content)
    assert done["processingStatus"] == "DONE" and done["seen"][0] == "IN_QUEUE"
    report = json.loads(done["report"])
    assert report["header"] == {"sellerId": SELLER, "version": "2.0", "feedId": done["feedId"]}
    assert sorted(i["messageId"] for i in report["issues"]) == [2, 3]
    assert report["summary"] == {"errors": 2, "warnings": 0, "messagesProcessed": 4,
                                 "messagesAccepted": 2, "messagesInvalid": 2}
    assert [sim.listings.quantity(s) for s in ("A", "B", "C")] == [5, None, 9]


@needs_specs
@pytest.mark.parametrize("content", [listings_feed(message(1, "A", 5), message(2, "B", -1)), b"{not json"])
async def test_processing_reports_validate_against_the_spec(sim, http, content) -> None:
    done = await feed(http, sim, "JSON_LISTINGS_FEED", content)
    assert_valid(spec_validator("listings-feed-processing-report-schema-v2.json"), json.loads(done["report"]))
    assert_valid(spec_validator("feeds_2021-06-30.json", "Feed"),
                 {k: v for k, v in done.items() if k not in ("report", "seen")})


@pytest.mark.parametrize("content", [b"{not json", listings_feed(message(1, "A", 1), seller="OTHER"),
                                     json.dumps({"header": {"sellerId": SELLER}, "messages": []}).encode()])
async def test_a_feed_that_is_not_a_listings_feed_is_fatal(sim, http, content) -> None:
    done = await feed(http, sim, "JSON_LISTINGS_FEED", content)
    assert done["processingStatus"] == "FATAL"
    assert json.loads(done["report"])["issues"][0]["severity"] == "ERROR"
    assert sim.listings.items == {}


async def test_feed_requests_are_checked(sim, http) -> None:
    base = "/feeds/2021-06-30"
    assert (await send(http, sim, "POST", f"{base}/documents", body={}))[0] == 400
    bad_type = {"feedType": "POST_PRODUCT_DATA", "marketplaceIds": [MARKET], "inputFeedDocumentId": "x"}
    assert (await send(http, sim, "POST", f"{base}/feeds", body=bad_type))[0] == 400
    no_doc = {**bad_type, "feedType": "JSON_LISTINGS_FEED"}
    assert (await send(http, sim, "POST", f"{base}/feeds", body=no_doc))[0] == 400
    assert (await send(http, sim, "GET", f"{base}/feeds/404"))[0] == 404
    assert (await send(http, sim, "GET", f"{base}/documents/nope"))[0] == 404


# --- stock: sales, modes, generators -----------------------------------------------------------


async def test_sales_decrement_listings_and_refuse_mode_creates_no_order(sim, http) -> None:
    sim.listings.set("SCARCE", 3)
    assert (await sim_order(http, sim, ("SCARCE", 2)))[0] == 201
    status, body = await sim_order(http, sim, ("SCARCE", 2), ("OTHER", 1))
    assert status == 409 and "sale refused" in body["error"] and body["AmazonOrderIds"] == []
    assert len(sim.records) == 1 and sim.stats()["orders_refused"] == 1
    async with http.get(f"{sim.base_url}/_sim/inventory") as resp:
        snapshot = await resp.json()
    item = snapshot["items"]["SCARCE"]
    assert (item["quantity"], item["sold_units"], item["refused_units"]) == (1, 2, 2)
    assert snapshot["mode"] == "refuse" and "OTHER" not in snapshot["items"]  # untracked sells freely


async def test_allow_mode_oversells_and_counts_it(sim, http) -> None:
    async with http.put(f"{sim.base_url}/_sim/config", json={"listing_mode": "allow"}) as resp:
        assert resp.status == 200
    sim.listings.set("SCARCE", 1)
    status, body = await sim_order(http, sim, ("SCARCE", 3))
    assert status == 201
    [order_id] = body["AmazonOrderIds"]
    assert sim.records[order_id].items[0]["SellerSKU"] == "SCARCE"
    totals = sim.listings.snapshot()["totals"]
    assert (sim.listings.quantity("SCARCE"), totals["oversold_units"], totals["sold_units"]) == (0, 2, 3)
    async with http.put(f"{sim.base_url}/_sim/config", json={"listing_mode": "sometimes"}) as resp:
        assert resp.status == 400


async def test_generated_orders_buy_the_configured_skus(sim) -> None:
    sim.configure({"skus": ["S1", "S2", "S3"], "max_quantity": 2})
    for sku in ("S1", "S2", "S3"):
        sim.listings.set(sku, 4)
    created = sim.generate_orders(30)
    lines = [(i["SellerSKU"], i["QuantityOrdered"]) for o in created for i in sim.records[o].items]
    assert {s for s, _ in lines} <= {"S1", "S2", "S3"} and max(q for _, q in lines) <= 2
    assert sum(q for _, q in lines) <= 12 and len(created) < 30  # the rest were refused
    assert sim.stats()["orders_refused"] == 30 - len(created)
    assert sim.listings.snapshot()["totals"]["oversold_units"] == 0


# --- seller cancellations: POST_ORDER_ACKNOWLEDGEMENT_DATA ------------------------------------------


ACK = "POST_ORDER_ACKNOWLEDGEMENT_DATA"


def acknowledgement(order_id: str, status: str = "Failure", *items: tuple[str, int | None]) -> bytes:
    parts = "".join(
        f"<Item><AmazonOrderItemCode>{code}</AmazonOrderItemCode><CancelReason>NoInventory</CancelReason>"
        + (f"<Quantity>{qty}</Quantity>" if qty else "") + "</Item>" for code, qty in items)
    return (f'<?xml version="1.0" encoding="UTF-8"?><AmazonEnvelope><Header><DocumentVersion>1.01'
            f"</DocumentVersion><MerchantIdentifier>{SELLER}</MerchantIdentifier></Header>"
            f"<MessageType>OrderAcknowledgement</MessageType><Message><MessageID>1</MessageID>"
            f"<OrderAcknowledgement><AmazonOrderID>{order_id}</AmazonOrderID><StatusCode>{status}"
            f"</StatusCode>{parts}</OrderAcknowledgement></Message></AmazonEnvelope>").encode()


def mfn_order(sim: AmazonSimulator, clock: Clock) -> tuple[str, list[str]]:
    sim.configure({"mfn_rate": 1.0})
    order_id = sim.add_order(lines=[{"sku": "A", "quantity": 3, "unit_price": "10.00", "shipping": "0"},
                                    {"sku": "B", "quantity": 1, "unit_price": "5.00", "shipping": "0"}])
    clock.advance(60)
    return order_id, [i["OrderItemId"] for i in sim.records[order_id].items]


async def test_partial_cancellation_then_the_rest_cancels_the_order(sim, http, clock) -> None:
    order_id, (item_a, item_b) = mfn_order(sim, clock)
    done = await feed(http, sim, ACK, acknowledgement(order_id, "Failure", (item_a, 2)))
    assert done["processingStatus"] == "DONE" and b"<MessagesWithError>0<" in done["report"]
    _, items, _ = await call(http, sim, f"/orders/v0/orders/{order_id}/orderItems")
    shown = {i["OrderItemId"]: i for i in items["payload"]["OrderItems"]}
    assert shown[item_a]["QuantityOrdered"] == 1 and shown[item_a]["ItemPrice"]["Amount"] == "10.00"
    _, body, _ = await get_orders(http, sim, LastUpdatedAfter="2026-03-02T09:31:00Z")
    [order] = body["payload"]["Orders"]
    assert order["OrderStatus"] == "Unshipped" and order["NumberOfItemsUnshipped"] == 2
    assert order["OrderTotal"]["Amount"] == "16.20"  # (10 + 5) * 1.08
    again = await feed(http, sim, ACK, acknowledgement(order_id, "Failure", (item_a, 2)))
    assert again["processingStatus"] == "DONE" and len(sim.cancellations) == 1  # a repeat: harmless
    clock.advance(60)
    await feed(http, sim, "POST_ORDER_ACKNOWLEDGEMENT_DATA",
               acknowledgement(order_id, "Success", (item_a, None), (item_b, None)))
    _, body, _ = await get_orders(http, sim, LastUpdatedAfter="2026-03-02T09:32:00Z")
    assert body["payload"]["Orders"][0]["OrderStatus"] == "Canceled"
    async with http.get(f"{sim.base_url}/_sim/cancellations") as resp:
        cancellations = await resp.json()
    assert [(c["line_id"], c["sku"], c["quantity"]) for c in cancellations] == [
        (item_a, "A", 2), (item_a, "A", 1), (item_b, "B", 1)]
    assert all(c["order_id"] == order_id and c["reason"] == "NoInventory" and c["at"] for c in cancellations)
    assert sim.listings.snapshot()["totals"]["seller_cancelled_units"] == 0  # A, B untracked


async def test_whole_order_cancellation_is_idempotent(sim, http, clock) -> None:
    sim.listings.set("A", 10)
    order_id, _ = mfn_order(sim, clock)
    for _ in range(2):
        done = await feed(http, sim, ACK, acknowledgement(order_id))
        assert done["processingStatus"] == "DONE" and b"<MessagesWithError>0<" in done["report"]
    assert sim.records[order_id].order["OrderStatus"] == "Canceled"
    assert sorted((c["sku"], c["quantity"]) for c in sim.cancellations) == [("A", 3), ("B", 1)]
    assert sim.listings.items["A"].seller_cancelled_units == 3 and sim.listings.quantity("A") == 7


async def test_acknowledgements_that_cannot_apply_are_report_errors(sim, http, clock) -> None:
    order_id, _ = mfn_order(sim, clock)
    sim.update_order(shipped := sim.add_order(), status="Shipped")
    sim.configure({"mfn_rate": 0.0})
    afn = sim.add_order()
    for target, expected in (("111-0000000-0000000", b"not found"), (afn, b"AFN"), (shipped, b"Shipped")):
        done = await feed(http, sim, ACK, acknowledgement(target))
        assert done["processingStatus"] == "DONE" and expected in done["report"]
    done = await feed(http, sim, ACK, acknowledgement(order_id, "Failure", ("999", 1)))
    assert b"<ResultCode>Error</ResultCode>" in done["report"] and sim.cancellations == []


@pytest.mark.parametrize("content", [b"<AmazonEnvelope><Message>", b"not xml at all",
                                     b"<Other/>", b'<!DOCTYPE x [<!ENTITY a "b">]><AmazonEnvelope/>'])
async def test_malformed_acknowledgement_feed_is_fatal_with_a_report(sim, http, content) -> None:
    done = await feed(http, sim, ACK, content)
    assert done["processingStatus"] == "FATAL" and b"ProcessingReport" in done["report"]


# --- shipment confirmations, refunds, buyer cancellations --------------------------------------


def usage_plan(description: str) -> tuple[float, int]:
    """(rate, burst) of a spec operation's "Usage Plan" table."""
    import re

    rate, burst = re.search(r"\|\s*([\d.]+)\s*\|\s*(\d+)\s*\|\s*$", description, re.M).groups()
    return float(rate), int(burst)


@needs_specs
async def test_confirm_shipment_usage_plan_is_the_specs(sim_factory, http, clock) -> None:
    spec = json.loads(spec_path("amazon", "ordersV0.json").read_text())
    operation = spec["paths"]["/orders/v0/orders/{orderId}/shipmentConfirmation"]["post"]
    rate, burst = usage_plan(operation["description"])
    sim = await sim_factory()
    assert (sim.buckets["confirmShipment"].rate, sim.buckets["confirmShipment"].burst) == (rate, burst)
    order_id, _ = mfn_order(sim, clock)
    answers = [await send(http, sim, "POST", f"/orders/v0/orders/{order_id}/shipmentConfirmation",
                          body={"marketplaceId": MARKET}) for _ in range(burst + 1)]
    assert [a[0] for a in answers] == [400] * burst + [429]
    assert answers[0][2]["x-amzn-RateLimit-Limit"] == format(rate, "g")


def package(reference: str, *items: tuple[str, int], carrier: str = "UPS", **extra: Any) -> JSON:
    return {"marketplaceId": MARKET, "packageDetail": {
        "packageReferenceId": reference, "carrierCode": carrier, "trackingNumber": f"1Z{reference}",
        "shipDate": "2026-03-02T10:00:00Z", **extra,
        "orderItems": [{"orderItemId": i, "quantity": q} for i, q in items]}}


async def confirm(http: aiohttp.ClientSession, sim: AmazonSimulator, order_id: str,
                  body: Any) -> tuple[int, Any]:
    headers = {"x-amz-access-token": TOKEN}
    path = f"{sim.base_url}/orders/v0/orders/{order_id}/shipmentConfirmation"
    async with http.post(path, json=body, headers=headers) as resp:
        return resp.status, (await resp.json() if resp.status != 204 else None)


@needs_specs
async def test_partial_then_full_shipment_is_visible_to_pollers(sim, http, clock) -> None:
    order_id, (item_a, item_b) = mfn_order(sim, clock)
    request_schema = spec_validator("ordersV0.json", "ConfirmShipmentRequest")
    body = package("1", (item_a, 2))
    assert not list(request_schema.iter_errors(body))
    assert await confirm(http, sim, order_id, body) == (204, None)
    assert await confirm(http, sim, order_id, body) == (204, None)  # a repeat: nothing changes
    _, page, _ = await get_orders(http, sim, LastUpdatedAfter="2026-03-02T09:31:00Z")
    [order] = page["payload"]["Orders"]
    assert order["OrderStatus"] == "PartiallyShipped" and order["LastUpdateDate"] == "2026-03-02T09:31:00Z"
    assert (order["NumberOfItemsShipped"], order["NumberOfItemsUnshipped"]) == (2, 2)
    _, items, _ = await call(http, sim, f"/orders/v0/orders/{order_id}/orderItems")
    assert {i["OrderItemId"]: i["QuantityShipped"] for i in items["payload"]["OrderItems"]} == {
        item_a: 2, item_b: 0}
    clock.advance(60)
    assert (await confirm(http, sim, order_id, package("2", (item_a, 1), (item_b, 1),
                                                       carrier="Other", carrierName="Kurier")))[0] == 204
    _, page, _ = await get_orders(http, sim, LastUpdatedAfter="2026-03-02T09:32:00Z")
    [order] = page["payload"]["Orders"]
    assert order["OrderStatus"] == "Shipped" and order["NumberOfItemsUnshipped"] == 0
    async with http.get(f"{sim.base_url}/_sim/shipments", params={"order_id": order_id}) as resp:
        shipments = await resp.json()
    assert [(s["package_reference_id"], s["carrier_code"], s["items"]) for s in shipments] == [
        ("1", "UPS", [{"order_item_id": item_a, "quantity": 2}]),
        ("2", "Other", [{"order_item_id": item_a, "quantity": 1}, {"order_item_id": item_b, "quantity": 1}])]
    assert sim.stats()["204 confirmShipment"] == 3


async def test_shipping_more_than_ordered_is_a_spec_400(sim, http, clock) -> None:
    order_id, (item_a, item_b) = mfn_order(sim, clock)
    status, body = await confirm(http, sim, order_id, package("1", (item_a, 4)))
    assert status == 400 and body["errors"][0]["code"] == "InvalidInput"
    assert "not yet shipped" in body["errors"][0]["details"]
    if SPECS.is_dir() or in_ci():
        assert_valid(spec_validator("ordersV0.json", "ConfirmShipmentErrorResponse"), body)
    await confirm(http, sim, order_id, package("1", (item_a, 3), (item_b, 1)))
    status, body = await confirm(http, sim, order_id, package("2", (item_b, 1)))  # already shipped
    assert status == 400 and "not yet shipped" in body["errors"][0]["details"]
    status, body = await confirm(http, sim, order_id, package("1", (item_b, 1)))  # reused, other items
    assert status == 400 and "other items" in body["errors"][0]["details"]
    assert sim.records[order_id].shipped == {item_a: 3, item_b: 1}


@pytest.mark.parametrize("change", [
    {"marketplaceId": "A1PA6795UKMFR9"}, {"packageDetail": None},
    {"packageDetail": {"packageReferenceId": "P-1"}}, {"carrierCode": "Pigeon"}, {"carrierCode": "Other"},
    {"shipDate": "02/21/2022"}, {"trackingNumber": ""}, {"orderItems": []}, {"quantity": 0},
    {"orderItemId": "999"}])
async def test_malformed_confirmations_are_400(sim, http, clock, change) -> None:
    order_id, (item_a, _) = mfn_order(sim, clock)
    body = package("1", (item_a, 1))
    detail, item = body["packageDetail"], body["packageDetail"]["orderItems"][0]
    for key, value in change.items():
        target = body if key in body else item if key in item else detail
        target[key] = value
    status, answer = await confirm(http, sim, order_id, body)
    assert status == 400 and answer["errors"][0]["code"] == "InvalidInput", answer
    assert sim.shipments == [] and sim.records[order_id].order["OrderStatus"] == "Unshipped"


async def test_confirmation_of_unknown_afn_or_cancelled_orders_is_refused(sim, http, clock) -> None:
    assert (await confirm(http, sim, "111-0000000-0000000", package("1", ("1", 1))))[0] == 404
    sim.configure({"mfn_rate": 0.0})
    afn = sim.add_order()
    status, body = await confirm(http, sim, afn, package("1", (sim.records[afn].items[0]["OrderItemId"], 1)))
    assert status == 400 and "AFN" in body["errors"][0]["details"]
    order_id, (item_a, _) = mfn_order(sim, clock)
    sim.cancel_by_buyer(order_id)
    status, body = await confirm(http, sim, order_id, package("1", (item_a, 1)))
    assert status == 400 and "Canceled" in body["errors"][0]["details"]


async def test_buyer_cancellation_is_seen_by_pollers_later(sim, http, clock) -> None:
    order_id, _ = mfn_order(sim, clock)
    before = sim.records[order_id].order["LastUpdateDate"]
    async with http.post(f"{sim.base_url}/_sim/orders/{order_id}/buyer-cancel") as resp:
        assert resp.status == 200 and (await resp.json())["OrderStatus"] == "Canceled"
    _, page, _ = await get_orders(http, sim, LastUpdatedAfter="2026-03-02T09:31:00Z")
    [order] = page["payload"]["Orders"]
    assert order["OrderStatus"] == "Canceled" and order["LastUpdateDate"] > before
    assert sim.cancel_by_buyer(order_id) is False  # already cancelled
    assert [c["status_before"] for c in sim.buyer_cancellations] == ["Unshipped"]
    async with http.post(f"{sim.base_url}/_sim/orders/111-0000000-0000000/buyer-cancel") as resp:
        assert resp.status == 404


async def test_buyer_cannot_cancel_what_shipped(sim, http, clock) -> None:
    order_id, (item_a, _) = mfn_order(sim, clock)
    sim.confirm_shipment(order_id, package("7", (item_a, 1)))
    async with http.post(f"{sim.base_url}/_sim/orders/{order_id}/buyer-cancel") as resp:
        assert resp.status == 409 and "PartiallyShipped" in (await resp.json())["error"]
    with pytest.raises(ValueError, match="not shipped"):
        sim.cancel_by_buyer(sim.add_order("Shipped"))


PAYMENT = "POST_PAYMENT_ADJUSTMENT_DATA"


def adjustment(order_id: str, adjustment_id: str, *items: tuple[str, str], currency: str = "USD",
               reason: str = "CustomerReturn") -> bytes:
    parts = "".join(
        f"<AdjustedItem><AmazonOrderItemCode>{code}</AmazonOrderItemCode>"
        f"<AdjustmentReason>{reason}</AdjustmentReason><ItemPriceAdjustments><Component>"
        f'<Type>Principal</Type><Amount currency="{currency}">{amount}</Amount></Component>'
        f"</ItemPriceAdjustments></AdjustedItem>" for code, amount in items)
    return (f'<?xml version="1.0" encoding="UTF-8"?><AmazonEnvelope><Header><DocumentVersion>1.01'
            f"</DocumentVersion><MerchantIdentifier>{SELLER}</MerchantIdentifier></Header>"
            f"<MessageType>OrderAdjustment</MessageType><Message><MessageID>1</MessageID>"
            f"<OrderAdjustment><AmazonOrderID>{order_id}</AmazonOrderID><MerchantAdjustmentID>"
            f"{adjustment_id}</MerchantAdjustmentID>{parts}</OrderAdjustment></Message>"
            f"</AmazonEnvelope>").encode()


async def test_payment_adjustment_feed_records_refunds_once(sim, http, clock) -> None:
    order_id, (item_a, item_b) = mfn_order(sim, clock)
    sim.update_order(order_id, status="Shipped")
    for _ in range(2):
        content = adjustment(order_id, "R-1", (item_a, "10.00"), (item_b, "5.00"))
        done = await feed(http, sim, PAYMENT, content)
        assert done["processingStatus"] == "DONE" and b"<MessagesWithError>0<" in done["report"]
    async with http.get(f"{sim.base_url}/_sim/refunds", params={"order_id": order_id}) as resp:
        [refund] = await resp.json()
    assert (refund["adjustment_id"], refund["amount"], refund["currency"]) == ("R-1", "15.00", "USD")
    assert [(i["order_item_id"], i["sku"], i["reason"], i["components"]) for i in refund["items"]] == [
        (item_a, "A", "CustomerReturn", {"Principal": "10.00"}), (item_b, "B", "CustomerReturn",
                                                                  {"Principal": "5.00"})]
    assert sim.seller.feeds_by_type == {PAYMENT: 2} and sim.stats()["refunds"] == 1


async def test_refunds_that_cannot_apply_are_report_errors(sim, http, clock) -> None:
    order_id, (item_a, item_b) = mfn_order(sim, clock)
    sim.update_order(order_id, status="Shipped")
    pending = sim.add_order("Pending")
    cases = [(adjustment("111-0000000-0000000", "R", (item_a, "1.00")), b"not found"),
             (adjustment(order_id, "R", ("999", "1.00")), b"not an item"),
             (adjustment(order_id, "R", (item_a, "1.00"), currency="EUR"), b"in USD"),
             (adjustment(order_id, "R", (item_b, "5.01")), b"exceed"),
             (adjustment(pending, "R", (sim.records[pending].items[0]["OrderItemId"], "1.00")), b"Pending")]
    for content, expected in cases:
        done = await feed(http, sim, PAYMENT, content)
        assert done["processingStatus"] == "DONE" and expected in done["report"], done["report"]
    await feed(http, sim, PAYMENT, adjustment(order_id, "R-1", (item_b, "3.00")))
    done = await feed(http, sim, PAYMENT, adjustment(order_id, "R-2", (item_b, "2.01")))
    assert b"exceed" in done["report"] and [r["adjustment_id"] for r in sim.refunds] == ["R-1"]


@pytest.mark.parametrize("content", [
    b"<AmazonEnvelope><Message>", b"<Other/>",
    adjustment("1", "R", ("1", "1.00"), reason="Because"), adjustment("1", "R", ("1", "-1")),
    adjustment("1", "R", ("1", "ten")), adjustment("1", "R")])
async def test_malformed_payment_adjustment_feed_is_fatal(sim, http, content) -> None:
    done = await feed(http, sim, PAYMENT, content)
    assert done["processingStatus"] == "FATAL" and b"ProcessingReport" in done["report"]


async def test_a_share_of_buyers_ask_to_cancel_a_moment_after_ordering(sim, http, clock) -> None:
    """``buyer_cancel_rate``: the request comes ``buyer_cancel_after_s`` after the order, shaped
    as the spec's OrderItem.BuyerRequestedCancel, seen again by a poller by LastUpdatedAfter;
    answered with BuyerCanceled it cancels the order."""
    sim.configure({"buyer_cancel_rate": 1.0, "buyer_cancel_after_s": 30})
    order_id, (item_a, item_b) = mfn_order(sim, clock)  # 60 s later: the request is due
    clock.advance(-59)
    _, page, _ = await get_orders(http, sim)
    assert [o["OrderStatus"] for o in page["payload"]["Orders"]] == ["Unshipped"]
    _, items, _ = await call(http, sim, f"/orders/v0/orders/{order_id}/orderItems")
    assert all("BuyerRequestedCancel" not in i for i in items["payload"]["OrderItems"])
    assert sim.buyer_cancel_requests == []
    clock.advance(30)
    asked_at = sim.now()
    _, page, _ = await get_orders(http, sim, LastUpdatedAfter=(asked_at - timedelta(seconds=1))
                                  .strftime("%Y-%m-%dT%H:%M:%SZ"))
    [order] = page["payload"]["Orders"]
    assert order["AmazonOrderId"] == order_id and order["OrderStatus"] == "Unshipped"
    _, items, _ = await call(http, sim, f"/orders/v0/orders/{order_id}/orderItems")
    assert_valid(ITEMS_SCHEMA, items)
    assert [i["BuyerRequestedCancel"] for i in items["payload"]["OrderItems"]] == 2 * [
        {"IsBuyerRequestedCancel": "true", "BuyerCancelReason": "Order placed by mistake."}]
    assert [r["order_id"] for r in sim.buyer_cancel_requests] == [order_id]
    assert sim.stats()["buyer_cancel_requests"] == 1
    answer = acknowledgement(order_id, "Success", (item_a, None), (item_b, None))
    done = await feed(http, sim, ACK, answer.replace(b"NoInventory", b"BuyerCanceled"))
    assert done["processingStatus"] == "DONE"
    assert {(c["line_id"], c["reason"]) for c in sim.cancellations} == {
        (item_a, "BuyerCanceled"), (item_b, "BuyerCanceled")}
    assert sim.records[order_id].order["OrderStatus"] == "Canceled"


async def test_no_buyer_request_for_an_order_shipped_meanwhile(sim, http, clock) -> None:
    sim.configure({"buyer_cancel_rate": 1.0, "buyer_cancel_after_s": 30})
    order_id, (item_a, item_b) = mfn_order(sim, clock)
    sim.confirm_shipment(order_id, package("1", (item_a, 3), (item_b, 1)))
    _, page, _ = await get_orders(http, sim)
    assert sim.buyer_cancel_requests == [] and sim.stats()["buyer_cancel_requests_too_late"] == 1
    sim.configure({"buyer_cancel_rate": 0.0})
    sim.add_order()  # rate 0 (the default): no buyer asks
    clock.advance(3600)
    await get_orders(http, sim)
    assert sim.buyer_cancel_requests == []


async def test_buyer_cancel_request_route(sim, http, clock) -> None:
    order_id, (item_a, _item_b) = mfn_order(sim, clock)
    url = f"{sim.base_url}/_sim/orders/{order_id}/buyer-cancel-request"
    async with http.post(url, json={"reason": "Wrong size", "item_ids": [item_a]}) as resp:
        assert resp.status == 200
        body = await resp.json()
    assert body["OrderStatus"] == "Unshipped"
    assert [i.get("BuyerRequestedCancel") for i in body["OrderItems"]] == [
        {"IsBuyerRequestedCancel": "true", "BuyerCancelReason": "Wrong size"}, None]
    async with http.post(url, json={"item_ids": ["nope"]}) as resp:
        assert resp.status == 409 and "item_ids" in (await resp.json())["error"]
    async with http.post(url) as resp:  # every item, no reason
        assert resp.status == 200
    assert sim.request_buyer_cancel(order_id) is False  # asked already: nothing new
    assert [r["item_ids"] for r in sim.buyer_cancel_requests] == [[item_a], sorted([item_a, _item_b])]
    async with http.post(f"{sim.base_url}/_sim/orders/111-0000000-0000000/buyer-cancel-request") as resp:
        assert resp.status == 404
    shipped, (ship_a, ship_b) = mfn_order(sim, clock)
    sim.confirm_shipment(shipped, package("1", (ship_a, 1)))
    async with http.post(f"{sim.base_url}/_sim/orders/{shipped}/buyer-cancel-request") as resp:
        assert resp.status == 409 and "unshipped MFN" in (await resp.json())["error"]
