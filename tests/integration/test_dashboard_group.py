"""The dashboard's figures are the whole group's (issue 14 §1): with two workers each holding
part of the order table, ``GET /dashboard/data`` on either one counts every order, sums both
workers' ingestion counters and histograms, and names both workers as answering."""

from __future__ import annotations

import pytest

from retail_sync.simulators.shopify.simulator import ShopifySimConfig, ShopifySimulator
from retail_sync.stack import Stack, WorkerProcess
from tests.integration.helpers import SECRET, all_assigned, eventually
from tests.integration.test_dashboard_browser import _get, _metric_sum

pytestmark = pytest.mark.integration

ORDERS = 30


async def test_either_worker_reports_the_whole_group(stack: Stack) -> None:
    first = await stack.start_worker("w1")
    second = await stack.start_worker("w2")
    await eventually(lambda: all_assigned(first, second), timeout_s=60)
    shop = ShopifySimulator(ShopifySimConfig(
        webhook_url=first.webhook_url(), secret=SECRET, rate_per_s=100, seed=43, max_attempts=8))
    await shop.send_orders(count=ORDERS)
    assert stack.erp is not None
    await eventually(lambda: len(stack.erp.orders) == ORDERS, timeout_s=60)

    async def local_orders(worker: WorkerProcess) -> int:
        status, part = await worker.get_json("/dashboard/data?scope=local")
        assert status == 200, part
        return part["orders"]["orders"]

    async def confirmed_everywhere() -> bool:
        counts = [await local_orders(w) for w in (first, second)]
        return sum(counts) == ORDERS
    await eventually(confirmed_everywhere, timeout_s=60, every=1.0)
    counts = [await local_orders(w) for w in (first, second)]
    assert all(c > 0 for c in counts), counts  # each holds a part: the total needs both

    ingested = sum([_metric_sum(await w.metrics_text(), "retail_sync_orders_ingested_total")
                    for w in (first, second)])
    viewer = stack.admin_headers("viewer")  # the fan-out forwards the caller's own token

    async def with_latency(worker: WorkerProcess) -> dict | None:
        status, data = await _get(worker, "/dashboard/data", viewer)
        assert status == 200, data
        return data if "order_to_erp|shopify" in data["latency"]["series"] else None

    for worker in (first, second):
        data = await eventually(lambda w=worker: with_latency(w), timeout_s=30, every=1.0)
        assert sorted(w["url"] for w in data["workers"] if w["ok"]) == sorted(
            [first.url, second.url])
        assert sum(n for by in data["backlog"]["orders_by_channel_status"].values()
                   for n in by.values()) == ORDERS
        assert data["cancellation"]["orders"] == ORDERS
        assert sum(data["throughput"]["ingested_total_by_channel"].values()) == ingested
        # the group's order -> ERP histogram holds every order, whichever worker observed it
        series = data["latency"]["series"]["order_to_erp|shopify"]
        assert series and max(p["count"] for p in series) <= ORDERS
