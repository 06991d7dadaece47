"""The webhook front door as a process of its own (``retail-sync ingress``,
retail_sync/ingress_process.py), on the real broker, a real worker, the ERP simulator and the
test Redis:

- webhooks through it reach the ERP exactly once (the worker, RETAIL_SYNC_WORKER_INGRESS=false,
  serves no ingress listener), a repeated delivery is refused as a duplicate
  (its claim is in Redis, shared with the worker), a bad signature gets 401, and its own
  /metrics (token only) and /health (open) say so;
- stopped (SIGTERM) while webhooks come in, it exits 0 and every delivery it answered 200 is in
  the ERP exactly once: nothing acknowledged is lost;
- killed (SIGKILL) while webhooks come in, the senders' retries of the same deliveries go to the
  worker's own listener and every order is in the ERP exactly once;
- the broker killed, it answers 503 within the persist timeout and /health says 503 while
  /health/live says 200;
- without a broker URL it refuses to start.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import pytest

from retail_sync.broker import EmbeddedBroker
from retail_sync.chaos_broker import ANSWER_MARGIN_S
from retail_sync.report import Samples
from retail_sync.simulators.shopify.simulator import ShopifyOrderFactory
from retail_sync.stack import ROOT, Stack
from tests.integration.helpers import (
    eventually,
    headers,
    post_webhook,
    stack_on,
)

pytestmark = pytest.mark.integration


def _po_numbers(stack: Stack) -> list[str]:
    assert stack.erp is not None
    return [stored.doc["po_no"] for stored in stack.erp.orders.values()]


async def test_webhooks_through_an_ingress_process_reach_the_erp_once(stack: Stack) -> None:
    stack.env["RETAIL_SYNC_WORKER_INGRESS"] = "false"  # the worker opens no public port
    ingress = await stack.start_ingress()
    worker = await stack.start_worker()
    body = json.dumps(ShopifyOrderFactory(seed=28).order()).encode()
    with pytest.raises(aiohttp.ClientConnectorError):
        await post_webhook(worker.ingress_url, body, headers(body))
    factory = ShopifyOrderFactory(seed=29)
    orders, first = [], None
    for _ in range(10):
        order = factory.order()
        body = json.dumps(order).encode()
        hdrs = headers(body)
        first = first or (body, hdrs)
        assert await post_webhook(ingress.ingress_url, body, hdrs) == (
            200, {"status": "accepted", "message": "received"})
        orders.append(f"shopify:{order['id']}")
    assert first is not None
    status, answer = await post_webhook(ingress.ingress_url, *first)  # the sender's retry
    assert (status, answer["status"]) == (200, "duplicate")
    body = json.dumps(factory.order()).encode()
    status, answer = await post_webhook(ingress.ingress_url, body, headers(body, secret="wrong"))
    assert (status, answer["status"]) == (401, "bad_signature")

    await eventually(lambda: len(_po_numbers(stack)) >= len(orders), timeout_s=60)
    await asyncio.sleep(1.0)  # a duplicate would arrive now
    assert sorted(_po_numbers(stack)) == sorted(orders)

    samples = Samples(await ingress.metrics_text())
    for outcome, count in (("accepted", 10), ("duplicate", 1), ("bad_signature", 1)):
        assert samples.get("retail_sync_webhooks_total", channel="shopify",
                           outcome=outcome) == count
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{ingress.url}/metrics") as resp:  # no token
            assert resp.status == 401
        async with session.get(f"{ingress.url}/health") as resp:
            health = await resp.json()
            assert resp.status == 200 and health["role"] == "ingress", health
            assert health["broker"]["reachable"] is True
    assert ingress.alive()


async def test_an_ingress_process_stopped_mid_load_loses_nothing_it_acknowledged(
        stack: Stack) -> None:
    ingress = await stack.start_ingress()
    await stack.start_worker()
    factory = ShopifyOrderFactory(seed=30)
    answered: dict[str, int | str] = {}
    stopping = asyncio.Event()

    async def sender(session: aiohttp.ClientSession) -> None:
        while True:
            order = factory.order()
            body = json.dumps(order).encode()
            key = f"shopify:{order['id']}"
            try:
                async with session.post(ingress.webhook_url(), data=body,
                                        headers=headers(body)) as resp:
                    answered[key] = resp.status
            except (aiohttp.ClientError, OSError) as exc:  # the listener closed
                answered[key] = type(exc).__name__
                if stopping.is_set():
                    return
            await asyncio.sleep(0.01)

    timeout = aiohttp.ClientTimeout(total=20)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        senders = [asyncio.create_task(sender(session)) for _ in range(8)]
        await eventually(lambda: sum(s == 200 for s in answered.values()) >= 100, timeout_s=30)
        assert ingress.proc is not None
        ingress.proc.send_signal(signal.SIGTERM)
        stopping.set()
        exit_code = await asyncio.to_thread(ingress.proc.wait, 40)
        await asyncio.wait_for(asyncio.gather(*senders), 30)
    assert exit_code == 0, ingress.log_tail()
    accepted = sorted(key for key, status in answered.items() if status == 200)
    assert len(accepted) >= 100
    assert set(answered.values()) <= {200, 503, "ClientConnectorError",
                                      "ServerDisconnectedError", "ClientOSError"}, answered
    await eventually(lambda: set(accepted) <= set(_po_numbers(stack)), timeout_s=60)
    await asyncio.sleep(1.0)
    in_erp = _po_numbers(stack)
    assert len(in_erp) == len(set(in_erp))  # each once
    print(f"{len(accepted)} acknowledged, {len(in_erp)} in the ERP, "
          f"{sum(s != 200 for s in answered.values())} refused or cut off")


async def test_an_ingress_process_killed_mid_load_its_deliveries_arrive_once_elsewhere(
        stack: Stack) -> None:
    """SIGKILL: no drain, no goodbye. The senders retry each delivery (same webhook id) at the
    worker's own listener, as a load balancer fails over; a delivery the dead process had claimed
    is answered 503 "in progress" until its pending claim expires in Redis, then taken."""
    stack.env["RETAIL_SYNC_WEBHOOK_PENDING_TTL_S"] = "3"
    ingress = await stack.start_ingress()
    worker = await stack.start_worker()
    factory = ShopifyOrderFactory(seed=32)
    outcomes: dict[str, str] = {}
    killed = asyncio.Event()

    async def deliver(session: aiohttp.ClientSession, order: dict[str, object]) -> str:
        body = json.dumps(order).encode()
        hdrs = headers(body)  # one delivery: the same webhook id on every attempt
        for _ in range(200):
            url = (ingress if not killed.is_set() else worker).webhook_url()
            try:
                async with session.post(url, data=body, headers=hdrs) as resp:
                    answer = await resp.json(content_type=None)
                    if resp.status == 200:
                        return str(answer["status"])
            except (aiohttp.ClientError, OSError):
                pass
            await asyncio.sleep(0.1)
        return "gave up"

    async def sender(session: aiohttp.ClientSession) -> None:
        stop_at: float | None = None
        while stop_at is None or time.monotonic() < stop_at:
            order = factory.order()
            outcomes[f"shopify:{order['id']}"] = await deliver(session, order)
            if killed.is_set() and stop_at is None:
                stop_at = time.monotonic() + 1.0

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
        senders = [asyncio.create_task(sender(session)) for _ in range(8)]
        await eventually(lambda: len(outcomes) >= 100, timeout_s=30)
        await ingress.kill()
        killed.set()
        await asyncio.wait_for(asyncio.gather(*senders), 60)
    assert set(outcomes.values()) <= {"accepted", "duplicate"}, outcomes
    await eventually(lambda: set(outcomes) <= set(_po_numbers(stack)), timeout_s=60)
    await asyncio.sleep(1.0)
    in_erp = _po_numbers(stack)
    assert sorted(in_erp) == sorted(outcomes)  # each delivered order once, nothing else


async def test_an_ingress_process_answers_503_while_the_broker_is_away(
        redis_url: str, tmp_path: Path) -> None:
    broker = EmbeddedBroker().start()
    persist_timeout_s = 3.0
    try:
        async with stack_on(broker.url, redis_url, tmp_path,
                            RETAIL_SYNC_WEBHOOK_PERSIST_TIMEOUT_S=str(persist_timeout_s)) as stack:
            ingress = await stack.start_ingress()
            factory = ShopifyOrderFactory(seed=31)
            body = json.dumps(factory.order()).encode()
            assert (await post_webhook(ingress.ingress_url, body, headers(body)))[0] == 200
            assert broker.process is not None
            broker.process.send_signal(signal.SIGKILL)
            broker.process.wait(5)
            killed = time.monotonic()
            answers, health, live = [], set(), set()
            timeout = aiohttp.ClientTimeout(total=12)
            async with aiohttp.ClientSession(timeout=timeout) as session:
                while time.monotonic() - killed < 12:
                    body = json.dumps(factory.order()).encode()
                    started = time.monotonic()
                    async with session.post(ingress.webhook_url(), data=body,
                                            headers=headers(body)) as resp:
                        answers.append((resp.status, time.monotonic() - started))
                    if time.monotonic() - killed > 5:  # the probe has had its chances
                        async with session.get(f"{ingress.url}/health") as resp:
                            health.add(resp.status)
                    async with session.get(f"{ingress.url}/health/live") as resp:
                        live.add(resp.status)
                    await asyncio.sleep(0.5)
            assert {status for status, _ in answers} == {503}, answers
            assert max(s for _, s in answers) <= persist_timeout_s + ANSWER_MARGIN_S, answers
            assert health == {503} and live == {200}, (health, live)
            assert ingress.alive(), ingress.log_tail()
    finally:
        broker.stop()


def test_an_ingress_process_needs_a_broker_url() -> None:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("RETAIL_SYNC_") or k == "RETAIL_SYNC_REDIS_URL"}
    env["PYTHONPATH"] = str(ROOT)
    done = subprocess.run(  # noqa: S603 - our own CLI
        [sys.executable, "-m", "retail_sync.cli", "ingress"], env=env, cwd=str(ROOT),
        capture_output=True, timeout=60, check=False)
    assert done.returncode == 2, done
    assert b"needs RETAIL_SYNC_BROKER_URL" in done.stderr
