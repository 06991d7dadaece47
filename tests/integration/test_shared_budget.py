"""Two workers push inventory to one marketplace under one budget B, shared through Redis: the
marketplace never sees more than B calls a second (within the burst) and never has to throttle,
and with a backlog the two together use at least 90 % of B."""

from __future__ import annotations

import asyncio

import pytest

from retail_sync.stack import Stack
from simulators.walmart import WalmartSimConfig, WalmartSimulator
from tests.integration.helpers import eventually

pytestmark = pytest.mark.integration

B, BURST, N = 10.0, 4, 60  # Walmart's limit: calls/s and burst; SKUs to push at once
OURS, OUR_BURST = 0.95 * B, 2  # our shared budget: a little headroom for network jitter


async def test_two_workers_share_one_marketplace_budget(stack: Stack) -> None:
    skus = [f"BUDGET-{i:03d}" for i in range(N)]
    walmart = WalmartSimulator(WalmartSimConfig(  # Walmart's own limit: exactly our budget
        seed=51, extra_skus=skus, inventory_rate_per_s=B, inventory_burst=BURST))
    stack.env.update({
        "RETAIL_SYNC_WALMART_BASE_URL": await walmart.start(),
        "RETAIL_SYNC_WALMART_INVENTORY_RATE_PER_S": str(OURS),
        "RETAIL_SYNC_WALMART_INVENTORY_BURST": str(OUR_BURST),
        "RETAIL_SYNC_WALMART_BULK_MIN_SKUS": "100000",  # single updates only: the budget binds
        "RETAIL_SYNC_ERP_STOCK_POLL_INTERVAL_S": "0.3",
    })
    erp = stack.erp
    assert erp is not None
    try:
        first, second = stack.new_worker().start(), stack.new_worker().start()
        await asyncio.gather(first.wait_ready(), second.wait_ready())
        await eventually(lambda: _both_assigned(first, second), timeout_s=60, every=0.5)
        for i, sku in enumerate(skus):
            erp.set_stock(sku, 5 + i)
        await eventually(lambda: all(walmart.listings.quantity(s) == 5 + i
                                     for i, s in enumerate(skus)), timeout_s=60)
        # both workers pushed: each owns some of the SKUs' partitions
        pushed_by = [await w.metrics_text() for w in (first, second)]
        assert all('retail_sync_inventory_pushes_total{channel="walmart"' in m for m in pushed_by)
    finally:
        await walmart.stop()
    assert walmart.stats().get("throttled_429", 0) == 0  # Walmart never had to say no
    times = sorted(walmart.listings.items[s].updated_monotonic for s in skus)
    # never more than B a second, beyond the burst
    for i, start in enumerate(times):
        in_window = sum(1 for t in times[i:] if t < start + 1.0)
        assert in_window <= B + BURST, (in_window, i)
    # with a backlog, the two together use at least 90 % of B
    rate = (len(times) - BURST) / (times[-1] - times[0])
    assert rate >= 0.9 * B, rate


async def _both_assigned(*workers) -> bool:
    for worker in workers:
        status, body = await worker.get_json("/health")
        if status != 200 or body["assigned_partitions"] == 0:
            return False
    return True
