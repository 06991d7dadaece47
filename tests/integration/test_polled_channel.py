"""A polled channel added through the public contract: orders arrive exactly once in the ERP,
and the cursor (a Faust table) survives a worker restart."""

from __future__ import annotations

import json
import time

import pytest

from retail_sync.stack import Stack
from tests.integration.helpers import eventually

pytestmark = pytest.mark.integration


def _append(path, first: int, count: int) -> None:
    with path.open("a") as fh:
        for ref in range(first, first + count):
            fh.write(json.dumps({"ref": f"T{ref}", "sku": "TOY-1", "price": "9.50",
                                 # an hour ago: an unknown order older than the retention age
                                 # is refused as a retired one
                                 "ts": int(time.time()) - 3600 + ref}) + "\n")


def _po_numbers(stack: Stack) -> list[str]:
    assert stack.erp is not None
    return sorted(o.doc["po_no"] for o in stack.erp.orders.values())


async def test_toy_channel_polls_exactly_once_across_a_restart(stack: Stack, tmp_path) -> None:
    feed = tmp_path / "toy.jsonl"
    _append(feed, 0, 20)
    stack.env.update({
        "RETAIL_SYNC_CHANNEL_PLUGINS": "tests.integration.toy_channel:plugin",
        "RETAIL_SYNC_POLL_INTERVAL_S": "0.5",
        "TOY_CHANNEL_FILE": str(feed),
    })
    worker = await stack.start_worker()
    expected = [f"toy:T{i}" for i in range(20)]
    await eventually(lambda: _po_numbers(stack) == sorted(expected), timeout_s=60)

    await stack.restart(worker)
    _append(feed, 20, 10)
    expected += [f"toy:T{i}" for i in range(20, 30)]
    await eventually(lambda: _po_numbers(stack) == sorted(expected), timeout_s=60)
    assert stack.erp is not None and stack.erp.stats()["orders_created"] == 30
    raw = await stack.read_topic("orders-raw")
    assert len(raw) == 30  # the restarted worker resumed at its stored cursor: nothing re-polled

    status, found = await worker.get_json("/orders/lookup?id=T25")
    assert status == 200 and found["orders"][0]["order_key"] == "toy:T25"
