"""Implausible orders end at /exceptions, naming the field, and never reach the ERP; once the
cause is fixed a replay brings them in (ARCHITECTURE §5f.4). A real worker, broker and ERP
simulator; orders are signed Shopify webhooks."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import aiohttp
import pytest

from retail_sync.simulators.shopify.simulator import ShopifyOrderFactory
from retail_sync.stack import Stack
from tests.integration.helpers import eventually, headers, order_body, post_webhook

pytestmark = pytest.mark.integration


def erp_po_numbers(stack: Stack) -> set[str]:
    assert stack.erp is not None
    return {stored.doc["po_no"] for stored in stack.erp.orders.values()}


async def mapping_exceptions(worker: Any, key: str, n: int = 1) -> list[dict[str, Any]] | None:
    status, view = await worker.get_json("/exceptions?kind=mapping")
    assert status == 200, view
    found = [e for e in view["exceptions"] if e["source_key"] == key]
    return found if len(found) >= n else None


async def test_bad_totals_end_at_exceptions_never_in_the_erp_and_replay_once_fixed(stack: Stack) -> None:
    worker = await stack.start_worker()
    factory = ShopifyOrderFactory(seed=41)
    bad, bad_body = order_body(factory, total_price="0.01")  # the order
    rounding = factory.order()  # 30 cents off: a marketplace's rounding quirk, say
    rounding["total_price"] = str(Decimal(rounding["total_price"]) - Decimal("0.30"))
    rounding_body = json.dumps(rounding).encode()
    good, good_body = order_body(factory)
    for body in (bad_body, rounding_body, good_body):
        assert (await post_webhook(worker.ingress_url, body, headers(body)))[0] == 200

    keys = {name: f"shopify:{order['id']}" for name, order in
            (("bad", bad), ("rounding", rounding), ("good", good))}
    await eventually(lambda: erp_po_numbers(stack) == {keys["good"]}, timeout_s=60)
    [record] = await eventually(lambda: mapping_exceptions(worker, keys["bad"]), timeout_s=30)
    assert record["reason"].startswith(f"order {keys['bad']} rejected: total_price: 0.01 USD")
    assert "RETAIL_SYNC_ORDER_TOTAL_TOLERANCE_UNITS" in record["reason"]
    [near] = await eventually(lambda: mapping_exceptions(worker, keys["rounding"]), timeout_s=30)
    assert "total_price" in near["reason"] and "off by 0.30" in near["reason"]
    status, state = await worker.get_json(f"/orders/{keys['bad']}")
    assert status == 404  # no order state, nothing towards the ERP
    assert erp_po_numbers(stack) == {keys["good"]}

    # the fix: the operator widens the tolerance (20 cents a line) and replays the exceptions
    await worker.stop()
    worker.env["RETAIL_SYNC_ORDER_TOTAL_TOLERANCE_UNITS"] = "20"
    worker.start()
    await worker.wait_ready()
    async with aiohttp.ClientSession(headers=worker.headers) as session, session.post(
            f"{worker.url}/exceptions/replay", json={"kind": "mapping"}) as resp:
        assert resp.status == 200, await resp.text()
        answer = await resp.json()
    assert {r["exception_id"] for r in answer["results"] if r["replayed"]} == \
        {record["exception_id"], near["exception_id"]}

    await eventually(lambda: erp_po_numbers(stack) == {keys["good"], keys["rounding"]}, timeout_s=60)
    # still wrong by far more than any tolerance: refused again, a second record, not in the ERP
    await eventually(lambda: mapping_exceptions(worker, keys["bad"], 2), timeout_s=30)
    assert erp_po_numbers(stack) == {keys["good"], keys["rounding"]}
    assert stack.erp is not None and stack.erp.stats()["orders_created"] == 2
