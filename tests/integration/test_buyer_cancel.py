"""Amazon buyer cancellation requests, end to end (issue 12 item 3): a real worker polls the real
Amazon simulator (HTTP), the real broker, the ERP and WMS simulators. The buyer asks to cancel an
unshipped MFN order (``BuyerRequestedCancel`` on its items): the order is cancelled everywhere (the
ERP sales order cancelled or never created, the warehouse order cancelled, the stock released) and
Amazon is answered with an order acknowledgement listing every item with ``BuyerCanceled``."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest

from retail_sync.simulators.amazon.simulator import AmazonSimConfig, AmazonSimulator
from retail_sync.simulators.wms.simulator import WmsSimConfig, WmsSimulator
from retail_sync.stack import Stack, WorkerProcess
from tests.integration.helpers import eventually, stock_agrees_with_erp

pytestmark = pytest.mark.integration

SKUS = ["BUYCAN-A", "BUYCAN-B"]
STOCK = 20


async def _state(worker: WorkerProcess, key: str) -> dict[str, Any] | None:
    status, body = await worker.get_json(f"/orders/{key}")
    return body if status == 200 else None


async def _status_is(worker: WorkerProcess, key: str, wanted: str) -> dict[str, Any] | None:
    state = await _state(worker, key)
    return state if state is not None and state["status"] == wanted else None


def _answered_buyer_canceled(amazon: AmazonSimulator, order_id: str) -> bool:
    """Amazon recorded the seller's cancellation of every item with reason BuyerCanceled."""
    items = {i["OrderItemId"] for i in amazon.records[order_id].as_ordered}
    answered = {c["line_id"] for c in amazon.cancellations
                if c["order_id"] == order_id and c["reason"] == "BuyerCanceled"}
    return answered == items and amazon.records[order_id].order["OrderStatus"] == "Canceled"


async def test_a_buyer_cancel_request_cancels_everywhere(stack: Stack) -> None:
    assert stack.erp is not None
    erp = stack.erp
    for sku in SKUS:
        erp.set_stock(sku, STOCK)
    amazon = AmazonSimulator(AmazonSimConfig(time_scale=1000, seed=41, skus=SKUS, max_quantity=2,
                                             mfn_rate=1.0, visibility_lag_s=1.0))
    wms = WmsSimulator(WmsSimConfig(hold=True, seed=42))  # nothing ships by itself
    stack.env.update({
        "RETAIL_SYNC_AMAZON_BASE_URL": await amazon.start(),
        "RETAIL_SYNC_WMS_BASE_URL": await wms.start(),
        "RETAIL_SYNC_POLL_INTERVAL_S": "0.3",
        "RETAIL_SYNC_WMS_POLL_INTERVAL_S": "0.3",
    })
    try:
        worker = await stack.start_worker()
        # the worker lists the ERP's stock on Amazon first (the listings refuse sales beyond it)
        await eventually(lambda: all(amazon.listings.quantity(s) == STOCK for s in SKUS),
                         timeout_s=60)

        # 1. after the ERP post and the release to the warehouse: the buyer asks to cancel
        posted = amazon.generate_orders(1)[0]
        key = f"amazon:{posted}"
        await eventually(lambda: any(o["reference"] == key for o in wms.orders), timeout_s=60)
        await eventually(lambda: _status_is(worker, key, "erp_confirmed"), timeout_s=30)
        async with aiohttp.ClientSession() as http, http.post(
                f"{amazon.base_url}/_sim/orders/{posted}/buyer-cancel-request",
                json={"reason": "Ordered the wrong colour."}) as resp:
            assert resp.status == 200, await resp.text()
        state = await eventually(lambda: _status_is(worker, key, "cancelled"), timeout_s=60)
        await eventually(lambda: _answered_buyer_canceled(amazon, posted), timeout_s=60)
        doc = erp.order_by_po_no(key)
        assert doc is not None and doc.doc["docstatus"] == 2, doc and doc.doc
        assert [o["status"] for o in wms.orders if o["reference"] == key] == ["cancelled"]
        events = [t["event"] for t in state["timeline"]]
        assert "cancel_requested" in events
        assert any("Ordered the wrong colour." in (t.get("detail") or "") for t in state["timeline"])

        # 2. the buyer asks before the worker ever saw the order: nothing to post or release
        amazon.configure({"buyer_cancel_rate": 1.0, "buyer_cancel_after_s": 0})
        early = amazon.generate_orders(1)[0]
        early_key = f"amazon:{early}"
        await eventually(lambda: _answered_buyer_canceled(amazon, early), timeout_s=60)
        await eventually(lambda: _status_is(worker, early_key, "cancelled"), timeout_s=30)
        never = erp.order_by_po_no(early_key)
        assert never is None or never.doc["docstatus"] == 2
        assert all(o["reference"] != early_key for o in wms.orders)
        assert [r["order_id"] for r in amazon.buyer_cancel_requests] == [posted, early]

        # the stock is released: the worker's view equals the ERP's bins, nothing reserved in
        # the ERP. (Amazon's listings are not checked back at the full quantity: an order the
        # worker first sees already cancelled reserves nothing, so the ATS does not change and
        # nothing re-tells Amazon the units its own sale took off the listing; a known gap,
        # left for the inventory re-sync work. The order seen before its cancel request is
        # covered: its release changes the ATS and is pushed.)
        await stock_agrees_with_erp(worker, erp, SKUS)
        assert all(int(b["reserved_qty"]) == 0 for b in erp.bins() if b["item_code"] in SKUS)
        assert erp.stats()["orders_created"] <= 2
    finally:
        await amazon.stop()
        await wms.stop()
