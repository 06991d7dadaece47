"""Backorders end to end, on the real broker, a real worker, the ERP, the warehouse and Shopify
simulators: orders accepted without stock (policy ``backorder``) wait; each receipt in the ERP
releases the oldest waiting units that it covers to the warehouse as a fulfilment order of their
own; they ship, reach the ERP (delivery note) and the marketplace, and the order ends shipped.
Meanwhile the arrived goods are never offered for sale and nothing is oversold."""

from __future__ import annotations

from typing import Any

import pytest

from retail_sync.broker import free_port
from retail_sync.simulators.shopify.simulator import ShopifySimConfig, ShopifySimulator
from retail_sync.simulators.wms.simulator import WmsSimConfig, WmsSimulator
from retail_sync.stack import Stack, WorkerProcess
from tests.integration.helpers import SECRET, eventually

pytestmark = pytest.mark.integration

SKU = "BACK-A"


async def state_of(worker: WorkerProcess, key: str) -> dict[str, Any]:
    status, body = await worker.get_json(f"/orders/{key}")
    return body if status == 200 else {}


async def inventory(worker: WorkerProcess) -> dict[str, Any]:
    status, body = await worker.get_json(f"/inventory/{SKU}")
    return body if status == 200 else {}


async def test_receipts_release_backorders_oldest_first_and_they_ship(stack: Stack) -> None:
    erp = stack.erp
    assert erp is not None
    erp.set_stock(SKU, 1)
    port = free_port()
    shopify = ShopifySimulator(ShopifySimConfig(
        webhook_url=f"http://127.0.0.1:{port}/webhooks/shopify/orders/create", secret=SECRET,
        skus=[SKU], max_quantity=1, seed=31, listing_mode="allow"))  # sells past zero
    wms = WmsSimulator(WmsSimConfig(ship_delay_ms=200, seed=32))
    stack.env.update({
        "RETAIL_SYNC_SHOPIFY_ADMIN_BASE_URL": await shopify.start(),
        "RETAIL_SYNC_WMS_BASE_URL": await wms.start(),
        "RETAIL_SYNC_STOCK_POLICY": '{"shopify": "backorder"}',
        "RETAIL_SYNC_WMS_POLL_INTERVAL_S": "0.3",
        "RETAIL_SYNC_ERP_STOCK_POLL_INTERVAL_S": "0.3",
        "RETAIL_SYNC_ERP_ORDER_POLL_INTERVAL_S": "0.3",
    })
    try:
        worker = await stack.start_worker(ingress_port=port)
        await eventually(lambda: inventory(worker), timeout_s=60)  # the ERP's stock is known
        keys = []
        for _ in range(3):  # one has stock, two wait (in this order)
            order = await shopify.send_order([(SKU, 1)])
            assert order is not None
            keys.append(f"shopify:{order['id']}")
            await eventually(lambda k=keys[-1]: _decided(worker, k), timeout_s=30)
        first, second, third = keys
        decisions = [(await state_of(worker, k))["stock_decision"] for k in keys]
        assert decisions == ["accepted", "backorder", "backorder"]
        await eventually(lambda: _shipped_everywhere(worker, first), timeout_s=60)

        async def waiting(units: int) -> dict | None:
            view = await inventory(worker)
            return view if view.get("backordered_units") == units else None
        view = await eventually(lambda: waiting(2), timeout_s=30)
        assert view["ats"]["shopify"] == 0
        assert (await state_of(worker, second))["status"] == "erp_confirmed"  # nothing to pick

        erp.receive(SKU, 1)  # covers the oldest backorder only
        done = await eventually(lambda: _shipped_everywhere(worker, second), timeout_s=60)
        released = [t for t in done["timeline"] if t["event"] == "backorder_released"]
        assert len(released) == 1 and f"{second}#bo1" in released[0]["detail"]
        [fulfilment] = done["backorders"].values()
        assert fulfilment["reference"] == f"{second}#bo1" and fulfilment["wms_fulfilment_id"]
        [shipment] = done["shipments"].values()
        assert shipment["delivery_note"] and shipment["marketplace_confirmed_at"]
        third_state = await state_of(worker, third)
        assert third_state["status"] == "erp_confirmed" and not third_state["backorders"]
        view = await eventually(lambda: waiting(1), timeout_s=30)
        assert view["ats"]["shopify"] == 0  # the arrived unit was the backorder's, not for sale

        erp.receive(SKU, 2)  # the last backorder, and one unit for sale
        await eventually(lambda: _shipped_everywhere(worker, third), timeout_s=60)

        async def one_for_sale() -> dict | None:
            view = await inventory(worker)
            return view if view.get("backordered_units") == 0 and \
                view["ats"]["shopify"] == 1 and view["on_hand"] == 1 else None
        await eventually(one_for_sale, timeout_s=30)
        assert erp.stats()["oversold_units"] == 0
        references = sorted(o["reference"] for o in wms.orders)
        assert references == sorted([first, f"{second}#bo1", f"{third}#bo1"])
        assert all(o["status"] == "shipped" for o in wms.orders)
        # every id of a backorder fulfilment finds its order
        async def lookup() -> list[str] | None:
            status, found = await worker.get_json(
                f"/orders/lookup?id={fulfilment['wms_fulfilment_id']}")
            return [o["order_key"] for o in found["orders"]] if status == 200 else None
        assert await eventually(lookup, timeout_s=20) == [second]
    finally:
        await shopify.stop()
        await wms.stop()


async def _decided(worker: WorkerProcess, key: str) -> bool:
    return (await state_of(worker, key)).get("stock_decision") is not None


async def _shipped_everywhere(worker: WorkerProcess, key: str) -> dict | None:
    """Shipped, every shipment in the ERP (delivery note) and confirmed on the marketplace, every
    backorder release confirmed by the warehouse: the steps after the shipment land later."""
    state = await state_of(worker, key)
    shipments = list(state.get("shipments", {}).values())
    done = state.get("status") == "shipped" and bool(shipments) and all(
        s["delivery_note"] and s["marketplace_confirmed_at"] for s in shipments) and all(
        b["wms_fulfilment_id"] for b in state["backorders"].values())
    return state if done else None
