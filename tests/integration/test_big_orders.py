"""Big orders (120 lines, ~37 KB as canonical orders) in a backlog, with the worker's record
size limited to 128 KiB: the batch records that carry whole orders (ERP requests, warehouse
commands) would be larger, so the outbox splits them (agents/outbox.py), and every order reaches
the ERP once. Before the split the order agent crashed on the producer's MessageSizeTooLargeError
and 54 of the 60 orders never reached the ERP (the crashed batch was acknowledged by Faust's
``take_events``)."""

from __future__ import annotations

import asyncio
import json

import pytest
from aiokafka import AIOKafkaProducer

from retail_sync.simulators.shopify.orders import DEFAULT_SKUS, ShopifyOrderFactory
from retail_sync.stack import Stack
from retail_sync.streams.models import RawOrderMessage, utcnow
from tests.integration.helpers import eventually
from tests.integration.test_order_path import erp_po_numbers

pytestmark = pytest.mark.integration
LIMIT = 128 * 1024  # bytes per record the worker may send


async def test_a_backlog_of_big_orders_all_reach_the_erp_once(stack: Stack) -> None:
    # a small request limit, so that a batch of a few big orders must be split
    stack.env.update({"RETAIL_SYNC_PRODUCER_MAX_REQUEST_BYTES": str(LIMIT),
                      "RETAIL_SYNC_WEBHOOK_MAX_BODY_BYTES": str(LIMIT - 64 * 1024)})
    worker = await stack.start_worker()
    await worker.stop()  # the topics exist; the orders queue up while no worker runs
    factory = ShopifyOrderFactory(seed=77)
    orders = [factory.order(lines=[(DEFAULT_SKUS[i % 3], 1) for i in range(120)])
              for _ in range(60)]
    producer = AIOKafkaProducer(bootstrap_servers=stack.bootstrap, max_request_size=2**20)
    await producer.start()
    try:
        for order in orders:
            raw = RawOrderMessage(channel="shopify", topic="orders/create", received_at=utcnow(),
                                  delivery_id=f"big-{order['id']}", body=json.dumps(order))
            await producer.send_and_wait(stack.topic("orders-raw"), raw.model_dump_json().encode(),
                                         key=f"shopify:{order['id']}".encode())
    finally:
        await producer.stop()
    worker.start()
    await worker.wait_ready()
    expected = sorted(f"shopify:{o['id']}" for o in orders)
    try:
        await eventually(lambda: sorted(erp_po_numbers(stack)) == expected, timeout_s=120)
    except AssertionError:
        raise AssertionError(f"ERP has {len(erp_po_numbers(stack))} of {len(expected)}; worker "
                             f"log:\n{worker.log_tail(60)}") from None
    await asyncio.sleep(1.0)
    assert sorted(erp_po_numbers(stack)) == expected  # once each
    for name in ("erp-requests", "order-events", "stock-events", "wms-requests"):
        sizes = [len(r.value or b"") for r in await stack.read_topic(name)]
        assert sizes and max(sizes) <= LIMIT, (name, max(sizes, default=0))
