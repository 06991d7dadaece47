"""Amazon- and Walmart-style polled channels, end to end, at once: real simulators (HTTP), real
broker, a real worker. Orders reach the ERP exactly once; the Amazon cursor (a Faust table)
survives a restart; Walmart orders are acknowledged; updates change state, never add orders."""

from __future__ import annotations

import pytest

from retail_sync.simulators.amazon.simulator import AmazonSimConfig, AmazonSimulator
from retail_sync.simulators.walmart.simulator import WalmartSimConfig, WalmartSimulator
from retail_sync.stack import Stack
from tests.integration.helpers import eventually

pytestmark = pytest.mark.integration


def _po_numbers(stack: Stack, channel: str) -> set[str]:
    assert stack.erp is not None
    return {o.doc["po_no"] for o in stack.erp.orders.values()
            if o.doc["po_no"].startswith(f"{channel}:")}


async def test_amazon_and_walmart_orders_reach_the_erp_exactly_once(stack: Stack) -> None:
    amazon = AmazonSimulator(AmazonSimConfig(time_scale=1000, seed=5))
    walmart = WalmartSimulator(WalmartSimConfig(seed=3))
    stack.env.update({
        "RETAIL_SYNC_AMAZON_BASE_URL": await amazon.start(),
        "RETAIL_SYNC_WALMART_BASE_URL": await walmart.start(),
        "RETAIL_SYNC_POLL_INTERVAL_S": "0.5",
    })
    try:
        amazon_ids = amazon.generate_orders(25)
        walmart_ids = [o["purchaseOrderId"] for o in walmart.generate_orders(15)]
        worker = await stack.start_worker()
        want_amazon = {f"amazon:{i}" for i in amazon_ids}
        want_walmart = {f"walmart:{po}" for po in walmart_ids}
        await eventually(lambda: _po_numbers(stack, "amazon") == want_amazon, timeout_s=60)
        await eventually(lambda: _po_numbers(stack, "walmart") == want_walmart, timeout_s=60)
        await eventually(lambda: walmart.stats()["orders_released"] == 0, timeout_s=30)

        await stack.restart(worker)
        amazon.update_order(amazon_ids[0], status="Shipped")  # an update, not a new order
        more = amazon.generate_orders(5)
        want_amazon |= {f"amazon:{i}" for i in more}
        await eventually(lambda: _po_numbers(stack, "amazon") == want_amazon, timeout_s=60)
        status, state = await eventually(
            lambda: _state_if(worker, f"amazon:{amazon_ids[0]}", "Shipped"), timeout_s=30)

        assert stack.erp is not None and stack.erp.stats()["orders_created"] == 45
        assert amazon.stats()["throttled"] == 0 and walmart.stats().get("throttled_429", 0) == 0
        assert walmart.stats()["acknowledged"] == 15
        assert len(state["correlation"]["delivery_ids"]) == 2  # two versions of the same order
    finally:
        await amazon.stop()
        await walmart.stop()


async def _state_if(worker, key: str, amazon_status: str):
    status, state = await worker.get_json(f"/orders/{key}")
    if status == 200 and state["order"]["fulfillment_status"] == amazon_status.lower():
        return status, state
    return None


async def test_lowered_budgets_are_backed_off_and_every_order_still_arrives(stack: Stack) -> None:
    """Mid-run the simulators cut their budgets (as a marketplace does at peak). Walmart's
    connector follows the token count each answer reports and waits for the replenish time
    instead of earning 429s; Amazon's follows the rate Amazon reports in x-amzn-RateLimit-Limit,
    so it earns at most a few at the switch. Every order still arrives, none twice."""
    amazon = AmazonSimulator(AmazonSimConfig(time_scale=1000, seed=8))
    walmart = WalmartSimulator(WalmartSimConfig(seed=9))
    stack.env.update({
        "RETAIL_SYNC_AMAZON_BASE_URL": await amazon.start(),
        "RETAIL_SYNC_WALMART_BASE_URL": await walmart.start(),
        "RETAIL_SYNC_POLL_INTERVAL_S": "0.3",
    })
    try:
        want = {f"amazon:{i}" for i in amazon.generate_orders(5)}
        want |= {f"walmart:{o['purchaseOrderId']}" for o in walmart.generate_orders(4)}
        worker = await stack.start_worker()
        await eventually(lambda: _po_numbers(stack, "amazon") | _po_numbers(stack, "walmart")
                         == want, timeout_s=60)

        amazon.configure({"rate_overrides": {"getOrderItems": {"rate": 0.004, "burst": 2}}})
        walmart.set_config({"acknowledge_rate_per_s": 1.0, "acknowledge_burst": 2})
        want |= {f"amazon:{i}" for i in amazon.generate_orders(12)}
        want |= {f"walmart:{o['purchaseOrderId']}" for o in walmart.generate_orders(10)}
        await eventually(lambda: _po_numbers(stack, "amazon") | _po_numbers(stack, "walmart")
                         == want, timeout_s=90)
        await eventually(lambda: walmart.stats()["orders_released"] == 0, timeout_s=60)
        assert walmart.stats().get("throttled_429", 0) <= 2  # at most at the switch...
        assert amazon.stats()["throttled"] <= 3  # ...both followed the new plans
        waited = _metric(await worker.metrics_text(), "retail_sync_ratelimit_wait_seconds_total",
                         'channel="walmart",operation="acknowledge"')
        assert waited > 1.0  # 10 acknowledgements at 1/s with a burst of 2: it did wait
        assert stack.erp is not None and stack.erp.stats()["orders_created"] == 31
    finally:
        await amazon.stop()
        await walmart.stop()


def _metric(text: str, name: str, labels: str) -> float:
    for line in text.splitlines():
        if line.startswith(f"{name}{{{labels}}} "):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name}{{{labels}}} not exported")
