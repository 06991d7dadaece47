"""Order retention end to end (tables/retention.py, ARCHITECTURE §5f.5): a shipped order past the
retention age leaves the hot tables (order state, its line records, the index), stays readable
from the archive topic through the order views, and a later copy of it never becomes a second
ERP order. The retention age is seconds here (RETAIL_SYNC_ORDER_RETENTION_DAYS is a float)."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from retail_sync.broker import free_port
from retail_sync.simulators.shopify.simulator import ShopifySimConfig, ShopifySimulator
from retail_sync.simulators.wms.simulator import WmsSimConfig, WmsSimulator
from retail_sync.stack import Stack, read_topic
from tests.integration.helpers import SECRET, eventually, headers, post_webhook

pytestmark = pytest.mark.integration

SKU = "RETAIN-A"
RETENTION_S = 8.0


def _shipped_everywhere(state: dict[str, Any]) -> bool:
    shipments = state.get("shipments", {}).values()
    return state.get("status") == "shipped" and bool(shipments) and all(
        s["delivery_note"] and s["marketplace_confirmed_at"] for s in shipments)


async def _last_values(stack: Stack, topic: str) -> dict[str, bytes | None]:
    out: dict[str, bytes | None] = {}
    for record in await read_topic(stack.bootstrap, topic):
        out[record.key.decode()] = record.value
    return out


async def test_a_closed_order_past_its_age_leaves_the_hot_tables_and_is_served_from_the_archive(
        stack: Stack) -> None:
    port = free_port()
    shop = ShopifySimulator(ShopifySimConfig(
        webhook_url=f"http://127.0.0.1:{port}/webhooks/shopify/orders/create", secret=SECRET,
        skus=[SKU], max_quantity=1, seed=51))
    wms = WmsSimulator(WmsSimConfig(ship_delay_ms=200, seed=52))
    assert stack.erp is not None
    stack.erp.set_stock(SKU, 100)
    stack.env.update({
        "RETAIL_SYNC_SHOPIFY_ADMIN_BASE_URL": await shop.start(),
        "RETAIL_SYNC_WMS_BASE_URL": await wms.start(),
        "RETAIL_SYNC_WMS_POLL_INTERVAL_S": "0.3",
        "RETAIL_SYNC_ERP_ORDER_POLL_INTERVAL_S": "0.3",
        "RETAIL_SYNC_ORDER_RETENTION_DAYS": str(RETENTION_S / 86400),
        "RETAIL_SYNC_ORDER_RETENTION_SWEEP_INTERVAL_S": "0.5",
    })
    try:
        worker = await stack.start_worker(ingress_port=port)
        order = await shop.send_order([(SKU, 1)])
        assert order is not None
        key = f"shopify:{order['id']}"

        async def hot() -> dict[str, Any] | None:
            status, body = await worker.get_json(f"/orders/{key}")
            return body if status == 200 and not body.get("archived") else None

        shipped = await eventually(
            lambda: _hot_and(hot, _shipped_everywhere), timeout_s=60, every=0.3)
        sales_order = shipped["correlation"]["erp_sales_order"]
        assert sales_order

        async def archived() -> dict[str, Any] | None:
            status, body = await worker.get_json(f"/orders/{key}")
            return body if status == 200 and body.get("archived") else None

        served = await eventually(archived, timeout_s=60, every=0.5)
        assert served["order_key"] == key and served["status"] == "shipped"
        assert served["correlation"]["erp_sales_order"] == sales_order
        # the lookup by the marketplace's own id finds it in the archive too
        status, found = await worker.get_json(f"/orders/lookup?id={order['id']}")
        assert status == 200 and [o["order_key"] for o in found["orders"]] == [key]
        assert found["orders"][0]["archived"] is True

        # gone from the hot tables: tombstones on the changelogs, one archive record
        app = stack.app_id
        state_log = await _last_values(stack, f"{app}-order-state-changelog")
        assert key in state_log and state_log[key] is None
        # its index entries went with the state, in the same write (tables/store_index.py):
        # the sales order names no order any more (the archive is read by order key)
        status, _ = await worker.get_json(f"/orders/lookup?id={sales_order}")
        assert status == 404
        stock_log = await eventually(
            lambda: _lines_tombstoned(stack, f"{app}-stock-changelog", key), timeout_s=20)
        assert all(value is None for value in stock_log.values())
        archive = [r for r in await stack.read_topic("order-archive") if r.key == key.encode()]
        assert len(archive) == 1

        # a redelivery of the same order now (a new delivery id: past any webhook dedupe)
        # is refused as too old, never a second ERP order
        body = orjson.dumps(order)
        status, _ = await post_webhook(worker.ingress_url, body, headers(body))
        assert status == 200

        async def refused() -> bool:
            records = [orjson.loads(r.value) for r in await stack.read_topic("sync-exceptions")]
            return any(r.get("order_key") == key and "retention" in r.get("reason", "")
                       for r in records)

        await eventually(refused, timeout_s=30, every=0.5)
        assert stack.erp.stats()["orders_created"] == 1
        _, again = await worker.get_json(f"/orders/{key}")
        assert again.get("archived") is True  # not re-created in the hot table
    finally:
        await shop.stop()
        await wms.stop()


async def _hot_and(probe: Any, check: Any) -> dict[str, Any] | None:
    state = await probe()
    return state if state is not None and check(state) else None


async def _lines_tombstoned(stack: Stack, topic: str, order_key: str) -> dict | None:
    values = await _last_values(stack, topic)
    lines = {k: v for k, v in values.items() if f"|{order_key}#" in k}
    return lines if lines and all(v is None for v in lines.values()) else None
