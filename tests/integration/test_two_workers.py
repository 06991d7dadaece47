"""Two workers in one consumer group: every order view and lookup answers on either worker."""

from __future__ import annotations

import asyncio

import pytest

from retail_sync.simulators.shopify.simulator import ShopifySimConfig, ShopifySimulator
from retail_sync.stack import Stack
from tests.integration.helpers import SECRET, all_assigned, eventually

pytestmark = pytest.mark.integration


async def test_views_and_lookups_are_routed_to_the_owning_worker(stack: Stack) -> None:
    first = await stack.start_worker("w1")
    second = await stack.start_worker("w2")
    await eventually(lambda: all_assigned(first, second), timeout_s=60)
    shop = ShopifySimulator(ShopifySimConfig(
        webhook_url=first.webhook_url(), secret=SECRET,
        rate_per_s=100, seed=41, max_attempts=8,
    ))
    await shop.send_orders(count=40)
    keys = sorted(f"shopify:{oid}" for oid in shop.accepted_order_ids())
    assert stack.erp is not None
    await eventually(lambda: len(stack.erp.orders) == 40, timeout_s=60)

    # every key on both workers, a few keys at a time: a lookup by a marketplace id tries each
    # channel's key, and each one not found is looked for in the archive topic (~0.5 s apiece)
    gate = asyncio.Semaphore(8)

    async def answers_on_both(key: str) -> None:
        async with gate:
            states = [await eventually(lambda w=w, k=key: _confirmed_on(w, k), timeout_s=30)
                      for w in (first, second)]
            assert states[0] == states[1]
            erp_name = states[0]["correlation"]["erp_sales_order"]
            for worker in (first, second):
                for any_id in (key.split(":", 1)[1], erp_name):
                    status, found = await worker.get_json(f"/orders/lookup?id={any_id}")
                    assert status == 200, (worker.name, any_id, found)
                    assert [o["order_key"] for o in found["orders"]] == [key]

    await asyncio.gather(*(answers_on_both(key) for key in keys))



async def _confirmed_on(worker, key):
    status, state = await worker.get_json(f"/orders/{key}")
    return state if status == 200 and state.get("status") == "erp_confirmed" else None
