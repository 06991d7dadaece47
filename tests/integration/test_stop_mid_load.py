"""A worker told to stop mid-load never says 200 for a record the broker does not have
(ARCHITECTURE §5f.2: "if it must exit, it stops accepting first").

A real worker takes signed webhooks from many concurrent senders; it is sent SIGTERM in the
middle of the load (and, in the second case, the broker is cut off at the same moment: a node
drained while the network to the broker fails). The broker runs outside the worker, so it
outlives it. Afterwards the raw orders topic is read straight from the broker: every delivery
answered 200 is on it. The worker is started again and every order answered 200 reaches the ERP
exactly once. Deliveries answered 503, or not answered (connection refused or reset), are the
sender's to retry and are not checked. An order answered 200 that does not reach the ERP fails
with where it stopped: its records on each hop's topic, the group's committed offsets, its state
(this found a stock answer replayed after the restart being ignored while the ERP request sent
with its decision had been lost with the broker: streams/rules/lifecycle.py _on_stock).
"""

from __future__ import annotations

import asyncio
import json
import signal
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import orjson
import pytest

from retail_sync.chaos_broker import ProxiedBroker
from retail_sync.simulators.erpnext.simulator import ErpSimConfig
from retail_sync.simulators.shopify.simulator import ShopifyOrderFactory
from retail_sync.stack import Stack, WorkerProcess
from tests.integration.helpers import (
    GROUP_TIMINGS_ENV,
    TEARDOWN_STOP_TIMEOUT_S,
    eventually,
    headers,
    where_orders_stopped,
)

pytestmark = pytest.mark.integration

PATH = "/webhooks/shopify/orders/create"
SENDERS = 32
#: the senders' load before SIGTERM: 32 deliveries are in flight whatever its length, and every
#: order it brings in must reach the ERP after the restart (2 s: ~1,500 orders; 4 s took ~3,500)
LOAD_BEFORE_STOP_S = 2.0
#: how long a stopping worker may take before it is killed (an orchestrator's grace period)
GRACE_S = 30.0
#: with the broker cut the worker cannot finish stopping (Faust waits for the broker), so it is
#: killed at the end of this shorter grace: three persist timeouts, while the last deliveries in
#: flight at SIGTERM got their answers (503 within the persist timeout) long before
GRACE_BROKER_CUT_S = 10.0


@dataclass
class Delivery:
    webhook_id: str
    order_key: str
    outcome: str  # "200", "503", ... or the client error's name
    started: float
    answered: float


async def _send(session: aiohttp.ClientSession, url: str, factory: ShopifyOrderFactory,
                seen: list[Delivery], stop: asyncio.Event) -> None:
    """One sender: a new signed delivery after each answer, until told to stop."""
    while not stop.is_set():
        order = factory.order()
        body = json.dumps(order).encode()
        webhook_id = str(uuid.uuid4())
        started = time.monotonic()
        try:
            async with session.post(url + PATH, data=body,
                                    headers=headers(body, webhook_id=webhook_id)) as resp:
                await resp.read()
                outcome = str(resp.status)
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            outcome = type(exc).__name__
        seen.append(Delivery(webhook_id, f"shopify:{order['id']}", outcome, started,
                             time.monotonic()))
        if outcome != "200":
            await asyncio.sleep(0.1)  # 503 or gone: as a sender backs off, no busy loop


async def _first_said_stopping(session: aiohttp.ClientSession, url: str) -> float:
    """When ``/health/live`` first answered 503 "stopping" (monotonic, on receipt). A delivery
    sent after that reaches a worker that already knows it is stopping: it must not get 200."""
    while True:
        try:
            async with session.get(url + "/health/live") as resp:
                if resp.status == 503 and (await resp.json())["status"] == "stopping":
                    return time.monotonic()
        except (aiohttp.ClientError, OSError, TimeoutError):
            return float("inf")  # gone before it was seen stopping: nothing to check
        await asyncio.sleep(0.05)


async def _exited(worker: WorkerProcess, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while worker.alive() and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    return not worker.alive()


@pytest.mark.parametrize("cut_broker", [False, True], ids=["sigterm", "sigterm+broker_cut"])
async def test_no_200_for_a_record_the_broker_lacks_when_stopped_mid_load(
        redis_url: str, tmp_path: Path, cut_broker: bool) -> None:
    async with ProxiedBroker() as proxied, Stack(
            broker_url=proxied.url, workdir=tmp_path, erp_config=ErpSimConfig(), tansu=True,
            env={"RETAIL_SYNC_REDIS_URL": redis_url, **GROUP_TIMINGS_ENV},
            stop_timeout_s=TEARDOWN_STOP_TIMEOUT_S) as stack:
        worker = await stack.start_worker()
        factory = ShopifyOrderFactory(seed=2024)
        seen: list[Delivery] = []
        stop_sending = asyncio.Event()
        connector = aiohttp.TCPConnector(limit=0)
        timeout = aiohttp.ClientTimeout(total=10)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
            senders = [asyncio.create_task(_send(session, worker.ingress_url, factory, seen, stop_sending))
                       for _ in range(SENDERS)]
            watching = asyncio.create_task(_first_said_stopping(session, worker.url))
            await asyncio.sleep(LOAD_BEFORE_STOP_S)
            assert worker.proc is not None and worker.alive(), worker.log_tail()
            worker.proc.send_signal(signal.SIGTERM)
            if cut_broker:
                await proxied.proxy.cut()
            stopped_at = time.monotonic()
            exited_by_itself = await _exited(worker, GRACE_BROKER_CUT_S if cut_broker else GRACE_S)
            if not exited_by_itself:
                await worker.kill()
            await asyncio.sleep(1.0)  # a few refused connections: nothing listens any more
            stop_sending.set()
            await asyncio.gather(*senders)
            said_stopping_at = await watching
        if cut_broker:
            await proxied.proxy.restore()

        outcomes = Counter(d.outcome for d in seen)
        accepted = [d for d in seen if d.outcome == "200"]
        in_flight = [d for d in seen if d.started < stopped_at < d.answered]
        after = Counter(d.outcome for d in seen if d.answered >= stopped_at)
        late = [d for d in seen if d.started > said_stopping_at]
        summary = (f"outcomes {dict(outcomes)}; in flight at SIGTERM {len(in_flight)}; "
                   f"answered after SIGTERM {dict(after)}; sent after /health/live said "
                   f"stopping ({said_stopping_at - stopped_at:.2f} s after SIGTERM) "
                   f"{dict(Counter(d.outcome for d in late))}; exited by itself {exited_by_itself}")
        assert len(accepted) > 50, summary  # the load was real
        assert in_flight, summary  # SIGTERM came in the middle of deliveries
        assert set(outcomes) <= {"200", "503", "ClientConnectorError", "ServerDisconnectedError",
                                 "ClientOSError"}, summary
        if not cut_broker:
            assert exited_by_itself, f"{summary}\n{worker.log_tail()}"
        # it stops accepting first: once it says it is stopping, no delivery is taken
        assert said_stopping_at < float("inf") and late, summary
        assert not [d for d in late if d.outcome == "200"], summary

        # what the broker has, read raw (no worker, no consumer group)
        raw = await stack.read_topic("orders-raw", timeout_s=30)
        on_topic = {orjson.loads(r.value)["delivery_id"] for r in raw}
        missing = [d for d in accepted if d.webhook_id not in on_topic]
        assert not missing, (f"{len(missing)} deliveries answered 200 are not on the broker: "
                             f"{missing[:3]}; {summary}\n{worker.log_tail()}")

        # the same worker again: each order answered 200 reaches the ERP exactly once
        worker.start()
        await worker.wait_ready()
        erp = stack.erp
        assert erp is not None
        wanted = {d.order_key for d in accepted}

        def erp_orders() -> Counter[str]:
            return Counter(s.doc["po_no"] for s in erp.orders.values())

        try:
            await eventually(lambda: wanted <= set(erp_orders()), timeout_s=180, every=1.0)
        except AssertionError:
            missing_keys = wanted - set(erp_orders())
            raise AssertionError(
                f"{len(missing_keys)} orders answered 200 not in the ERP: "
                f"{await where_orders_stopped(stack, worker, missing_keys, raw)}; {summary}\n"
                f"{worker.log_tail()}") from None
        await asyncio.sleep(2.0)  # a late duplicate would show now
        twice = [k for k, n in erp_orders().items() if n > 1]
        assert not twice, f"sales orders twice: {twice[:5]}; {summary}"
        print(summary, f"; raw records {len(raw)}, ERP orders {len(erp_orders())}")
