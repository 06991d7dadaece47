"""Shopify order edits, end to end (issue 12 item 3): the Shopify simulator edits an order and
sends the signed ``orders/updated`` webhook to a real worker's ingress (real broker, ERP and WMS
simulators). Under the default edit policy (``apply``) an edit made before the ERP has the order
is taken: the ERP gets the edited quantities and the stock a removed line held comes back. An
edit once the ERP has the order is never dropped silently: a timeline entry and exactly one
exception naming the sales order to amend."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from retail_sync.simulators.shopify.simulator import ShopifySimConfig, ShopifySimulator
from retail_sync.simulators.wms.simulator import WmsSimConfig, WmsSimulator
from retail_sync.stack import Stack, WorkerProcess
from tests.integration.helpers import SECRET, eventually, stock_agrees_with_erp

pytestmark = pytest.mark.integration

SKUS = ["EDIT-A", "EDIT-B"]
STOCK = 10


async def _state(worker: WorkerProcess, key: str, check: Any) -> dict[str, Any] | None:
    status, state = await worker.get_json(f"/orders/{key}")
    return state if status == 200 and check(state) else None


def _events(state: dict[str, Any]) -> list[str]:
    return [t["event"] for t in state["timeline"]]


async def _edit_exceptions(stack: Stack, key: str) -> list[dict[str, Any]]:
    records = [orjson.loads(r.value) for r in await stack.read_topic("sync-exceptions")]
    return [r for r in records if r.get("order_key") == key and "was edited" in r["reason"]]


async def _free(worker: WorkerProcess, sku: str) -> int:
    status, view = await worker.get_json(f"/inventory/{sku}")
    assert status == 200, view
    return int(view["free"])


async def _setup(stack: Stack) -> tuple[WorkerProcess, ShopifySimulator, WmsSimulator]:
    assert stack.erp is not None
    for sku in SKUS:
        stack.erp.set_stock(sku, STOCK)
    wms = WmsSimulator(WmsSimConfig(hold=True, seed=52))  # nothing ships by itself
    stack.env.update({"RETAIL_SYNC_WMS_BASE_URL": await wms.start(),
                      "RETAIL_SYNC_WMS_POLL_INTERVAL_S": "0.3",
                      "RETAIL_SYNC_ERP_BACKOFF_MAX_S": "0.5"})
    shop = ShopifySimulator(ShopifySimConfig(webhook_url="http://127.0.0.1:9/unset", secret=SECRET,
                                             seed=51, skus=SKUS, retry_backoff_s=0.1))
    stack.env.update({"RETAIL_SYNC_SHOPIFY_ADMIN_BASE_URL": await shop.start(),
                      "RETAIL_SYNC_SHOPIFY_ACCESS_TOKEN": shop.config.access_token})
    worker = await stack.start_worker()
    shop.set_config({"webhook_url": worker.webhook_url()})
    # the worker lists the ERP's stock on Shopify first (the listings refuse sales beyond it)
    await eventually(lambda: all(shop.listings.quantity(s) == STOCK for s in SKUS), timeout_s=60)
    return worker, shop, wms


async def test_an_edit_before_the_erp_post_reaches_the_erp_and_releases_stock(stack: Stack) -> None:
    erp = stack.erp
    assert erp is not None
    worker, shop, wms = await _setup(stack)
    try:
        erp.set_config({"api_secret": "rotated"})  # the ERP refuses us: the order waits before it
        order = await shop.send_order([(SKUS[0], 3), (SKUS[1], 2)])
        assert order is not None
        key = f"shopify:{order['id']}"
        await eventually(lambda: _state(worker, key, lambda s: s["status"] == "erp_failed"),
                         timeout_s=60)
        assert await _free(worker, SKUS[1]) == STOCK - 2  # held for the order
        line_a, line_b = (li["id"] for li in order["line_items"])
        await shop.edit_order(str(order["id"]), line_a, 1)  # the merchant edits: 3 -> 1 ...
        await shop.edit_order(str(order["id"]), line_b, 0)  # ... and removes the other line
        state = await eventually(lambda: _state(
            worker, key, lambda s: _events(s).count("order_edited") == 2), timeout_s=60)
        assert [(ln["sku"], ln["quantity"]) for ln in state["order"]["lines"]] == [(SKUS[0], 1)]
        # the removed line's units are free again at once, and Shopify is told
        await eventually(lambda: _free_is(worker, SKUS[1], STOCK), timeout_s=30)
        await eventually(lambda: shop.listings.quantity(SKUS[1]) == STOCK, timeout_s=60)

        erp.set_config({"api_secret": "demo-secret"})  # the cause is fixed: replay the order
        status, result = await worker.post_json("/exceptions/replay", {"kind": "erp_permanent"})
        assert status == 200 and result["replayed"] >= 1, result
        # the replay went to the order agent (not the kept request to the ERP dispatch)
        assert all(r["target"].endswith(".order-events") for r in result["results"]), result
        state = await eventually(lambda: _state(
            worker, key, lambda s: s["status"] == "erp_confirmed"), timeout_s=60)
        [retry] = [t for t in state["timeline"] if t["event"] == "erp_retry_requested"]
        assert f"{SKUS[0]} 1" in retry["detail"] and SKUS[1] not in retry["detail"]
        stored = erp.order_by_po_no(key)
        assert stored is not None
        assert [(i["item_code"], i["qty"]) for i in stored.doc["items"]] == [(SKUS[0], 1)]
        await eventually(lambda: any(o["reference"] == key for o in wms.orders), timeout_s=30)
        [released] = [o for o in wms.orders if o["reference"] == key]
        assert [(ln["sku"], ln["quantity"]) for ln in released["lines"]] == [(SKUS[0], 1)]
        # what the reduced line held beyond the edited quantity comes back too: the stock table
        # equals the ERP's bins (1 unit reserved there, nothing held by us)
        await stock_agrees_with_erp(worker, erp, SKUS)
        assert await _free(worker, SKUS[0]) == STOCK - 1
        assert await _edit_exceptions(stack, key) == []
        assert erp.stats()["orders_created"] == 1
    finally:
        await shop.stop()
        await wms.stop()


async def _free_is(worker: WorkerProcess, sku: str, wanted: int) -> bool:
    return await _free(worker, sku) == wanted


async def test_an_edit_after_the_erp_post_is_one_exception_naming_the_sales_order(
        stack: Stack) -> None:
    erp = stack.erp
    assert erp is not None
    worker, shop, wms = await _setup(stack)
    try:
        order = await shop.send_order([(SKUS[0], 2)])
        assert order is not None
        key = f"shopify:{order['id']}"
        state = await eventually(lambda: _state(
            worker, key, lambda s: s["correlation"]["erp_sales_order"] is not None
            and s["status"] == "erp_confirmed"), timeout_s=60)
        sales_order = state["correlation"]["erp_sales_order"]
        await shop.edit_order(str(order["id"]), order["line_items"][0]["id"], 1)
        state = await eventually(lambda: _state(
            worker, key, lambda s: "order_edit_not_applied" in _events(s)), timeout_s=60)
        [entry] = [t for t in state["timeline"] if t["event"] == "order_edit_not_applied"]
        assert f"{SKUS[0]}) 2 -> {SKUS[0]} 1" in entry["detail"]
        found = await eventually(lambda: _edit_exceptions(stack, key), timeout_s=30)
        assert len(found) == 1 and found[0]["kind"] == "state_conflict", found
        assert sales_order in found[0]["reason"]
        # the ERP keeps the order as it was (a human amends it); a redelivery changes nothing
        stored = erp.order_by_po_no(key)
        assert stored is not None and [i["qty"] for i in stored.doc["items"]] == [2]
        assert state["status"] == "erp_confirmed"
        assert [(ln["sku"], ln["quantity"]) for ln in state["order"]["lines"]] == [(SKUS[0], 2)]
        await shop.send_event("orders/updated", shop.orders[str(order["id"])])
        await eventually(lambda: _state(worker, key, lambda s: len(s["correlation"]["delivery_ids"])
                                        >= 3), timeout_s=30)
        assert len(await _edit_exceptions(stack, key)) == 1
        assert erp.stats()["orders_created"] == 1
    finally:
        await shop.stop()
        await wms.stop()


async def test_a_replay_of_an_order_cancelled_meanwhile_is_skipped(stack: Stack) -> None:
    """The ERP refused the order, an operator cancelled it (its stock comes back), then the
    ERP is fixed and the exception replayed: the answer is "skipped" with the reason, the
    order's timeline says so, and the ERP never gets the order."""
    erp = stack.erp
    assert erp is not None
    worker, shop, wms = await _setup(stack)
    try:
        erp.set_config({"api_secret": "rotated"})
        order = await shop.send_order([(SKUS[0], 2)])
        assert order is not None
        key = f"shopify:{order['id']}"
        await eventually(lambda: _state(worker, key, lambda s: s["status"] == "erp_failed"),
                         timeout_s=60)
        status, answer = await worker.post_json(f"/orders/{key}/cancel",
                                                {"reason": "buyer called"})
        assert status == 202, answer
        await eventually(lambda: _state(worker, key, lambda s: s["status"] == "cancelled"),
                         timeout_s=30)
        await eventually(lambda: _free_is(worker, SKUS[0], STOCK), timeout_s=30)
        records = [orjson.loads(r.value) for r in await stack.read_topic("sync-exceptions")]
        ids = [r["exception_id"] for r in records
               if r["order_key"] == key and r["kind"] == "erp_permanent"]
        assert ids

        erp.set_config({"api_secret": "demo-secret"})
        status, result = await worker.post_json("/exceptions/replay", {"ids": ids})
        assert status == 200 and result["replayed"] == 0 and result["skipped"] == len(ids), result
        for r in result["results"]:
            assert r["skipped"] is True and "is cancelled (operator: buyer called)" in r["reason"], r
        state = await eventually(lambda: _state(
            worker, key, lambda s: "erp_retry_skipped" in _events(s)), timeout_s=30)
        [entry] = [t for t in state["timeline"] if t["event"] == "erp_retry_skipped"]
        assert "is cancelled (operator: buyer called)" in entry["detail"] and ids[0] in entry["detail"]
        assert state["status"] == "cancelled"
        assert erp.order_by_po_no(key) is None and erp.stats()["orders_created"] == 0
        assert await _free(worker, SKUS[0]) == STOCK
    finally:
        await shop.stop()
        await wms.stop()
