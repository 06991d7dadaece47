"""Two workers push inventory to one marketplace under one budget B, shared through Redis: the
marketplace never sees more than B calls a second (within the burst) and never has to throttle,
and with a backlog the two together use at least 90 % of B. Walmart (a token bucket per
operation) and Shopify (one leaky bucket per store, reported in a header after every call)."""

from __future__ import annotations

import asyncio

import pytest

from retail_sync.simulators.shopify.simulator import ShopifySimConfig, ShopifySimulator
from retail_sync.simulators.walmart.simulator import WalmartSimConfig, WalmartSimulator
from retail_sync.stack import Stack
from tests.integration.helpers import all_assigned, eventually

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
    try:
        # both workers pushed: each owns some of the SKUs' partitions
        pushed_by = await _stock_pushed_by_two_workers(stack, walmart.listings, skus)
        assert all('retail_sync_inventory_pushes_total{channel="walmart"' in m for m in pushed_by)
    finally:
        await walmart.stop()
    assert walmart.stats().get("throttled_429", 0) == 0  # Walmart never had to say no
    _assert_within_budget(sorted(walmart.listings.items[s].updated_monotonic for s in skus))


async def test_two_workers_share_one_shopify_call_limit(stack: Stack) -> None:
    """Shopify's bucket (B calls leaking B/s, sped up from 40 at 2/s) is one per store: the two
    workers' calls, SKU lookups included, draw on one budget and Shopify never answers 429.
    (Shopify reports its level after every call, which alone keeps two workers nearly in step:
    run with RETAIL_SYNC_REDIS_URL=none this passes too, except for the shared gauge. Sharing
    matters where the header lags calls in flight, and for Walmart above, which reports none.)"""
    skus = [f"SHOP-BUDGET-{i:03d}" for i in range(N)]
    shop = ShopifySimulator(ShopifySimConfig(
        webhook_url="http://127.0.0.1:9/unused", secret="unused", seed=52, extra_skus=skus,
        api_bucket_capacity=int(B), api_leak_per_s=B))
    stack.env.update({
        "RETAIL_SYNC_SHOPIFY_ADMIN_BASE_URL": await shop.start(),
        "RETAIL_SYNC_SHOPIFY_ACCESS_TOKEN": shop.config.access_token,
        # our budget: the bucket less the 2 calls kept free, leaking a little slower than Shopify
        "RETAIL_SYNC_RATE_LIMITS": f'{{"shopify:admin": [{OURS}, {int(B) - 2}]}}',
        "RETAIL_SYNC_ERP_STOCK_POLL_INTERVAL_S": "0.3",
    })
    try:
        pushed_by = await _stock_pushed_by_two_workers(stack, shop.listings, skus)
        assert all('retail_sync_inventory_pushes_total{channel="shopify"' in m for m in pushed_by)
        assert all('retail_sync_ratelimit_shared{channel="shopify",operation="admin"} 1.0' in m
                   for m in pushed_by)
    finally:
        await shop.stop()
    assert shop.stats()["api_throttled_429"] == 0  # Shopify never had to say no
    # every Admin call counts (the SKU and location look-ups too); the bucket is B deep, so
    # "B a second plus the burst" is the bound here as well
    _assert_within_budget(sorted(shop.admin_calls), burst=int(B))


def _assert_within_budget(times: list[float], burst: int = BURST) -> None:
    # never more than B a second, beyond the burst
    for i, start in enumerate(times):
        in_window = sum(1 for t in times[i:] if t < start + 1.0)
        assert in_window <= B + burst, (in_window, i)
    # with a backlog, the two together use at least 90 % of B: the rate of the calls after the
    # burst (intervals over their time; counting the burst's calls over the whole time put a
    # perfect run at 9.17 of the budget's 9.5 a second, 2 % above the bound)
    rate = (len(times) - 1 - burst) / (times[-1] - times[burst])
    assert rate >= 0.9 * B, rate


async def _stock_pushed_by_two_workers(stack: Stack, listings, skus: list[str]) -> list[str]:
    """Two workers in one group; every SKU gets ERP stock, until the marketplace's listings show
    it all. Returns each worker's metrics."""
    erp = stack.erp
    assert erp is not None
    first, second = stack.new_worker().start(), stack.new_worker().start()
    await asyncio.gather(first.wait_ready(), second.wait_ready())
    await eventually(lambda: all_assigned(first, second), timeout_s=60, every=0.5)
    for i, sku in enumerate(skus):
        erp.set_stock(sku, 5 + i)
    await eventually(lambda: all(listings.quantity(s) == 5 + i for i, s in enumerate(skus)),
                     timeout_s=60)
    return [await w.metrics_text() for w in (first, second)]
