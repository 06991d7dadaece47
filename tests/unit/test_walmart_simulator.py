"""The Walmart simulator over real HTTP: token flow, gateway headers, pagination, ack, throttling."""

from __future__ import annotations

import asyncio
import base64
import copy
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import jsonschema
import pytest

from retail_sync.simulators.bucket import Bucket
from retail_sync.simulators.walmart.simulator import WalmartSimConfig, WalmartSimulator, parse_walmart_date
from tests.specs import spec_path

BASE_MS = 1_700_000_000_000  # 2023-11-14T22:13:20Z
JSON = dict[str, Any]


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def spec_schema(name: str) -> JSON:
    """A spec component as a JSON schema. The spec points GetOrderResponseRecord.orderLines at
    RefundLinesType (a known defect of Walmart's document); the order lines are OrderLinesType."""
    spec = json.loads(spec_path("walmart", "us-mp-orders.openapi.json").read_text())
    components = copy.deepcopy(spec["components"])
    record = components["schemas"]["GetOrderResponseRecord"]["properties"]
    record["orderLines"] = {"$ref": "#/components/schemas/OrderLinesType"}
    return {"$ref": f"#/components/schemas/{name}", "components": components}


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def sim(clock: FakeClock) -> AsyncIterator[WalmartSimulator]:
    simulator = WalmartSimulator(WalmartSimConfig(seed=7, base_time_ms=BASE_MS), clock=clock)
    await simulator.start("127.0.0.1", 0)
    yield simulator
    await simulator.stop()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def basic(client_id: str = "demo-client-id", secret: str = "demo-client-secret") -> str:
    return "Basic " + base64.b64encode(f"{client_id}:{secret}".encode()).decode()


def common() -> dict[str, str]:
    return {
        "WM_QOS.CORRELATION_ID": "b3261d2d-028a-4ef7-8602-633c23200af6",
        "WM_SVC.NAME": "Walmart Marketplace",
    }


async def get_token(http: aiohttp.ClientSession, sim: WalmartSimulator) -> str:
    headers = {**common(), "Authorization": basic()}
    async with http.post(
        f"{sim.base_url}/v3/token", data={"grant_type": "client_credentials"}, headers=headers
    ) as r:
        assert r.status == 200
        body = await r.json()
    assert body["token_type"] == "Bearer" and body["expires_in"] == 900
    return str(body["access_token"])


async def call(
    http: aiohttp.ClientSession, sim: WalmartSimulator, method: str, path: str, token: str | None, **kw: Any
) -> tuple[int, JSON, Any]:
    headers = {**common(), **({"WM_SEC.ACCESS_TOKEN": token} if token else {}), **kw.pop("headers", {})}
    async with http.request(method, f"{sim.base_url}{path}", headers=headers, **kw) as resp:
        return resp.status, await resp.json(), resp.headers


def first_error(body: JSON) -> JSON:
    jsonschema.validate(body["errors"]["error"][0], spec_schema("GatewayError"))
    return dict(body["errors"]["error"][0])


async def all_released(
    http: aiohttp.ClientSession, sim: WalmartSimulator, token: str, limit: int, ack: bool = False
) -> tuple[list[str], int]:
    """Follow nextCursor to the end; optionally acknowledge each order as it arrives."""
    ids, pages = [], 0
    status, body, _ = await call(
        http, sim, "GET", f"/v3/orders/released?createdStartDate=2023-11-01&limit={limit}", token
    )
    while True:
        assert status == 200
        pages += 1
        for order in body["list"]["elements"]["order"]:
            ids.append(order["purchaseOrderId"])
            if ack:
                path = f"/v3/orders/{order['purchaseOrderId']}/acknowledge"
                assert (await call(http, sim, "POST", path, token))[0] == 200
        cursor = body["list"]["meta"].get("nextCursor")
        if not cursor:
            return ids, pages
        status, body, _ = await call(http, sim, "GET", f"/v3/orders/released{cursor}", token)


# --- token and gateway -------------------------------------------------------------------------


async def test_token_needs_basic_credentials_and_client_credentials_grant(
    sim: WalmartSimulator, http: aiohttp.ClientSession
) -> None:
    url = f"{sim.base_url}/v3/token"
    form = {"grant_type": "client_credentials"}
    async with http.post(url, data=form, headers={**common(), "Authorization": basic(secret="nope")}) as r:
        assert r.status == 401
        assert first_error(await r.json())["code"] == "UNAUTHORIZED.GMP_GATEWAY_API"
    async with http.post(
        url, data={"grant_type": "password"}, headers={**common(), "Authorization": basic()}
    ) as r:
        assert r.status == 400
        assert first_error(await r.json())["field"] == "grant_type"
    async with http.post(url, data=form, headers={"Authorization": basic()}) as r:
        assert r.status == 400  # WM_QOS.CORRELATION_ID and WM_SVC.NAME are required here too
    assert await get_token(http, sim)
    assert sim.stats()["tokens_issued"] == 1


async def test_token_expires_after_its_ttl(
    sim: WalmartSimulator, http: aiohttp.ClientSession, clock: FakeClock
) -> None:
    sim.generate_orders(1)
    token = await get_token(http, sim)
    assert (await call(http, sim, "GET", "/v3/orders/1796277083001", token))[0] == 200
    clock.now += 901
    status, body, _ = await call(http, sim, "GET", "/v3/orders/1796277083001", token)
    assert status == 401
    assert first_error(body)["info"] == "Token expired"


async def test_expire_tokens_invalidates_issued_tokens(
    sim: WalmartSimulator, http: aiohttp.ClientSession
) -> None:
    token = await get_token(http, sim)
    sim.expire_tokens()
    assert (await call(http, sim, "GET", "/v3/orders/released", token))[0] == 401


@pytest.mark.parametrize("missing", ["WM_QOS.CORRELATION_ID", "WM_SVC.NAME"])
async def test_required_headers_answer_400_in_walmart_shape(
    sim: WalmartSimulator, http: aiohttp.ClientSession, missing: str
) -> None:
    token = await get_token(http, sim)
    headers = {**common(), "WM_SEC.ACCESS_TOKEN": token}
    del headers[missing]
    async with http.get(f"{sim.base_url}/v3/orders/released", headers=headers) as resp:
        assert resp.status == 400
        error = first_error(await resp.json())
    assert error["code"] == "INVALID_REQUEST_HEADER.GMP_GATEWAY_API" and error["field"] == missing


async def test_missing_or_unknown_access_token_is_401(
    sim: WalmartSimulator, http: aiohttp.ClientSession
) -> None:
    for token in (None, "forged"):
        status, body, _ = await call(http, sim, "GET", "/v3/orders/released", token)
        assert status == 401
        error = first_error(body)
        assert (error["code"], error["severity"], error["category"]) == (
            "UNAUTHORIZED.GMP_GATEWAY_API",
            "ERROR",
            "DATA",
        )
    assert sim.stats()["auth_failures"] == 2


# --- orders ------------------------------------------------------------------------------------


async def test_orders_are_deterministic_and_valid_against_the_spec(
    sim: WalmartSimulator, http: aiohttp.ClientSession
) -> None:
    orders = sim.generate_orders(30)
    twin = WalmartSimulator(WalmartSimConfig(seed=7, base_time_ms=BASE_MS)).generate_orders(30)
    assert orders == twin
    token = await get_token(http, sim)
    status, body, _ = await call(
        http, sim, "GET", "/v3/orders/released?createdStartDate=2023-11-01&limit=200", token
    )
    assert status == 200 and body["list"]["meta"]["totalCount"] == 30
    jsonschema.validate(body, spec_schema("PurchaseOrderTypeV3"))
    status, one, _ = await call(http, sim, "GET", f"/v3/orders/{orders[0]['purchaseOrderId']}", token)
    jsonschema.validate(one, spec_schema("GetOrderResponse"))
    assert one["order"] == orders[0]


@pytest.mark.parametrize("ack", [False, True])
async def test_pagination_over_next_cursor_returns_each_order_once(
    sim: WalmartSimulator, http: aiohttp.ClientSession, clock: FakeClock, ack: bool
) -> None:
    created = [o["purchaseOrderId"] for o in sim.generate_orders(25)]
    sim.set_config({"acknowledge_burst": 25})
    clock.now += 10  # refill the acknowledge bucket to its new burst
    token = await get_token(http, sim)
    ids, pages = await all_released(http, sim, token, limit=10, ack=ack)
    assert ids == created and pages == 3  # oldest first, none skipped or repeated
    assert sim.stats()["orders_released"] == (0 if ack else 25)


async def test_next_cursor_has_walmart_shape(sim: WalmartSimulator, http: aiohttp.ClientSession) -> None:
    sim.generate_orders(3)
    token = await get_token(http, sim)
    _, body, _ = await call(
        http, sim, "GET", "/v3/orders/released?createdStartDate=2023-11-01&limit=2", token
    )
    meta = body["list"]["meta"]
    assert meta["totalCount"] == 3 and meta["limit"] == 2
    assert meta["nextCursor"].startswith("?limit=2&hasMoreElements=true&soIndex=3&poIndex=")
    assert "sellerId=8" in meta["nextCursor"] and "createdStartDate=2023-11-01" in meta["nextCursor"]


async def test_created_start_date_filters_and_empty_answer_is_404(
    sim: WalmartSimulator, http: aiohttp.ClientSession
) -> None:
    sim.generate_orders(5)  # one a minute from BASE_MS
    token = await get_token(http, sim)
    since = "2023-11-14T22:15:20.000Z"  # BASE_MS + 2 minutes
    _, body, _ = await call(http, sim, "GET", f"/v3/orders/released?createdStartDate={since}", token)
    assert len(body["list"]["elements"]["order"]) == 3
    status, body, _ = await call(http, sim, "GET", "/v3/orders/released?createdStartDate=2030-01-01", token)
    assert status == 404 and first_error(body)["code"] == "CONTENT_NOT_FOUND.GMP_ORDER_API"


@pytest.mark.parametrize(
    "query,field",
    [
        ("limit=201", "limit"),
        ("limit=x", "limit"),
        ("createdStartDate=yesterday", "createdStartDate"),
        ("shipNodeType=Drone", "shipNodeType"),
    ],
)
async def test_invalid_query_is_400(
    sim: WalmartSimulator, http: aiohttp.ClientSession, query: str, field: str
) -> None:
    token = await get_token(http, sim)
    status, body, _ = await call(http, sim, "GET", f"/v3/orders/released?{query}", token)
    assert status == 400
    error = first_error(body)
    assert error["code"] == "INVALID_REQUEST_PARAM.GMP_ORDER_API" and error["field"] == field


async def test_acknowledge_moves_created_lines_and_leaves_released(
    sim: WalmartSimulator, http: aiohttp.ClientSession
) -> None:
    order = sim.generate_orders(2)[0]
    po = order["purchaseOrderId"]
    token = await get_token(http, sim)
    status, body, _ = await call(http, sim, "POST", f"/v3/orders/{po}/acknowledge", token)
    assert status == 200
    statuses = {
        s["status"]
        for line in body["order"]["orderLines"]["orderLine"]
        for s in line["orderLineStatuses"]["orderLineStatus"]
    }
    assert statuses == {"Acknowledged"}
    _, listed, _ = await call(http, sim, "GET", "/v3/orders/released?createdStartDate=2023-11-01", token)
    assert po not in {o["purchaseOrderId"] for o in listed["list"]["elements"]["order"]}
    assert (await call(http, sim, "POST", f"/v3/orders/{po}/acknowledge", token))[0] == 200  # repeatable
    status, body, _ = await call(http, sim, "POST", "/v3/orders/999/acknowledge", token)
    assert status == 404 and first_error(body)["code"] == "CONTENT_NOT_FOUND.GMP_ORDER_API"


async def test_status_updates_show_in_all_orders_by_last_modified(
    sim: WalmartSimulator, http: aiohttp.ClientSession
) -> None:
    orders = sim.generate_orders(3)
    after = int(time.time() * 1000) + 1
    await asyncio.sleep(0.002)
    po = orders[1]["purchaseOrderId"]
    sim.update_line_status(po, "1", "Shipped")
    with pytest.raises(ValueError, match="unknown line status"):
        sim.update_line_status(po, "1", "Lost")
    token = await get_token(http, sim)
    iso = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(after / 1000)) + f".{after % 1000:03d}Z"
    _, body, _ = await call(
        http, sim, "GET", f"/v3/orders?createdStartDate=2023-11-01&lastModifiedStartDate={iso}", token
    )
    assert [o["purchaseOrderId"] for o in body["list"]["elements"]["order"]] == [po]
    _, shipped, _ = await call(
        http, sim, "GET", "/v3/orders?createdStartDate=2023-11-01&status=Shipped", token
    )
    assert [o["purchaseOrderId"] for o in shipped["list"]["elements"]["order"]] == [po]


# --- throttling --------------------------------------------------------------------------------


async def test_throttling_answers_429_with_replenish_headers(
    sim: WalmartSimulator, http: aiohttp.ClientSession
) -> None:
    sim.set_config({"released_rate_per_s": 0.5, "released_burst": 3})
    sim.generate_orders(1)
    token = await get_token(http, sim)
    counts = []
    for _ in range(3):
        status, _, headers = await call(
            http, sim, "GET", "/v3/orders/released?createdStartDate=2023-11-01", token
        )
        assert status == 200
        counts.append(int(headers["x-current-token-count"]))
    assert counts == [2, 1, 0]
    status, body, headers = await call(
        http, sim, "GET", "/v3/orders/released?createdStartDate=2023-11-01", token
    )
    assert status == 429 and first_error(body)["code"] == "REQUEST_THRESHOLD_VIOLATED.GMP_GATEWAY_API"
    wait_ms = int(headers["x-next-replenish-time"]) - time.time() * 1000
    assert 1500 < wait_ms <= 2100  # one token every 2 s
    assert (await call(http, sim, "POST", "/v3/orders/1796277083001/acknowledge", token))[
        0
    ] == 200  # own bucket
    stats = sim.stats()
    assert stats["throttled_429"] == stats["throttled_429_released"] == 1


async def test_time_scale_speeds_up_refill_and_budget_changes_at_runtime(
    sim: WalmartSimulator, http: aiohttp.ClientSession, clock: FakeClock
) -> None:
    token = await get_token(http, sim)
    async with http.put(
        f"{sim.base_url}/_sim/config", json={"released_rate_per_s": 1, "released_burst": 1, "time_scale": 10}
    ) as resp:
        assert resp.status == 200
    assert (await call(http, sim, "GET", "/v3/orders/released", token))[0] == 404  # admitted; no orders
    assert (await call(http, sim, "GET", "/v3/orders/released", token))[0] == 429
    clock.now += 0.1  # 1 token/s at time_scale 10 -> one token per 0.1 s
    assert (await call(http, sim, "GET", "/v3/orders/released", token))[0] == 404
    async with http.get(f"{sim.base_url}/_sim/stats") as resp:
        assert (await resp.json())["throttled_429"] == 1
    async with http.put(f"{sim.base_url}/_sim/config", json={"no_such_knob": 1}) as resp:
        assert resp.status == 400


def test_token_bucket_refills_up_to_burst() -> None:
    clock = FakeClock()
    bucket = Bucket(rate=2, burst=2, clock=clock)
    assert bucket.take() and bucket.take() and not bucket.take()
    assert bucket.seconds_to_next_token() == pytest.approx(0.5)
    clock.now += 10
    assert bucket.count() == 2 and bucket.take() and bucket.count() == 1  # capped at the burst


def test_walmart_dates() -> None:
    assert parse_walmart_date("2023-11-14") == 1_699_920_000_000
    assert parse_walmart_date("2023-11-14T22:13:20Z") == BASE_MS
    assert parse_walmart_date("2023-11-14T22:13:20.701Z") == BASE_MS + 701


# --- stock: inventory, bulk feeds, sales from listings, seller cancellation -----------------



@pytest.fixture
async def stock_sim() -> AsyncIterator[WalmartSimulator]:
    simulator = WalmartSimulator(WalmartSimConfig(seed=7, base_time_ms=BASE_MS, feed_processing_ms=100))
    await simulator.start("127.0.0.1", 0)
    yield simulator
    await simulator.stop()


def feed_schema() -> JSON:
    components = json.loads(spec_path("walmart", "us-mp-feeds.openapi.json").read_text())["components"]
    return {"$ref": "#/components/schemas/PartnerFeedResponse", "components": components}


def inventory(sku: str, amount: Any) -> JSON:
    return {"sku": sku, "quantity": {"unit": "EACH", "amount": amount}}


async def test_inventory_put_and_get(stock_sim: WalmartSimulator, http: aiohttp.ClientSession) -> None:
    token = await get_token(http, stock_sim)
    status, body, headers = await call(
        http, stock_sim, "PUT", "/v3/inventory?sku=WM-KETTLE-01", token, json=inventory("WM-KETTLE-01", 9)
    )
    assert status == 200 and body == inventory("WM-KETTLE-01", 9) and "x-current-token-count" in headers
    assert stock_sim.listings.quantity("WM-KETTLE-01") == 9
    status, body, _ = await call(http, stock_sim, "GET", "/v3/inventory?sku=WM-KETTLE-01", token)
    assert body == inventory("WM-KETTLE-01", 9)
    status, body, _ = await call(
        http, stock_sim, "PUT", "/v3/inventory?sku=NOPE", token, json=inventory("NOPE", 1)
    )
    assert status == 404 and first_error(body)["code"] == "CONTENT_NOT_FOUND.GMP_INVENTORY_API"
    for bad in (inventory("WM-KETTLE-01", -1), inventory("OTHER", 1), {"sku": "WM-KETTLE-01"}):
        status, body, _ = await call(
            http, stock_sim, "PUT", "/v3/inventory?sku=WM-KETTLE-01", token, json=bad
        )
        assert status == 400 and first_error(body)["code"] == "INVALID_REQUEST_PARAM.GMP_INVENTORY_API"


async def test_inventory_has_its_own_bucket(stock_sim: WalmartSimulator, http: aiohttp.ClientSession) -> None:
    stock_sim.set_config({"inventory_rate_per_s": 0.001, "inventory_burst": 2})
    token = await get_token(http, stock_sim)
    statuses = []
    for _ in range(3):
        status, body, headers = await call(
            http, stock_sim, "PUT", "/v3/inventory?sku=WM-MUG-4PK", token, json=inventory("WM-MUG-4PK", 1)
        )
        statuses.append(status)
    assert statuses == [200, 200, 429] and "x-next-replenish-time" in headers
    assert stock_sim.stats()["throttled_429_inventory"] == 1
    status, _, _ = await call(
        http, stock_sim, "GET", "/v3/orders/released?createdStartDate=2023-11-01", token
    )
    assert status != 429  # other operations keep their own budget


async def test_bulk_feed_is_applied_when_processed(
    stock_sim: WalmartSimulator, http: aiohttp.ClientSession
) -> None:
    token = await get_token(http, stock_sim)
    feed = {
        "InventoryHeader": {"version": "1.4"},
        "Inventory": [inventory("WM-KETTLE-01", 3), inventory("UNKNOWN-1", 2), inventory("WM-LEGO-CITY", -4)],
    }
    form = aiohttp.FormData()
    form.add_field("file", json.dumps(feed).encode(), filename="feed.json", content_type="application/json")
    status, body, _ = await call(http, stock_sim, "POST", "/v3/feeds?feedType=inventory", token, data=form)
    assert status == 200 and set(body) == {"feedId"}
    path = f"/v3/feeds/{body['feedId'].replace('@', '%40')}?includeDetails=true"
    _, report, _ = await call(http, stock_sim, "GET", path, token)
    assert (
        report["feedStatus"] in ("RECEIVED", "INPROGRESS")
        and stock_sim.listings.quantity("WM-KETTLE-01") is None
    )
    await asyncio.sleep(0.15)
    _, report, _ = await call(http, stock_sim, "GET", path, token)
    jsonschema.validate(report, feed_schema())
    assert (
        report["feedStatus"],
        report["itemsReceived"],
        report["itemsSucceeded"],
        report["itemsFailed"],
    ) == ("PROCESSED", 3, 1, 2)
    statuses = {i["sku"]: i["ingestionStatus"] for i in report["itemDetails"]["itemIngestionStatus"]}
    assert statuses == {"WM-KETTLE-01": "SUCCESS", "UNKNOWN-1": "DATA_ERROR", "WM-LEGO-CITY": "DATA_ERROR"}
    assert (
        stock_sim.listings.quantity("WM-KETTLE-01") == 3 and stock_sim.listings.quantity("UNKNOWN-1") is None
    )
    # the same JSON as the body works too; a file that is no inventory feed ends in ERROR
    _, plain, _ = await call(http, stock_sim, "POST", "/v3/feeds?feedType=inventory", token, json=feed)
    _, junk, _ = await call(http, stock_sim, "POST", "/v3/feeds?feedType=inventory", token, data=b"<x/>")
    await asyncio.sleep(0.15)
    _, report, _ = await call(http, stock_sim, "GET", f"/v3/feeds/{junk['feedId']}", token)
    assert report["feedStatus"] == "ERROR" and "itemDetails" not in report
    assert stock_sim.stats()["feeds_processed"] == 2


async def test_generated_orders_take_stock_refuse_and_allow(stock_sim: WalmartSimulator, http) -> None:
    stock_sim.set_config({"skus": ["SCARCE-1", "SCARCE-2", "SCARCE-3"], "max_quantity": 1, "max_lines": 1})
    for sku in ("SCARCE-1", "SCARCE-2", "SCARCE-3"):
        stock_sim.listings.set(sku, 1)
    made = stock_sim.generate_orders(10)
    assert len(made) <= 3 and stock_sim.stats()["orders_refused"] == 10 - len(made)
    assert {ln["item"]["sku"] for o in made for ln in o["orderLines"]["orderLine"]} <= {
        "SCARCE-1",
        "SCARCE-2",
        "SCARCE-3",
    }
    async with http.put(f"{stock_sim.base_url}/_sim/config", json={"listing_mode": "allow"}) as resp:
        assert resp.status == 200
    body = {"lines": [{"sku": "SCARCE-1", "quantity": 2}]}
    async with http.post(f"{stock_sim.base_url}/_sim/orders", json=body) as resp:
        created = await resp.json()
    assert len(created["created"]) == 1 and created["refused"] == 0
    async with http.get(f"{stock_sim.base_url}/_sim/inventory") as resp:
        snapshot = await resp.json()
    assert snapshot["mode"] == "allow" and snapshot["items"]["SCARCE-1"]["quantity"] == 0
    assert snapshot["totals"]["oversold_units"] >= 1 and snapshot["totals"]["refused_units"] >= 7


async def test_cancel_lines_partially_then_wholly(
    stock_sim: WalmartSimulator, http: aiohttp.ClientSession
) -> None:
    order = stock_sim.create_order([("WM-KETTLE-01", 3), ("WM-MUG-4PK", 1)])
    assert order is not None
    po = order["purchaseOrderId"]
    stock_sim.acknowledge(po)
    token = await get_token(http, stock_sim)

    def cancel(number: str, amount: int, reason: str = "SELLER_CANCEL_OUT_OF_STOCK") -> JSON:
        status = {
            "status": "Cancelled",
            "cancellationReason": reason,
            "statusQuantity": {"unitOfMeasurement": "EACH", "amount": str(amount)},
        }
        return {
            "orderCancellation": {
                "orderLines": {
                    "orderLine": [{"lineNumber": number, "orderLineStatuses": {"orderLineStatus": [status]}}]
                }
            }
        }

    status, body, _ = await call(
        http, stock_sim, "POST", f"/v3/orders/{po}/cancel", token, json=cancel("1", 2)
    )
    assert status == 200
    line = body["order"]["orderLines"]["orderLine"][0]
    assert [
        (s["status"], s["statusQuantity"]["amount"]) for s in line["orderLineStatuses"]["orderLineStatus"]
    ] == [("Acknowledged", "1"), ("Cancelled", "2")]
    status, body, _ = await call(
        http, stock_sim, "POST", f"/v3/orders/{po}/cancel", token, json=cancel("1", 2)
    )
    assert status == 400 and first_error(body)["code"] == "INVALID_REQUEST_CONTENT.GMP_ORDER_API"
    for bad in (cancel("9", 1), cancel("2", 1, "BECAUSE"), cancel("2", 0), {}):
        status, _, _ = await call(http, stock_sim, "POST", f"/v3/orders/{po}/cancel", token, json=bad)
        assert status == 400
    status, body, _ = await call(
        http, stock_sim, "POST", f"/v3/orders/{po}/cancel", token, json=cancel("2", 1)
    )
    assert status == 200
    async with http.get(f"{stock_sim.base_url}/_sim/cancellations") as resp:
        records = await resp.json()
    assert [(r["order_id"], r["line_id"], r["sku"], r["quantity"]) for r in records] == [
        (po, "1", "WM-KETTLE-01", 2),
        (po, "2", "WM-MUG-4PK", 1),
    ]
    assert records[0]["reason"] == "SELLER_CANCEL_OUT_OF_STOCK"
    status, _, _ = await call(http, stock_sim, "POST", "/v3/orders/404/cancel", token, json=cancel("1", 1))
    assert status == 404


# --- shipping, refunds, buyer cancellation ---------------------------------------------------


def shipment_body(lines: list[tuple[str, int]], tracking: str = "1Z999", carrier: str = "UPS") -> JSON:
    info = {"shipDateTime": BASE_MS, "carrierName": {"carrier": carrier}, "methodCode": "Standard",
            "trackingNumber": tracking}
    return {"orderShipment": {"orderLines": {"orderLine": [
        {"lineNumber": n, "sellerOrderId": "SO-1", "orderLineStatuses": {"orderLineStatus": [
            {"status": "Shipped", "statusQuantity": {"unitOfMeasurement": "EACH", "amount": str(q)},
             "trackingInfo": info}]}}
        for n, q in lines]}}}


def refund_body(po: str, line: str, amount: float, reason: str = "DamagedItem", full: bool = False) -> JSON:
    return {"orderRefund": {"purchaseOrderId": po, "orderLines": {"orderLine": [
        {"lineNumber": line, "isFullRefund": full, "refunds": {"refund": [
            {"refundComments": "broken", "refundCharges": {"refundCharge": [
                {"refundReason": reason, "charge": {
                    "chargeType": "PRODUCT", "chargeName": "ItemPrice",
                    "chargeAmount": {"currency": "USD", "amount": -amount}}}]}}]}}]}}}


def statuses(order: JSON, line: str = "1") -> list[tuple[str, str]]:
    entry = next(ln for ln in order["orderLines"]["orderLine"] if ln["lineNumber"] == line)
    entries = entry["orderLineStatuses"]["orderLineStatus"]
    return [(s["status"], s["statusQuantity"]["amount"]) for s in entries]


async def test_shipping_splits_line_statuses_and_refuses_more_than_open(sim, http) -> None:
    order = sim.create_order([("WM-KETTLE-01", 3)])
    assert order is not None
    po, token = order["purchaseOrderId"], await get_token(http, sim)
    schema = spec_schema("OrderShipment")  # the spec points orderLines at RefundLinesType (a defect)
    schema["components"]["schemas"]["OrderShipmentRecord"]["properties"]["orderLines"] = {
        "$ref": "#/components/schemas/ShippingLinesType"}
    jsonschema.validate(shipment_body([("1", 1)]), schema)
    status, body, _ = await call(http, sim, "POST", f"/v3/orders/{po}/shipping", token,
                                 json=shipment_body([("1", 1)]))
    assert status == 200 and statuses(body["order"]) == [("Created", "2"), ("Shipped", "1")]
    shipped = body["order"]["orderLines"]["orderLine"][0]["orderLineStatuses"]["orderLineStatus"][1]
    assert shipped["trackingInfo"]["carrierName"] == {"carrier": "UPS"}
    status, body, _ = await call(http, sim, "POST", f"/v3/orders/{po}/shipping", token,
                                 json=shipment_body([("1", 3)], tracking="1Z2"))
    assert status == 400 and first_error(body)["code"] == "INVALID_REQUEST_CONTENT.GMP_ORDER_API"
    status, body, _ = await call(http, sim, "POST", f"/v3/orders/{po}/shipping", token,
                                 json=shipment_body([("1", 2)], tracking="1Z2", carrier="FedEx"))
    assert status == 200 and statuses(body["order"]) == [("Shipped", "1"), ("Shipped", "2")]
    status, body, _ = await call(http, sim, "POST", f"/v3/orders/{po}/shipping", token,
                                 json=shipment_body([("1", 1)], carrier="Pigeon Post"))
    assert status == 400 and "not a valid carrier" in first_error(body)["description"]


async def test_refund_records_money_and_full_refund_moves_units_to_refund(sim, http) -> None:
    order = sim.create_order([("WM-MUG-4PK", 1), ("WM-USB-C-2M", 2)])
    assert order is not None
    po, token = order["purchaseOrderId"], await get_token(http, sim)
    jsonschema.validate(refund_body(po, "1", 5), spec_schema("OrderRefund_json"))
    status, body, _ = await call(http, sim, "POST", f"/v3/orders/{po}/refund", token,
                                 json=refund_body(po, "1", 5))
    assert status == 400 and "not been shipped" in first_error(body)["description"]
    sim.book.ship(po, [("1", 1, {"trackingNumber": "T1"}), ("2", 2, {"trackingNumber": "T1"})])
    status, body, _ = await call(http, sim, "POST", f"/v3/orders/{po}/refund", token,
                                 json=refund_body(po, "1", 5))
    line = body["order"]["orderLines"]["orderLine"][0]
    assert status == 200 and statuses(body["order"]) == [("Shipped", "1")]
    assert line["refund"]["refundComments"] == "broken" and line["refund"]["refundId"]
    status, body, _ = await call(http, sim, "POST", f"/v3/orders/{po}/refund", token,
                                 json=refund_body(po, "1", 14.88, reason="Customer returned item"))
    assert status == 200 and statuses(body["order"]) == [("Refund", "1")]  # 5 + 14.88 = the item price
    status, body, _ = await call(http, sim, "POST", f"/v3/orders/{po}/refund", token,
                                 json=refund_body(po, "2", 500))
    assert status == 400 and "cannot refund" in first_error(body)["description"]
    status, body, _ = await call(http, sim, "POST", f"/v3/orders/{po}/refund", token,
                                 json=refund_body(po, "2", 1, reason="Because"))
    assert status == 400 and "refundReason" in first_error(body)["description"]
    assert [(r["line_id"], r["amount"]) for r in sim.refunds] == [("1", "5"), ("1", "14.88")]


async def test_buyer_cancel_shows_in_the_modified_orders_list(sim, http) -> None:
    sim.generate_orders(3)
    order = sim.create_order([("WM-LEGO-CITY", 2)])
    assert order is not None
    po, token = order["purchaseOrderId"], await get_token(http, sim)
    since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 60))
    query = f"/v3/orders?createdStartDate=2023-11-01&lastModifiedStartDate={since}"
    status, _, _ = await call(http, sim, "GET", query, token)
    assert status == 404  # nothing modified after a minute from now
    async with http.post(f"{sim.base_url}/_sim/orders/{po}/buyer-cancel") as resp:
        assert resp.status == 200
    sim.book.modified_ms[po] += 120_000  # as if cancelled two minutes from now
    status, body, _ = await call(http, sim, "GET", query + "&status=Cancelled", token)
    assert status == 200 and [o["purchaseOrderId"] for o in body["list"]["elements"]["order"]] == [po]
    entry = body["list"]["elements"]["order"][0]["orderLines"]["orderLine"][0]["orderLineStatuses"]
    assert entry["orderLineStatus"] == [{"status": "Cancelled",
                                         "cancellationReason": "CUSTOMER_REQUESTED_SELLER_TO_CANCEL",
                                         "statusQuantity": {"unitOfMeasurement": "EACH", "amount": "2"}}]
    with pytest.raises(ValueError, match="nothing left"):
        sim.cancel_by_buyer(po)
    assert sim.buyer_cancellations[0]["quantity"] == 2 and sim.cancellations == []
