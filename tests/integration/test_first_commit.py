"""A partition's first commit in a new consumer group passes no message still in flight.

Faust guards its commit against a message in flight ahead of acknowledged ones only once a
partition has a committed offset (retail_sync/faust_fixes.py); the first records of every
partition of a new group had no guard. The ERP dispatch agent's 16 actors acknowledge out of
order, so an ERP post retrying at offset 0 of an erp-requests partition was committed past as
soon as later orders of that partition were posted; a worker that died then (SIGKILL, or a stop
with the broker cut: tests/integration/test_stop_mid_load.py failed so) lost that order for good:
its state said erp_pending and nothing would post it again.

Here, on a real worker and broker: the first order of a partition meets one refused post (503,
Retry-After 60 s); four later orders of the same partition are posted meanwhile; the worker is
SIGKILLed before the retry and started again. The first order reaches the ERP, once.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
from collections import Counter

import pytest

from retail_sync.simulators.shopify.simulator import ShopifyOrderFactory
from retail_sync.stack import Stack
from retail_sync.streams.topics import partition_of
from tests.integration.helpers import eventually, headers, post_webhook, where_orders_stopped

pytestmark = pytest.mark.integration

#: the refused post says Retry-After this long: the worker is killed well before its retry
RETRY_AFTER_S = 60
LATER = 4  # orders of the same partition posted while the first one waits


def _bodies(partitions: int, count: int) -> list[tuple[str, bytes]]:
    """``count`` Shopify orders whose keys are all on partition 0 (order key, body)."""
    factory = ShopifyOrderFactory(seed=77)
    found: list[tuple[str, bytes]] = []
    while len(found) < count:
        order = factory.order()
        key = f"shopify:{order['id']}"
        if partition_of(key, partitions) == 0:
            found.append((key, json.dumps(order).encode()))
    return found


async def test_an_erp_post_in_flight_at_a_partitions_first_offset_survives_a_sigkill(
        stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    # where each partition is read from after the restart (retail_sync/fetch_log.py, INFO) is in
    # the log tail a failure prints
    monkeypatch.setenv("RETAIL_SYNC_LOG_LEVEL", "info")
    erp = stack.erp
    assert erp is not None
    worker = await stack.start_worker()
    orders = _bodies(stack.partitions, 1 + LATER)
    (first, first_body), later = orders[0], orders[1:]

    def in_erp() -> Counter[str]:
        return Counter(stored.doc["po_no"] for stored in erp.orders.values())

    # the next create the ERP sees is refused (503, Retry-After 60 s)
    erp.set_config({"error_first": 1, "error_retry_after_s": RETRY_AFTER_S})
    status, _ = await post_webhook(worker.ingress_url, first_body, headers(first_body))
    assert status == 200
    await eventually(lambda: erp.stats()["errors_injected"] == 1, timeout_s=30)
    for _key, body in later:  # one at a time: each its own erp-requests record
        status, _ = await post_webhook(worker.ingress_url, body, headers(body))
        assert status == 200
        await asyncio.sleep(0.3)
    await eventually(lambda: {k for k, _ in later} <= set(in_erp()), timeout_s=30)
    assert first not in in_erp()  # still waiting for its retry
    await asyncio.sleep(3.0)  # three commit intervals: the later ones' offsets are committed

    await worker.kill()
    worker.start()  # the same worker: same name, port and data directory
    await worker.wait_ready()
    try:
        await eventually(lambda: first in in_erp(), timeout_s=RETRY_AFTER_S - 15, every=0.5)
    except AssertionError:
        if worker.proc is not None:  # every thread's and task's stack to the worker's log (mode)
            os.kill(worker.proc.pid, signal.SIGUSR1)
            await asyncio.sleep(2.0)
        metrics = await worker.metrics_text()
        erp_lines = [ln for ln in metrics.splitlines()
                     if ("erp" in ln or "inflight" in ln) and not ln.startswith("#")
                     and "_bucket" not in ln]
        raise AssertionError(
            f"the order in flight at offset 0 did not reach the ERP after the restart: ERP "
            f"{erp.stats()}; worker {erp_lines}\n"
            f"{await where_orders_stopped(stack, worker, [first])}\n{worker.log_tail(80)}") from None
    assert max(in_erp().values()) == 1, in_erp()  # and nothing twice
