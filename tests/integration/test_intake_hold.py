"""A backlog in orders-raw is worked through a bounded number of orders at a time
(agents/intake.py, retail_sync/intake_hold.py), on the real broker, a real worker and the ERP
simulator: with a limit of 5 orders waiting for their stock answers and fetches of at most 100
records, the worker stops fetching orders-raw again and again, never has more than the limit and
one fetch waiting (however long its batches wait to fill), and still every order reaches the ERP
exactly once."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka import AIOKafkaProducer

from retail_sync.bench import raw_records
from retail_sync.report import Samples
from retail_sync.stack import Stack
from tests.integration.helpers import eventually

pytestmark = pytest.mark.integration

ORDERS = 1200
LIMIT = 5
POLL = 100  # records one fetch hands over at most: the hold is looked at before each fetch


def raw_orders(n: int) -> list[tuple[str, bytes]]:
    return [(key.decode(), value) for key, value in raw_records(n, seed=5, delivery_prefix="hold")]


async def test_a_backlog_is_taken_in_a_bounded_number_at_a_time(stack: Stack) -> None:
    stack.env["RETAIL_SYNC_INTAKE_MAX_AWAITING_STOCK"] = str(LIMIT)
    stack.env["RETAIL_SYNC_CONSUMER_MAX_POLL_RECORDS"] = str(POLL)
    # the batches wait as long as a busy worker's (agents/take.py): the fetches made while one
    # fills must see what the fetches before them handed over (CI, session 28: a peak of 220)
    stack.env["RETAIL_SYNC_BATCH_WITHIN_S"] = stack.env["RETAIL_SYNC_BATCH_WITHIN_MAX_S"] = "0.05"
    worker = await stack.start_worker()
    records = raw_orders(ORDERS)
    seen: list[tuple[float, float]] = []  # (held, awaiting) per scrape
    done = asyncio.Event()

    async def watch() -> None:
        while not done.is_set():
            samples = Samples(await worker.metrics_text())
            seen.append((samples.get("retail_sync_intake_held"),
                         samples.get("retail_sync_orders_awaiting_stock")))
            await asyncio.sleep(0.02)

    watcher = asyncio.create_task(watch())
    producer = AIOKafkaProducer(bootstrap_servers=stack.bootstrap)
    await producer.start()
    try:
        for key, value in records:  # the whole backlog at once
            await producer.send(stack.topic("orders-raw"), value, key=key.encode())
        await producer.flush()
    finally:
        await producer.stop()

    assert stack.erp is not None
    erp = stack.erp

    def po_numbers() -> list[str]:
        return [stored.doc["po_no"] for stored in erp.orders.values()]

    await eventually(lambda: len(po_numbers()) >= ORDERS, timeout_s=120)
    await asyncio.sleep(1.0)  # anything duplicated would arrive now
    done.set()
    await watcher
    assert sorted(po_numbers()) == sorted(key for key, _ in records)  # each exactly once
    assert any(held == 1.0 for held, _ in seen), "the intake never held orders-raw"
    # past the limit by at most one fetch: the hold counts the records fetched and not yet
    # handled with the orders waiting (a fetch of 1 MB per partition took ~680 here)
    peak = max(awaiting for _, awaiting in seen)
    print(f"peak: {peak:.0f} orders waiting for their stock answer; held in "
          f"{sum(held for held, _ in seen):.0f} of {len(seen)} scrapes")
    assert peak <= LIMIT + POLL
    final = Samples(await worker.metrics_text())
    assert final.get("retail_sync_orders_awaiting_stock") == 0
    assert final.get("retail_sync_intake_held") == 0
