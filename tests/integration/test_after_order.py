"""After the order, end to end on the real broker, a real worker and every simulator (ERP, WMS
and the four marketplaces): shipments reach the ERP first (delivery note and invoice), then the
marketplace; partial shipments; cancellations before and after shipment, from the marketplace
and from the ERP; a return with goods back, credit note and refund; a shipment that arrives
before the ERP acknowledged the order; one trace per order, found by any system's id."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from retail_sync.broker import free_port
from retail_sync.connectors.wms.client import WmsClient
from retail_sync.simulators.amazon.simulator import AmazonSimConfig, AmazonSimulator
from retail_sync.simulators.regional.simulator import RegionalSimulator
from retail_sync.simulators.shopify.simulator import ShopifySimConfig, ShopifySimulator
from retail_sync.simulators.walmart.simulator import WalmartSimConfig, WalmartSimulator
from retail_sync.simulators.wms.simulator import WmsSimConfig, WmsSimulator
from retail_sync.stack import Stack, WorkerProcess
from retail_sync.streams.models import LineUnits
from tests.integration.helpers import SECRET, eventually

pytestmark = pytest.mark.integration

SKUS = ["AFTER-A", "AFTER-B"]


class World:
    """Every simulator of this test, and the settings that point a worker at them."""

    def __init__(self, workdir: Path, worker_port: int, *, hold: bool) -> None:
        webhook = f"http://127.0.0.1:{worker_port}/webhooks/shopify/orders/create"
        self.shopify = ShopifySimulator(ShopifySimConfig(
            webhook_url=webhook, secret=SECRET, skus=SKUS, max_quantity=1, seed=21))
        self.amazon = AmazonSimulator(AmazonSimConfig(time_scale=1000, seed=22, skus=SKUS,
                                                      max_quantity=1, mfn_rate=1.0))
        self.walmart = WalmartSimulator(WalmartSimConfig(seed=23, skus=SKUS, max_quantity=1))
        self.wms = WmsSimulator(WmsSimConfig(ship_delay_ms=200, return_delay_ms=200, hold=hold,
                                             seed=24))
        self.drop, self.outbox = workdir / "regional-drop", workdir / "regional-outbox"
        self.drop.mkdir(parents=True)
        self.regional = RegionalSimulator(self.drop, seed=25, outbox_dir=self.outbox)

    async def start(self) -> dict[str, str]:
        return {
            "RETAIL_SYNC_SHOPIFY_ADMIN_BASE_URL": await self.shopify.start(),
            "RETAIL_SYNC_AMAZON_BASE_URL": await self.amazon.start(),
            "RETAIL_SYNC_WALMART_BASE_URL": await self.walmart.start(),
            "RETAIL_SYNC_WMS_BASE_URL": await self.wms.start(),
            "RETAIL_SYNC_REGIONAL_DROP_DIR": str(self.drop),
            "RETAIL_SYNC_REGIONAL_OUTBOX_DIR": str(self.outbox),
            "RETAIL_SYNC_POLL_INTERVAL_S": "0.3",
            "RETAIL_SYNC_WMS_POLL_INTERVAL_S": "0.3",
            "RETAIL_SYNC_ERP_ORDER_POLL_INTERVAL_S": "0.3",
        }

    async def stop(self) -> None:
        for sim in (self.shopify, self.amazon, self.walmart, self.wms):
            await sim.stop()

    async def one_order_per_channel(self) -> dict[str, str]:
        """channel -> order key of one new order on each marketplace."""
        shop = await self.shopify.send_order([(SKUS[0], 1), (SKUS[1], 1)])
        assert shop is not None
        amazon_id = self.amazon.generate_orders(1)[0]
        walmart = self.walmart.create_order([(SKUS[0], 1), (SKUS[1], 1)])
        assert walmart is not None
        before = len(self.regional.good_refs)
        self.regional.write_batch(1)
        return {"shopify": f"shopify:{shop['id']}", "amazon": f"amazon:{amazon_id}",
                "walmart": f"walmart:{walmart['purchaseOrderId']}",
                "regional": f"regional:{self.regional.good_refs[before]}"}


async def state_of(worker: WorkerProcess, key: str) -> dict[str, Any] | None:
    status, body = await worker.get_json(f"/orders/{key}")
    return body if status == 200 else None


async def until(worker: WorkerProcess, key: str, check: Any, timeout_s: float = 60) -> dict:
    async def probe() -> dict | None:
        state = await state_of(worker, key)
        return state if state is not None and check(state) else None
    return await eventually(probe, timeout_s=timeout_s, every=0.3)


def confirmed_everywhere(state: dict) -> bool:
    shipments = state["shipments"].values()
    return state["status"] == "shipped" and bool(shipments) and all(
        s["delivery_note"] and s["sales_invoice"] and s["marketplace_confirmed_at"]
        for s in shipments)


async def post(worker: WorkerProcess, path: str, body: dict) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as session, \
            session.post(worker.url + path, data=orjson.dumps(body),
                         headers={**worker.headers, "Content-Type": "application/json"}) as resp:
        return resp.status, await resp.json(content_type=None)


async def exceptions(stack: Stack) -> list[dict]:
    return [orjson.loads(r.value) for r in await stack.read_topic("sync-exceptions")]


async def test_every_channel_ships_through_erp_then_marketplace_with_invoice(stack: Stack) -> None:
    port = free_port()
    world = World(stack.workdir, port, hold=False)
    stack.env.update(await world.start())
    try:
        worker = await stack.start_worker(ingress_port=port)
        keys = await world.one_order_per_channel()
        states = {c: await until(worker, k, confirmed_everywhere) for c, k in keys.items()}
    finally:
        await world.stop()
    erp = stack.erp
    assert erp is not None
    invoices = {doc["po_no"]: doc for doc in erp.finance.invoices.values()
                if not doc.get("is_return")}
    for channel, state in states.items():
        key = keys[channel]
        shipment = next(iter(state["shipments"].values()))
        # the trace: marketplace id, ERP sales order, WMS fulfilment, shipment, invoice
        assert state["correlation"]["erp_sales_order"] and state["correlation"]["wms_fulfilment_id"]
        events = [t["event"] for t in state["timeline"]]
        assert events.index("erp_delivery_note") < events.index("marketplace_ship_done"), events
        assert all(t["since_previous_s"] is not None for t in state["timeline"][1:])
        assert invoices[key]["name"] == shipment["sales_invoice"]
        for external in (shipment["sales_invoice"], shipment["tracking_number"],
                         state["correlation"]["erp_sales_order"]):
            status, found = await eventually(
                lambda e=external: _lookup(worker, e), timeout_s=20)
            assert key in [o["order_key"] for o in found["orders"]]
    # each marketplace shows the shipment in its own terms
    shop_order = world.shopify.orders[keys["shopify"].split(":", 1)[1]]
    assert shop_order["fulfillment_status"] == "fulfilled" and shop_order["fulfillments"]
    amazon_id = keys["amazon"].split(":", 1)[1]
    assert world.amazon.records[amazon_id].order["OrderStatus"] == "Shipped"
    world.regional.process_outbox()  # the marketplace reads our shipment file
    assert any(s["order_id"] == keys["regional"].split(":", 1)[1]
               for s in world.regional.shipments)
    assert erp.stats()["invoices"] >= 4


async def _lookup(worker: WorkerProcess, external: str) -> tuple[int, dict] | None:
    status, found = await worker.get_json(f"/orders/lookup?id={external}")
    return (status, found) if status == 200 else None


async def test_partial_shipment_cancellations_return_and_out_of_order(stack: Stack) -> None:
    port = free_port()
    world = World(stack.workdir, port, hold=True)  # the warehouse ships only when told
    stack.env.update(await world.start())
    erp = stack.erp
    assert erp is not None
    try:
        worker = await stack.start_worker(ingress_port=port)
        released = lambda s: s["correlation"]["wms_fulfilment_id"] is not None  # noqa: E731

        # partial shipment, then the rest (Amazon)
        amazon = "amazon:" + world.amazon.add_order(lines=[
            {"sku": SKUS[0], "quantity": 1, "unit_price": "10.00"},
            {"sku": SKUS[1], "quantity": 1, "unit_price": "12.00"}])
        walmart_order = world.walmart.create_order([(SKUS[0], 1), (SKUS[1], 1)])
        assert walmart_order is not None
        walmart = f"walmart:{walmart_order['purchaseOrderId']}"
        first = await world.shopify.send_order([(SKUS[0], 1), (SKUS[1], 1)])
        second = await world.shopify.send_order([(SKUS[0], 1), (SKUS[1], 1)])
        assert first and second
        cancel_me, ship_me = f"shopify:{first['id']}", f"shopify:{second['id']}"
        for key in (amazon, walmart, cancel_me, ship_me):
            await until(worker, key, released)

        state = await state_of(worker, amazon)
        line = state["order"]["lines"][0]["line_id"]
        world.wms.ship_now(amazon, [{"line_id": line, "quantity": 1}])
        partial = await until(worker, amazon, lambda s: s["status"] == "partially_shipped")
        assert len(partial["shipments"]) == 1
        world.wms.ship_now(amazon)
        await until(worker, amazon, confirmed_everywhere)

        # the marketplace cancels before shipment: warehouse stopped, ERP order cancelled
        await world.shopify.cancel_by_buyer(first["id"])
        cancelled = await until(worker, cancel_me, lambda s: s["status"] == "cancelled")
        so = cancelled["correlation"]["erp_sales_order"]
        assert erp.orders[so].doc["docstatus"] == 2
        assert any(o["reference"] == cancel_me and o["status"] == "cancelled"
                   for o in world.wms.orders)

        # the ERP cancels (fraud) before shipment: warehouse stopped, marketplace told
        walmart_state = await state_of(worker, walmart)
        erp.cancel_order(walmart_state["correlation"]["erp_sales_order"], "fraud")
        await until(worker, walmart, lambda s: s["status"] == "cancelled")
        await eventually(lambda: any(c["order_id"] == walmart_order["purchaseOrderId"]
                                     for c in world.walmart.cancellations), timeout_s=30)

        # shipped, then a cancellation is refused with a reason (Shopify itself refuses the
        # buyer's; customer service asks us anyway)
        world.wms.ship_now(ship_me)
        await until(worker, ship_me, confirmed_everywhere)
        with pytest.raises(ValueError, match="fulfilled"):
            await world.shopify.cancel_by_buyer(second["id"])
        status, answer = await post(worker, f"/orders/{ship_me}/cancel", {"reason": "changed mind"})
        assert status == 409 and "too late to cancel" in answer["error"], answer  # at the door
        assert (await state_of(worker, ship_me))["status"] == "shipped"

        # a return with goods back: return note, credit note, refund on Shopify, stock back
        shipped = await state_of(worker, ship_me)
        line = shipped["order"]["lines"][0]
        stock_before = {b["item_code"]: b["actual_qty"] for b in erp.bins()}
        status, body = await post(worker, f"/orders/{ship_me}/returns", {
            "lines": {line["line_id"]: 1}, "amount": "5.00", "reason": "damaged",
            "restock": True})
        assert status == 202, body
        refund_id = body["refund_id"]
        refunded = await until(worker, ship_me, lambda s: (
            s["refunds"].get(refund_id, {}).get("marketplace_refunded_at") is not None))
        record = refunded["refunds"][refund_id]
        assert record["credit_note"] and record["return_delivery_note"]
        assert refunded["status"] == "partially_refunded"
        assert any(r["note"] and refund_id in r["note"]
                   for r in world.shopify.orders[str(second["id"])].get("refunds", []))
        if line["sku"] in stock_before:
            bins = {b["item_code"]: b["actual_qty"] for b in erp.bins()}
            assert bins[line["sku"]] == stock_before[line["sku"]] + 1

        # a refund made on Shopify by the merchant: credited in the ERP, not refunded twice
        other = shipped["order"]["lines"][1]
        before = len(world.shopify.orders[str(second["id"])].get("refunds", []))
        await world.shopify.refund_by_merchant(second["id"], [(int(other["line_id"]), 1)], "2.00",
                                               restock_type="no_restock", note="goodwill")
        credited = await until(worker, ship_me, lambda s: any(
            r["source"] == "shopify" and r["credit_note"] for r in s["refunds"].values()))
        assert credited["status"] == "refunded"
        assert len(world.shopify.orders[str(second["id"])]["refunds"]) == before + 1

        # a shipment that arrives before the ERP acknowledged the order still converges
        erp.set_config({"latency_ms": 2500})
        late = await world.shopify.send_order([(SKUS[0], 1)])
        assert late is not None
        late_key = f"shopify:{late['id']}"
        client = WmsClient(world.wms.base_url or "", "demo-wms-key")
        try:  # the ERP released it to the warehouse directly; the warehouse ships at once
            lines = [LineUnits(line_id=str(li["id"]), sku=li["sku"], quantity=li["quantity"])
                     for li in late["line_items"]]
            await client.create_fulfilment_order(late_key, "released-by-erp", lines, None)
        finally:
            await client.close()
        world.wms.ship_now(late_key)
        early = await until(worker, late_key, lambda s: bool(s["shipments"]))
        assert early["correlation"]["erp_sales_order"] is None  # shipped before the ERP answered
        erp.set_config({"latency_ms": 0})
        converged = await until(worker, late_key, confirmed_everywhere)
        assert converged["correlation"]["erp_sales_order"]
    finally:
        await world.stop()


