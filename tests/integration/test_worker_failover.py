"""Two workers share the partitions; one is killed (SIGKILL) in the middle of a load run and not
restarted: the other takes over its partitions and tables (changelog recovery) and finishes the
run: no order lost, no ERP sales order twice, nothing oversold, the stock table agrees with the
ERP, and the order index of the partitions it took over (kept from the victim's changelog, as a
standby replica and in recovery: tables/store_index.py) finds every order by its sales order."""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest

from retail_sync.simulators.shopify.simulator import ShopifySimConfig, ShopifySimulator
from retail_sync.stack import Stack
from tests.integration.helpers import (
    SECRET,
    all_assigned,
    eventually,
    stock_agrees_with_erp,
    where_orders_stopped,
)

pytestmark = pytest.mark.integration

SKUS = ["FAIL-A", "FAIL-B", "FAIL-C"]


async def test_one_of_two_workers_dies_and_the_other_finishes(stack: Stack) -> None:
    erp = stack.erp
    assert erp is not None
    for sku in SKUS:
        erp.set_stock(sku, 1000)
    stack.env["RETAIL_SYNC_ERP_STOCK_POLL_INTERVAL_S"] = "0.3"
    survivor = await stack.start_worker("w1")
    victim = await stack.start_worker("w2")
    await eventually(lambda: all_assigned(survivor, victim), timeout_s=60, every=0.5)
    shop = ShopifySimulator(ShopifySimConfig(
        webhook_url=survivor.webhook_url(), secret=SECRET,
        rate_per_s=30, seed=61, max_attempts=10, skus=SKUS, max_quantity=2))
    sending = asyncio.create_task(shop.send_orders(count=150))
    await asyncio.sleep(2.0)
    inputs = sum([(await w.get_json("/health"))[1]["input_partitions"] for w in (survivor, victim)])
    await victim.kill()  # mid-run, no goodbye, not restarted
    await sending
    keys = {f"shopify:{oid}" for oid in shop.accepted_order_ids()}
    assert len(keys) == 150

    def in_erp() -> set[str]:
        return {stored.doc["po_no"] for stored in erp.orders.values()}

    try:
        await eventually(lambda: in_erp() == keys, timeout_s=120, every=1.0)
    except AssertionError:
        missing = keys - in_erp()
        raise AssertionError(
            f"{len(missing)} accepted orders not in the ERP:\n"
            f"{await where_orders_stopped(stack, survivor, missing)}\n"
            f"{survivor.log_tail()}") from None
    status, health = await survivor.get_json("/health")
    assert status == 200 and health["input_partitions"] == inputs  # it took every one over
    counts = Counter(stored.doc["po_no"] for stored in erp.orders.values())
    assert max(counts.values()) == 1  # no sales order twice
    assert erp.stats()["oversold_units"] == 0

    # the stock table, now all on the survivor, agrees with the ERP once everything settled
    await stock_agrees_with_erp(survivor, erp, SKUS)

    # the order index, now all on the survivor, finds each order by its ERP sales order
    async def indexed() -> list[str]:
        wrong = []
        for name, stored in erp.orders.items():
            status, found = await survivor.get_json(f"/orders/lookup?id={name}&scope=local")
            if status != 200 or found["order_keys"] != [stored.doc["po_no"]]:
                wrong.append(f"{name}: {status} {found}")
        return wrong

    wrong = await indexed()
    for _ in range(30):  # the last confirmations may still be on their way into the states
        if not wrong:
            break
        await asyncio.sleep(1.0)
        wrong = await indexed()
    assert not wrong, f"{len(wrong)} of {len(erp.orders)} sales orders not indexed: {wrong[:5]}"
