"""The ERP misbehaves: a tenth of its answers are 5xx and some take longer than our timeout (the
order is still created behind our back). Every order reaches the ERP exactly once. Then the ERP
refuses everything (credentials rotated): the orders become erp_permanent exceptions, visible with
their reasons at GET /exceptions; once the cause is fixed, POST /exceptions/replay brings them in,
and replaying again changes nothing."""

from __future__ import annotations

import pytest

from retail_sync.simulators.shopify.simulator import ShopifySimConfig, ShopifySimulator
from retail_sync.stack import Stack, WorkerProcess
from tests.integration.helpers import SECRET, eventually

pytestmark = pytest.mark.integration


def po_numbers(stack: Stack) -> list[str]:
    assert stack.erp is not None
    return [stored.doc["po_no"] for stored in stack.erp.orders.values()]


async def test_flaky_slow_then_refusing_erp_loses_and_duplicates_nothing(stack: Stack) -> None:
    erp = stack.erp
    assert erp is not None
    # the first two of each for certain (bulk posting makes few requests: the rates alone could
    # miss), then 10 % of each
    erp.set_config({"error_rate": 0.1, "slow_rate": 0.1, "slow_ms": 1500, "seed": 41,
                    "error_first": 2, "slow_first": 2})
    stack.env.update({"RETAIL_SYNC_ERP_TIMEOUT_S": "1", "RETAIL_SYNC_ERP_BACKOFF_MAX_S": "0.5"})
    worker = await stack.start_worker()
    shop = ShopifySimulator(ShopifySimConfig(
        webhook_url=worker.webhook_url(), secret=SECRET,
        rate_per_s=50, seed=42))
    await shop.send_orders(count=40)
    first = {f"shopify:{oid}" for oid in shop.accepted_order_ids()}
    await eventually(lambda: set(po_numbers(stack)) == first, timeout_s=90)
    assert sorted(po_numbers(stack)) == sorted(first)  # exactly once despite the timeouts
    assert erp.stats()["errors_injected"] > 0 and erp.stats()["slow_injected"] > 0

    erp.set_config({"error_rate": 0.0, "slow_rate": 0.0, "api_secret": "rotated"})
    await shop.send_orders(count=3)
    refused = {f"shopify:{oid}" for oid in shop.accepted_order_ids()} - first

    async def listed() -> dict | None:
        status, body = await worker.get_json("/exceptions?kind=erp_permanent")
        keys = {e["order_key"] for e in body.get("exceptions", [])}
        return body if status == 200 and refused <= keys else None

    body = await eventually(listed, timeout_s=60)
    assert all("AuthenticationError" in e["reason"] for e in body["exceptions"])
    assert body["summary"]["by_kind"]["erp_permanent"] >= 3

    erp.set_config({"api_secret": "demo-secret"})  # the cause is fixed
    status, result = await worker.post_json("/exceptions/replay", {"kind": "erp_permanent"})
    assert status == 200 and result["replayed"] >= 3, result
    await eventually(lambda: set(po_numbers(stack)) == first | refused, timeout_s=60)
    for key in refused:
        state = await eventually(lambda k=key: _confirmed(worker, k), timeout_s=30)
        assert state["correlation"]["erp_sales_order"]
    status, again = await worker.post_json("/exceptions/replay", {"kind": "erp_permanent"})
    assert status == 200
    # replayed again: the order agent has them in the ERP now, so nothing goes to the ERP
    skipped = [r for r in again["results"] if r.get("skipped")]
    assert again["replayed"] == 0 and len(skipped) == len(again["results"]) >= 3, again
    assert all("in the ERP already as" in r["reason"] for r in skipped), again
    assert sorted(po_numbers(stack)) == sorted(first | refused)  # a second replay adds nothing
    assert erp.stats()["orders_created"] == len(first | refused)


async def _confirmed(worker: WorkerProcess, key: str) -> dict | None:
    status, state = await worker.get_json(f"/orders/{key}")
    return state if status == 200 and state["status"] == "erp_confirmed" else None
