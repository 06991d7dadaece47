"""Webhook dedupe under a burst (issue 11, item 3): two real workers share one Redis, 300
deliveries arrive at once, duplicates included, and Redis never gets "too busy" to dedupe.

Before the fix each worker's redis-py pool allowed 100 connections and raised
``MaxConnectionsError`` past them; the deduper took that for a Redis outage and deduplicated in
its own process only, so a retry that reached the other worker was accepted a second time.
"""

from __future__ import annotations

import asyncio
import re
import uuid

import aiohttp
import pytest

from retail_sync.simulators.shopify.simulator import ShopifyOrderFactory
from retail_sync.stack import Stack, WorkerProcess
from tests.integration.helpers import all_assigned, eventually, headers, order_body

pytestmark = pytest.mark.integration

PATH = "/webhooks/shopify/orders/create"


async def deliver(session: aiohttp.ClientSession, worker: WorkerProcess, body: bytes,
                  webhook_id: str, start: asyncio.Event) -> tuple[str, str, list[str]]:
    """One delivery as Shopify makes it: retried (same webhook id) while the answer is a 503
    ("in_progress": the other copy is being written right now). (webhook id, final status, every
    status seen)."""
    await start.wait()
    seen: list[str] = []
    for _ in range(40):
        async with session.post(worker.ingress_url + PATH, data=body,
                                headers=headers(body, webhook_id=webhook_id)) as resp:
            answer = await resp.json(content_type=None)
        seen.append(f"{resp.status}:{answer.get('status')}")
        if resp.status != 503:
            return webhook_id, str(answer.get("status")), seen
        await asyncio.sleep(0.25)
    return webhook_id, "gave_up", seen


async def test_300_concurrent_deliveries_with_duplicates_on_two_workers(stack: Stack) -> None:
    first = await stack.start_worker("w1")
    second = await stack.start_worker("w2")
    await eventually(lambda: all_assigned(first, second), timeout_s=60)
    workers = (first, second)
    factory = ShopifyOrderFactory(seed=1111)

    connector = aiohttp.TCPConnector(limit=0)  # aiohttp's default 100 would queue our burst
    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        # 100 deliveries received earlier, one at a time, half on each worker
        earlier = []
        for i in range(100):
            _, body = order_body(factory)
            webhook_id = f"early-{uuid.uuid4()}"
            go = asyncio.Event()
            go.set()
            _, status, seen = await deliver(session, workers[i % 2], body, webhook_id, go)
            assert status == "accepted", seen
            earlier.append((webhook_id, body, i % 2))

        # The burst: 300 requests at once. 100 are Shopify's retries of the earlier deliveries,
        # each to the OTHER worker; 100 new deliveries arrive twice each, one copy per worker.
        start = asyncio.Event()
        tasks = [deliver(session, workers[1 - on], body, wid, start) for wid, body, on in earlier]
        fresh = []
        for _ in range(100):
            _, body = order_body(factory)
            webhook_id = f"new-{uuid.uuid4()}"
            fresh.append(webhook_id)
            tasks += [deliver(session, worker, body, webhook_id, start) for worker in workers]
        assert len(tasks) == 300
        pending = [asyncio.ensure_future(t) for t in tasks]
        await asyncio.sleep(0.2)
        start.set()
        results = await asyncio.gather(*pending)

    by_id: dict[str, list[str]] = {}
    for webhook_id, status, _ in results:
        by_id.setdefault(webhook_id, []).append(status)
    retried = [(wid, by_id[wid]) for wid, _, _ in earlier]
    wrong_retries = [(wid, s) for wid, s in retried if s != ["duplicate"]]
    assert not wrong_retries, (f"{len(wrong_retries)} of 100 retries of earlier deliveries were "
                               f"not answered 'duplicate': {wrong_retries[:5]}")
    wrong_fresh = [(wid, by_id[wid]) for wid in fresh
                   if sorted(by_id[wid]) != ["accepted", "duplicate"]]
    assert not wrong_fresh, (f"{len(wrong_fresh)} of 100 new deliveries sent twice were not "
                             f"accepted exactly once: {wrong_fresh[:5]}")

    for worker in workers:
        text = await worker.metrics_text()
        fallbacks = re.findall(r"^retail_sync_dedupe_fallback_total\{[^}]*\} (\S+)$", text, re.M)
        assert fallbacks, f"{worker.name} exports no retail_sync_dedupe_fallback_total"
        assert sum(float(v) for v in fallbacks) == 0, (worker.name, fallbacks)

    # what reached Kafka: each delivery written once (200 raw records), so each order once
    raw = await stack.read_topic("orders-raw", timeout_s=15)
    assert len(raw) == 200, f"{len(raw)} raw records for 200 distinct deliveries"
