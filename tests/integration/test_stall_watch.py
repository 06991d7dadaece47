"""A partition whose fetched records never reach its agent is found and read again
(retail_sync/stall_watch.py), on a real worker and broker.

The worker's fetch loop is made to drop the first record of erp-requests[0] after aiokafka
returned it (``RETAIL_SYNC_TEST_DROP_FETCHED``): the order's ERP request is then neither handed
over nor fetched again, and nothing but the watch would read it before a restart (the open
test_first_commit failure looked like this). The order still reaches the ERP, once, and the
worker says and counts the stall.
"""

from __future__ import annotations

import json
from collections import Counter

import pytest

from retail_sync.simulators.shopify.simulator import ShopifyOrderFactory
from retail_sync.stack import Stack
from retail_sync.stall_watch import CHECK_S, ENV_DROP, STALL_S
from retail_sync.streams.topics import partition_of
from tests.integration.helpers import eventually, headers, post_webhook

pytestmark = pytest.mark.integration


def _order_on_partition_0(partitions: int) -> tuple[str, bytes]:
    factory = ShopifyOrderFactory(seed=41)
    while True:
        order = factory.order()
        key = f"shopify:{order['id']}"
        if partition_of(key, partitions) == 0:
            return key, json.dumps(order).encode()


async def test_a_partition_whose_fetched_records_were_dropped_is_read_again(stack: Stack) -> None:
    erp = stack.erp
    assert erp is not None
    worker = stack.new_worker()
    worker.env[ENV_DROP] = "erp-requests:0:1"
    worker.start()
    await worker.wait_ready()
    key, body = _order_on_partition_0(stack.partitions)

    def in_erp() -> Counter[str]:
        return Counter(stored.doc["po_no"] for stored in erp.orders.values())

    status, _ = await post_webhook(worker.ingress_url, body, headers(body))
    assert status == 200
    await eventually(lambda: "test fault" in worker.log_tail(400), timeout_s=30)
    assert key not in in_erp()  # its ERP request was dropped: nothing else reads it again
    await eventually(lambda: key in in_erp(), timeout_s=STALL_S + 4 * CHECK_S + 15, every=0.5)
    assert in_erp()[key] == 1
    assert "erp-requests[0] stalled: records 0..0 wait on the broker" in worker.log_tail(400)
    metrics = await worker.metrics_text()
    stalls = [ln for ln in metrics.splitlines()
              if ln.startswith("retail_sync_partition_stalls_total{") and "erp-requests" in ln]
    assert stalls and float(stalls[0].rsplit(" ", 1)[1]) >= 1, stalls
