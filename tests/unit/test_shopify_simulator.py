"""The Shopify simulator: signing, order consistency, webhook delivery semantics, Admin API."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections import Counter
from collections.abc import AsyncIterator, Callable
from decimal import Decimal

import aiohttp
import pytest
from aiohttp import web

from retail_sync.simulators.bucket import Bucket
from retail_sync.simulators.shopify.orders import ShopifyOrderFactory
from retail_sync.simulators.shopify.simulator import ShopifySimConfig, ShopifySimulator, sign

SECRET = "shpss_test_secret"


class Receiver:
    """A tiny webhook endpoint recording every delivery; the first ``fail_first`` get a 500."""

    def __init__(self, fail_first: int = 0) -> None:
        self.fail_first = fail_first
        self.calls: list[tuple[dict[str, str], bytes]] = []
        self.runner: web.AppRunner | None = None

    async def handle(self, request: web.Request) -> web.Response:
        self.calls.append((dict(request.headers), await request.read()))
        if len(self.calls) <= self.fail_first:
            return web.Response(status=500)
        return web.Response(status=200)

    async def start(self) -> str:
        app = web.Application()
        app.router.add_post("/webhooks/shopify/{resource}/{event}", self.handle)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", 0).start()
        return f"http://127.0.0.1:{self.runner.addresses[0][1]}/webhooks/shopify/orders/create"

    def topics(self) -> list[str]:
        return [h["X-Shopify-Topic"] for h, _ in self.calls]

    def webhook_ids(self) -> Counter[str]:
        return Counter(h["X-Shopify-Webhook-Id"] for h, _ in self.calls)


@pytest.fixture
async def receiver_factory() -> AsyncIterator[Callable[[int], Receiver]]:
    made: list[Receiver] = []

    def make(fail_first: int = 0) -> Receiver:
        made.append(Receiver(fail_first))
        return made[-1]

    yield make
    for r in made:
        if r.runner:
            await r.runner.cleanup()


def config(url: str, **kw: object) -> ShopifySimConfig:
    base: dict[str, object] = {"rate_per_s": 500, "retry_backoff_s": 0.01, "seed": 3}
    return ShopifySimConfig(webhook_url=url, secret=SECRET, **{**base, **kw})  # type: ignore[arg-type]


def test_sign_matches_independent_hmac() -> None:
    body = b'{"id":450789469,"email":"bob.norman@hostmail.com"}'
    expected = base64.b64encode(hmac.new(b"hush", body, hashlib.sha256).digest()).decode()
    assert sign(body, "hush") == expected
    # Wikipedia's HMAC-SHA256 example (hex f7bc83f4...3cd8), base64-encoded as Shopify sends it
    fox = b"The quick brown fox jumps over the lazy dog"
    assert sign(fox, "key") == "97yD9DBThCSxMpjmqm+xQ+9NWaFJRhdZl0edvC0aPNg="


def test_factory_orders_are_consistent() -> None:
    factory = ShopifyOrderFactory(seed=42)
    orders = [factory.order() for _ in range(200)]
    ids = [o["id"] for o in orders]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    assert [o["order_number"] for o in orders[:2]] == [1001, 1002] and orders[0]["name"] == "#1001"
    for o in orders:
        d = {
            k: Decimal(o[k])
            for k in (
                "subtotal_price",
                "total_price",
                "total_tax",
                "total_discounts",
                "total_line_items_price",
            )
        }
        shipping = sum(Decimal(s["price"]) for s in o["shipping_lines"])
        lines = sum(Decimal(li["price"]) * li["quantity"] for li in o["line_items"])
        line_tax = sum(Decimal(t["price"]) for li in o["line_items"] for t in li["tax_lines"])
        assert d["total_line_items_price"] == lines and d["total_tax"] == line_tax
        assert d["subtotal_price"] == lines - d["total_discounts"]
        assert (
            d["total_price"]
            == d["total_line_items_price"] + d["total_tax"] + shipping - d["total_discounts"]
        )
        assert o["created_at"].endswith("-05:00") and o["financial_status"] in {
            "paid",
            "authorized",
            "pending",
        }
        assert all(
            isinstance(o[k], str) and o[k].count(".") == 1 and len(o[k].split(".")[1]) == 2
            for k in d
        )
    assert ShopifyOrderFactory(seed=42).order()["id"] == ids[0]  # seeded runs repeat


def test_bad_payloads() -> None:
    factory = ShopifyOrderFactory(seed=1)
    with pytest.raises(json.JSONDecodeError):
        json.loads(factory.malformed_body())
    for _ in range(20):
        o = factory.unmappable_order()
        defective = (
            "id" not in o
            or not o["line_items"]
            or o["currency"] == "US$"
            or any(li["quantity"] == 0 for li in o["line_items"])
        )
        assert defective


async def test_delivers_count_with_shopify_headers(
    receiver_factory: Callable[[int], Receiver],
) -> None:
    receiver = receiver_factory(0)
    sim = ShopifySimulator(config(await receiver.start()))
    stats = await sim.send_orders(count=20)
    assert (
        len(receiver.calls) == 20
        and stats["delivered_2xx"] == 20
        and stats["orders_generated"] == 20
    )
    headers, body = receiver.calls[0]
    assert headers["X-Shopify-Topic"] == "orders/create"
    assert headers["X-Shopify-Hmac-Sha256"] == sign(body, SECRET)
    assert headers["X-Shopify-Shop-Domain"] == "retail-sync-demo.myshopify.com"
    assert headers["X-Shopify-API-Version"] == "2024-04"
    assert headers["Content-Type"] == "application/json"
    assert {"X-Shopify-Event-Id", "X-Shopify-Triggered-At"} <= set(headers)
    assert "line_items" in json.loads(body)  # the bare order, not {"order": ...}
    assert len(receiver.webhook_ids()) == 20
    assert sim.accepted_order_ids() == set(sim.first_sent_at) == set(sim.orders)


async def test_retries_500_with_same_webhook_id(
    receiver_factory: Callable[[int], Receiver],
) -> None:
    receiver = receiver_factory(2)
    sim = ShopifySimulator(config(await receiver.start()))
    stats = await sim.send_orders(count=1)
    assert len(receiver.calls) == 3 and len(receiver.webhook_ids()) == 1
    assert len({body for _, body in receiver.calls}) == 1
    assert (stats["retries"], stats["delivered_2xx"], stats["failed_deliveries"]) == (2, 1, 0)
    assert stats["status_counts"] == {"500": 2, "200": 1}
    assert len(sim.accepted_order_ids()) == 1


async def test_gives_up_after_max_attempts(receiver_factory: Callable[[int], Receiver]) -> None:
    receiver = receiver_factory(100)
    sim = ShopifySimulator(config(await receiver.start(), max_attempts=3))
    stats = await sim.send_orders(count=2)
    assert len(receiver.calls) == 6 and stats["failed_deliveries"] == 2
    assert not sim.accepted_order_ids() and len(sim.failed_order_ids()) == 2


async def test_duplicate_rate_one_sends_each_delivery_twice(
    receiver_factory: Callable[[int], Receiver],
) -> None:
    receiver = receiver_factory(0)
    sim = ShopifySimulator(config(await receiver.start(), duplicate_rate=1.0))
    stats = await sim.send_orders(count=5)
    assert len(receiver.calls) == 10 and stats["duplicates_sent"] == 5
    assert set(receiver.webhook_ids().values()) == {2}


async def test_bad_payloads_are_signed_and_counted(
    receiver_factory: Callable[[int], Receiver],
) -> None:
    receiver = receiver_factory(0)
    sim = ShopifySimulator(config(await receiver.start(), malformed_rate=0.5, unmappable_rate=0.5))
    stats = await sim.send_orders(count=10)
    assert (
        stats["malformed_sent"] + stats["unmappable_sent"] == 10 and stats["orders_generated"] == 0
    )
    assert all(h["X-Shopify-Hmac-Sha256"] == sign(b, SECRET) for h, b in receiver.calls)
    assert sum(stats["final_status_by_kind"]["malformed"].values()) == stats["malformed_sent"]


async def test_connection_errors_are_retried_then_failed() -> None:
    sim = ShopifySimulator(config("http://127.0.0.1:9/nowhere", max_attempts=2))
    stats = await sim.send_orders(count=1)
    assert stats["status_counts"] == {"connection_error": 2} and stats["failed_deliveries"] == 1


async def test_duration_and_stop_sending(receiver_factory: Callable[[int], Receiver]) -> None:
    receiver = receiver_factory(0)
    sim = ShopifySimulator(config(await receiver.start(), rate_per_s=50))
    stats = await sim.send_orders(duration_s=0.2)
    assert 5 <= stats["orders_generated"] <= 12
    sim.stop_sending()
    assert (await sim.send_orders(count=3))["orders_generated"] == stats["orders_generated"] + 3


@pytest.fixture
async def admin(receiver_factory: Callable[[int], Receiver]) -> AsyncIterator[ShopifySimulator]:
    receiver = receiver_factory(0)
    sim = ShopifySimulator(config(await receiver.start()))
    await sim.send_orders(count=5)
    await sim.start()
    yield sim
    await sim.stop()


async def test_admin_api_auth_and_reads(admin: ShopifySimulator) -> None:
    token = {"X-Shopify-Access-Token": "shpat_demo"}
    async with aiohttp.ClientSession(base_url=admin.base_url) as http:
        async with http.get("/admin/api/2024-04/orders.json") as resp:
            assert resp.status == 401
            assert "Invalid API key or access token" in (await resp.json())["errors"]
        async with http.get("/admin/api/2024-04/orders.json", headers=token) as resp:
            assert resp.status == 200 and resp.headers["X-Shopify-Shop-Api-Call-Limit"] == "1/40"
            orders = (await resp.json())["orders"]
        assert len(orders) == 5
        first = orders[0]["id"]
        params = {"since_id": str(first), "limit": "2", "status": "any"}
        async with http.get("/admin/api/2024-04/orders.json", params=params, headers=token) as resp:
            assert [o["id"] for o in (await resp.json())["orders"]] == [
                o["id"] for o in orders[1:3]
            ]
        async with http.get(f"/admin/api/2024-04/orders/{first}.json", headers=token) as resp:
            assert (await resp.json())["order"]["id"] == first
        async with http.get("/admin/api/2024-04/orders/1.json", headers=token) as resp:
            assert resp.status == 404 and await resp.json() == {"errors": "Not Found"}
        async with http.get("/_sim/stats") as resp:
            assert (await resp.json())["orders_generated"] == 5


async def test_admin_api_bucket_fills_to_429(admin: ShopifySimulator) -> None:
    token = {"X-Shopify-Access-Token": "shpat_demo"}
    statuses = []
    async with aiohttp.ClientSession(base_url=admin.base_url) as http:
        for _ in range(45):
            async with http.get("/admin/api/2024-04/orders.json?limit=1", headers=token) as resp:
                statuses.append(resp.status)
                last = resp
    assert statuses[:39] == [200] * 39 and statuses[-1] == 429
    assert (
        last.headers["Retry-After"] == "2.0"
        and last.headers["X-Shopify-Shop-Api-Call-Limit"] == "40/40"
    )


def test_leaky_bucket_leaks() -> None:
    now = [0.0]
    bucket = Bucket.leaky(capacity=40, leak_per_s=2.0, clock=lambda: now[0])
    assert all(bucket.take() for _ in range(40)) and not bucket.take()
    assert bucket.header() == "40/40"
    now[0] = 1.0
    assert bucket.take() and bucket.take() and not bucket.take()


# --- stock: listings, inventory levels, seller cancellations ---------------------------------

ADMIN = "/admin/api/2024-04"
TOKEN = {"X-Shopify-Access-Token": "shpat_demo"}


@pytest.fixture
async def stock_sim(receiver_factory: Callable[[int], Receiver]) -> AsyncIterator[ShopifySimulator]:
    receiver = receiver_factory(0)
    sim = ShopifySimulator(config(await receiver.start()))
    await sim.start()
    yield sim
    await sim.stop()


async def test_inventory_levels_set_products_and_locations(stock_sim: ShopifySimulator) -> None:
    async with aiohttp.ClientSession(base_url=stock_sim.base_url) as http:
        async with http.get(f"{ADMIN}/locations.json", headers=TOKEN) as resp:
            (location,) = (await resp.json())["locations"]
        assert location["active"] and location["id"] == stock_sim.config.location_id
        async with http.get(f"{ADMIN}/products.json", headers=TOKEN) as resp:
            products = (await resp.json())["products"]
        variants = {p["variants"][0]["sku"]: p["variants"][0] for p in products}
        assert set(variants) == set(ShopifyOrderFactory().skus)
        item = variants["IPOD2008RED"]["inventory_item_id"]
        body = {"location_id": location["id"], "inventory_item_id": item, "available": 6}
        async with http.post(f"{ADMIN}/inventory_levels/set.json", json=body, headers=TOKEN) as resp:
            assert resp.status == 200 and "X-Shopify-Shop-Api-Call-Limit" in resp.headers
            level = (await resp.json())["inventory_level"]
        assert level["available"] == 6 and level["inventory_item_id"] == item
        assert stock_sim.listings.quantity("IPOD2008RED") == 6
        levels = f"{ADMIN}/inventory_levels.json?inventory_item_ids={item}"
        async with http.get(levels, headers=TOKEN) as resp:
            assert [lv["available"] for lv in (await resp.json())["inventory_levels"]] == [6]
        for bad in ({**body, "available": -1}, {**body, "inventory_item_id": 1}, {**body, "location_id": 2}):
            async with http.post(f"{ADMIN}/inventory_levels/set.json", json=bad, headers=TOKEN) as resp:
                assert resp.status == 422 and "errors" in await resp.json()
        async with http.get("/_sim/inventory") as resp:
            snapshot = await resp.json()
        assert snapshot["items"]["IPOD2008RED"]["quantity"] == 6 and snapshot["mode"] == "refuse"


async def test_generated_orders_sell_from_listings_refuse_then_allow(stock_sim: ShopifySimulator) -> None:
    async with aiohttp.ClientSession(base_url=stock_sim.base_url) as http:
        changes = {"skus": ["SCARCE-1", "SCARCE-2", "SCARCE-3"], "max_quantity": 1}
        async with http.put("/_sim/config", json=changes) as resp:
            assert resp.status == 200 and (await resp.json())["skus"] == changes["skus"]
        async with http.put("/_sim/config", json={"listing_mode": "maybe"}) as resp:
            assert resp.status == 400
    for sku in changes["skus"]:
        stock_sim.listings.set(sku, 1)
    stats = await stock_sim.send_orders(count=10)
    assert stats["orders_generated"] + stats["orders_refused"] == 10 and stats["orders_refused"] >= 7
    skus = {li["sku"] for o in stock_sim.orders.values() for li in o["line_items"]}
    assert skus <= set(changes["skus"])
    totals = stock_sim.listings.snapshot()["totals"]
    assert totals["sold_units"] <= 3 and totals["refused_units"] >= 7 and totals["oversold_units"] == 0
    stock_sim.set_config({"listing_mode": "allow"})
    assert (await stock_sim.send_orders(count=3))["orders_refused"] == stats["orders_refused"]
    assert stock_sim.listings.snapshot()["totals"]["oversold_units"] >= 3


async def test_sim_orders_endpoint_creates_one_specific_order(stock_sim: ShopifySimulator) -> None:
    stock_sim.listings.set("MUG-CLASSIC", 2)
    async with aiohttp.ClientSession(base_url=stock_sim.base_url) as http:
        body = {"lines": [{"sku": "MUG-CLASSIC", "quantity": 2}]}
        async with http.post("/_sim/orders", json=body) as resp:
            made = await resp.json()
        assert not made["refused"] and made["delivered"]
        assert [(li["sku"], li["quantity"]) for li in made["order"]["line_items"]] == [("MUG-CLASSIC", 2)]
        async with http.post("/_sim/orders", json=body) as resp:
            assert (await resp.json())["refused"]
    assert stock_sim.listings.quantity("MUG-CLASSIC") == 0


async def test_cancel_and_refunds_like_shopify(stock_sim: ShopifySimulator) -> None:
    order = await stock_sim.send_order([("IPOD2008RED", 3), ("MUG-CLASSIC", 1)])
    assert order is not None
    oid, red = order["id"], order["line_items"][0]["id"]
    refund = {"refund": {"note": "oos", "refund_line_items": [
        {"line_item_id": red, "quantity": 2, "restock_type": "cancel"}]}}
    async with aiohttp.ClientSession(base_url=stock_sim.base_url) as http:
        async with http.post(f"{ADMIN}/orders/{oid}/refunds.json", json=refund, headers=TOKEN) as resp:
            assert resp.status == 201 and (await resp.json())["refund"]["order_id"] == oid
        refund["refund"]["refund_line_items"][0]["quantity"] = 2  # only 1 left
        async with http.post(f"{ADMIN}/orders/{oid}/refunds.json", json=refund, headers=TOKEN) as resp:
            assert resp.status == 422
        async with http.post(f"{ADMIN}/orders/{oid}/cancel.json", json={"reason": "inventory"},
                             headers=TOKEN) as resp:
            cancelled = (await resp.json())["order"]
        assert cancelled["cancel_reason"] == "inventory" and cancelled["cancelled_at"]
        async with http.post(f"{ADMIN}/orders/{oid}/cancel.json", json={"reason": "inventory"},
                             headers=TOKEN) as resp:
            assert resp.status == 422 and "already been cancelled" in (await resp.json())["error"]
        async with http.get(f"{ADMIN}/orders/{oid}/refunds.json", headers=TOKEN) as resp:
            assert len((await resp.json())["refunds"]) == 2
        async with http.get("/_sim/cancellations") as resp:
            records = await resp.json()
    assert [(r["sku"], r["quantity"], r["reason"]) for r in records] == [
        ("IPOD2008RED", 2, "oos"), ("IPOD2008RED", 1, "inventory"), ("MUG-CLASSIC", 1, "inventory")]
    assert set(records[0]) == {"order_id", "line_id", "sku", "quantity", "reason", "at"}


# --- fulfillments, money refunds, buyer cancellations, merchant refunds -----------------------


async def admin_call(sim: ShopifySimulator, method: str, path: str,
                     body: dict | None = None) -> tuple[int, dict]:
    url = f"{sim.base_url}/admin/api/2021-10/{path}"
    async with aiohttp.ClientSession() as http, http.request(
            method, url, json=body, headers={"X-Shopify-Access-Token": "shpat_demo"}) as resp:
        return resp.status, await resp.json()


@pytest.fixture
async def shop(receiver_factory) -> AsyncIterator[tuple[ShopifySimulator, Receiver]]:
    receiver = receiver_factory()
    url = await receiver.start()
    simulator = ShopifySimulator(ShopifySimConfig(webhook_url=url, secret=SECRET, seed=9))
    await simulator.start()
    yield simulator, receiver
    await simulator.stop()


async def test_partial_then_full_fulfillment_and_over_fulfilment_is_422(shop) -> None:
    sim, _ = shop
    order = await sim.send_order([("IPOD2008RED", 2), ("MUG-CLASSIC", 1)])
    assert order is not None
    oid, (red, mug) = order["id"], [li["id"] for li in order["line_items"]]
    body = {"fulfillment": {"location_id": sim.config.location_id, "tracking_number": "1Z1",
                            "tracking_company": "UPS", "line_items": [{"id": red, "quantity": 1}],
                            "notify_customer": True}}
    status, created = await admin_call(sim, "POST", f"orders/{oid}/fulfillments.json", body)
    fulfillment = created["fulfillment"]
    assert status == 201 and fulfillment["status"] == "success" and fulfillment["order_id"] == oid
    assert fulfillment["tracking_urls"] == ["https://www.ups.com/track?tracknum=1Z1"]
    assert sim.orders[str(oid)]["fulfillment_status"] == "partial"
    body["fulfillment"]["line_items"] = [{"id": red, "quantity": 2}]
    status, error = await admin_call(sim, "POST", f"orders/{oid}/fulfillments.json", body)
    assert status == 422 and "exceeds fulfillable" in error["errors"]["base"][0]
    body["fulfillment"]["line_items"] = [{"id": red, "quantity": 1}, {"id": mug, "quantity": 1}]
    assert (await admin_call(sim, "POST", f"orders/{oid}/fulfillments.json", body))[0] == 201
    assert sim.orders[str(oid)]["fulfillment_status"] == "fulfilled"
    status, listed = await admin_call(sim, "GET", f"orders/{oid}/fulfillments.json")
    names = [f["name"] for f in listed["fulfillments"]]
    assert status == 200 and names == [f"{order['name']}.1", f"{order['name']}.2"]
    status, error = await admin_call(sim, "POST", f"orders/{oid}/cancel.json", {"reason": "other"})
    assert status == 422 and "fulfilled" in error["error"]


async def test_money_refunds_set_financial_status(shop) -> None:
    sim, _ = shop
    order = await sim.send_order([("TSHIRT-M-BLU", 2)])
    assert order is not None
    oid, line = order["id"], order["line_items"][0]["id"]
    sim.orders[str(oid)]["financial_status"] = "paid"
    everything = {"fulfillment": {"tracking_number": "X"}}  # no line_items: all of it
    await admin_call(sim, "POST", f"orders/{oid}/fulfillments.json", everything)

    def refund(kind: str, amount: str) -> dict:
        return {"refund": {"note": kind, "refund_line_items": [
            {"line_item_id": line, "quantity": 1, "restock_type": kind}],
            "transactions": [{"kind": "refund", "amount": amount, "gateway": "shopify_payments"}]}}

    status, created = await admin_call(sim, "POST", f"orders/{oid}/refunds.json", refund("return", "10.00"))
    assert status == 201 and created["refund"]["transactions"][0]["amount"] == "10.00"
    assert sim.orders[str(oid)]["financial_status"] == "partially_refunded"
    status, error = await admin_call(sim, "POST", f"orders/{oid}/refunds.json", refund("no_restock", "99999"))
    assert status == 422 and "exceeds" in error["errors"]["transactions"][0]
    rest = str(Decimal(order["total_price"]) - Decimal("10.00"))
    assert (await admin_call(sim, "POST", f"orders/{oid}/refunds.json", refund("no_restock", rest)))[0] == 201
    assert sim.orders[str(oid)]["financial_status"] == "refunded"
    status, listed = await admin_call(sim, "GET", f"orders/{oid}/refunds.json")
    assert [r["refund_line_items"][0]["restock_type"] for r in listed["refunds"]] == ["return", "no_restock"]


async def test_buyer_cancellation_sends_a_signed_orders_cancelled_webhook(shop) -> None:
    sim, receiver = shop
    order = await sim.send_order([("IPOD2008GREEN", 1)])
    assert order is not None
    async with aiohttp.ClientSession() as http, http.post(
            f"{sim.base_url}/_sim/orders/{order['id']}/buyer-cancel") as resp:
        assert resp.status == 200
    headers, body = receiver.calls[-1]
    assert receiver.topics() == ["orders/create", "orders/cancelled"]
    assert headers["X-Shopify-Hmac-Sha256"] == sign(body, SECRET)
    cancelled = json.loads(body)
    assert cancelled["id"] == order["id"] and cancelled["cancel_reason"] == "customer"
    assert cancelled["cancelled_at"]
    assert cancelled["refunds"][0]["refund_line_items"][0]["restock_type"] == "cancel"
    assert sim.cancellations == [] and len(sim.buyer_cancellations) == 1
    with pytest.raises(ValueError, match="already been cancelled"):
        await sim.cancel_by_buyer(str(order["id"]))


async def test_merchant_refund_sends_refunds_create(shop) -> None:
    sim, receiver = shop
    order = await sim.send_order([("MUG-CLASSIC", 2)])
    assert order is not None
    sim.orders[str(order["id"])]["financial_status"] = "paid"
    line = order["line_items"][0]["id"]
    refund = await sim.refund_by_merchant(str(order["id"]), [(line, 1)], "5.00", restock_type="no_restock")
    assert receiver.topics()[-1] == "refunds/create"
    assert json.loads(receiver.calls[-1][1])["id"] == refund["id"]
    assert sim.orders[str(order["id"])]["financial_status"] == "partially_refunded"
    with pytest.raises(ValueError, match="fulfilled unit"):
        await sim.refund_by_merchant(str(order["id"]), [(line, 1)], "1.00")  # return: nothing shipped


async def test_an_order_edit_sends_a_signed_orders_updated_webhook(shop) -> None:
    sim, receiver = shop
    order = await sim.send_order([("IPOD2008GREEN", 3), ("MUG-CLASSIC", 1)])
    assert order is not None
    first, second = (li["id"] for li in order["line_items"])
    created_at_update = order["updated_at"]
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{sim.base_url}/_sim/orders/{order['id']}/edit",
                             json={"line_item_id": first, "quantity": 1}) as resp:
            assert resp.status == 200
        assert receiver.topics() == ["orders/create", "orders/updated"]
        headers, body = receiver.calls[-1]
        assert headers["X-Shopify-Hmac-Sha256"] == sign(body, SECRET)
        assert receiver.webhook_ids()[headers["X-Shopify-Webhook-Id"]] == 1
        edited = json.loads(body)
        assert [(li["quantity"], li["current_quantity"]) for li in edited["line_items"]] == [
            (3, 1), (1, 1)]
        assert edited["updated_at"] > created_at_update
        assert Decimal(edited["current_subtotal_price"]) < Decimal(edited["subtotal_price"])
        assert sim.edits == [{"order_id": str(order["id"]), "line_item_id": first,
                              "sku": "IPOD2008GREEN", "before": 3, "after": 1,
                              "at": edited["updated_at"]}]
        for change, status in (({"line_item_id": first, "quantity": 1}, 422),  # no change
                               ({"line_item_id": first, "quantity": 2}, 422),  # more units
                               ({"line_item_id": 1, "quantity": 0}, 404),
                               ({"line_item_id": second}, 400)):
            async with http.post(f"{sim.base_url}/_sim/orders/{order['id']}/edit",
                                 json=change) as resp:
                assert resp.status == status, (change, await resp.text())
    await sim.cancel_by_buyer(str(order["id"]))
    with pytest.raises(ValueError, match="cancelled"):
        await sim.edit_order(str(order["id"]), second, 0)
    assert receiver.topics() == ["orders/create", "orders/updated", "orders/cancelled"]


async def test_edit_rate_edits_a_share_of_orders_after_creation(receiver_factory) -> None:
    receiver = receiver_factory(0)
    sim = ShopifySimulator(config(await receiver.start(), edit_rate=1.0, edit_delay_s=0.01,
                                  max_quantity=3))
    await sim.send_orders(count=12)
    creates = [json.loads(b) for h, b in receiver.calls if h["X-Shopify-Topic"] == "orders/create"]
    updates = [json.loads(b) for h, b in receiver.calls if h["X-Shopify-Topic"] == "orders/updated"]
    editable = [o for o in creates
                if len(o["line_items"]) > 1 or any(li["quantity"] > 1 for li in o["line_items"])]
    assert editable and len(updates) == len(sim.edits) == len(editable)
    for body in updates:
        assert sum(li["current_quantity"] for li in body["line_items"]) == \
            sum(li["quantity"] for li in body["line_items"]) - 1 or \
            any(li["current_quantity"] == 0 for li in body["line_items"])
    plain = ShopifySimulator(config(await receiver_factory(0).start()))  # default: no edits
    await plain.send_orders(count=5)
    assert plain.edits == []
