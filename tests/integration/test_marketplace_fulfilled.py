"""Amazon AFN orders (fulfilled by Amazon from its own stock) reach the ERP only: a real worker,
the real broker, the Amazon, ERP and WMS simulators over HTTP. The MFN orders polled beside them
go to the warehouse with their shipping instructions (issue 12 item 2)."""

from __future__ import annotations

from typing import Any

import pytest

from retail_sync.connectors.erpnext.fields import MARKETPLACE_WAREHOUSE
from retail_sync.simulators.amazon.simulator import AmazonSimConfig, AmazonSimulator
from retail_sync.simulators.wms.simulator import WmsSimConfig, WmsSimulator
from retail_sync.stack import Stack
from tests.integration.helpers import eventually

pytestmark = pytest.mark.integration


def _erp_orders(stack: Stack) -> dict[str, dict[str, Any]]:
    assert stack.erp is not None
    return {o.doc["po_no"]: o.doc for o in stack.erp.orders.values()}


async def test_afn_orders_reach_the_erp_only(stack: Stack) -> None:
    amazon = AmazonSimulator(AmazonSimConfig(time_scale=1000, seed=31, mfn_rate=0.0))
    wms = WmsSimulator(WmsSimConfig(hold=True, seed=32))
    stack.env.update({
        "RETAIL_SYNC_AMAZON_BASE_URL": await amazon.start(),
        "RETAIL_SYNC_WMS_BASE_URL": await wms.start(),
        "RETAIL_SYNC_POLL_INTERVAL_S": "0.3",
        "RETAIL_SYNC_WMS_POLL_INTERVAL_S": "0.3",
    })
    try:
        afn = [f"amazon:{i}" for i in amazon.generate_orders(4)]
        amazon.configure({"mfn_rate": 1.0})
        mfn = [f"amazon:{i}" for i in amazon.generate_orders(2)]
        worker = await stack.start_worker()
        await eventually(lambda: set(_erp_orders(stack)) == {*afn, *mfn}, timeout_s=60)
        # the merchant-fulfilled ones reach the warehouse: the release path works...
        await eventually(lambda: {o["reference"] for o in wms.orders} == set(mfn), timeout_s=30)
        for key in afn:  # ...and the AFN ones never do, nor reserve our stock
            doc = _erp_orders(stack)[key]
            assert doc["custom_fulfilled_by"] == "marketplace" and doc["skip_delivery_note"] == 1
            assert doc["set_warehouse"] == MARKETPLACE_WAREHOUSE
            status, state = await worker.get_json(f"/orders/{key}")
            assert status == 200 and state["status"] == "erp_confirmed", state
            assert state["order"]["fulfilled_by"] == "marketplace"
            assert state["stock"] == {} and state["correlation"]["wms_fulfilment_id"] is None
            events = [t["event"] for t in state["timeline"]]
            assert "fulfilled_by_marketplace" in events and "stock_requested" not in events
        for order in wms.orders:  # what the warehouse got for an MFN order
            assert order["shipping"]["method"] == "Std US D2D Dom"
            assert order["shipping"]["ship_by"] and order["shipping"]["channel"] == "amazon"
            assert all(line.get("title") for line in order["lines"])
        assert {o["reference"] for o in wms.orders}.isdisjoint(afn)
    finally:
        await amazon.stop()
        await wms.stop()
