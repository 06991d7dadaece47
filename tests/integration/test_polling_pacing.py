"""Polling that follows the real rate plans (issue 12 item 4), with the real simulators over HTTP,
the real limiter (Redis-shared and in-process) and real worker processes.

- One 429 on Amazon's getOrders (its bucket emptied by someone else) costs at most one plan
  interval: the next getOrders call, and the order placed meanwhile, come one interval later
  (before: about two, the issue saw calls at 10, 130 and 323 s on a one-a-minute plan), and
  Amazon never has to say 429 twice. Walmart orders placed while Amazon waits arrive within
  seconds: each channel has its own poller (before, the one poller slept in Amazon's limiter).
  Amazon's plan is sped up 6 times (one getOrders call every 10 s); the limiter knows only what
  the simulator's headers say, so its clock is the plan's, scaled honestly.
- SIGTERM while the poller sleeps in Amazon's limiter (a one-call-per-1000-s plan): the worker
  (with its own embedded broker) stops cleanly within seconds, and the broker with it (before,
  it ignored SIGTERM until killed).
"""

from __future__ import annotations

import asyncio
import signal
import time
from typing import Any

import pytest

from retail_sync.simulators.amazon.simulator import AmazonSimConfig, AmazonSimulator
from retail_sync.simulators.walmart.simulator import WalmartSimConfig, WalmartSimulator
from retail_sync.stack import Stack
from tests.integration.helpers import child_pids, eventually, pid_alive

pytestmark = pytest.mark.integration

SCALE = 6  # getOrders: 0.0167/s x 6 = one call every ~10 s
INTERVAL_S = 1 / (0.0167 * SCALE)


class RecordingAmazon(AmazonSimulator):
    """The Amazon simulator, noting when each call came and what it was answered."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.calls: list[tuple[float, str, int]] = []

    async def _guarded(self, request: Any, handler: Any, operation: str) -> Any:
        response = await super()._guarded(request, handler, operation)
        self.calls.append((time.monotonic(), operation, response.status))
        return response

    def get_orders(self, since: float = 0.0) -> list[tuple[float, int]]:
        return [(t, status) for t, op, status in self.calls if op == "getOrders" and t >= since]


def _po_numbers(stack: Stack, channel: str) -> set[str]:
    assert stack.erp is not None
    return {o.doc["po_no"] for o in stack.erp.orders.values()
            if o.doc["po_no"].startswith(f"{channel}:")}


@pytest.mark.parametrize("budgets", ["redis", "local"])
async def test_an_amazon_429_costs_one_plan_interval_and_walmart_goes_on(stack: Stack, budgets: str) -> None:
    amazon = RecordingAmazon(AmazonSimConfig(time_scale=SCALE, seed=21))
    walmart = WalmartSimulator(WalmartSimConfig(seed=22))
    stack.env.update({
        "RETAIL_SYNC_AMAZON_BASE_URL": await amazon.start(),
        "RETAIL_SYNC_WALMART_BASE_URL": await walmart.start(),
        "RETAIL_SYNC_POLL_INTERVAL_S": "0.5",
    })
    if budgets == "local":
        stack.env["RETAIL_SYNC_REDIS_URL"] = "none"
    try:
        want = {f"amazon:{i}" for i in amazon.generate_orders(2)}
        worker = await stack.start_worker()
        await eventually(lambda: _po_numbers(stack, "amazon") == want, timeout_s=60)

        # someone else spends Amazon's getOrders bucket: the worker's next call earns a 429
        bucket = amazon.buckets["getOrders"]
        bucket.tokens, bucket._at = 0.0, bucket.clock()
        await eventually(lambda: any(s == 429 for _, s in amazon.get_orders()), timeout_s=30)
        t0 = next(t for t, s in amazon.get_orders() if s == 429)
        late_amazon = {f"amazon:{i}" for i in amazon.generate_orders(1)}

        # while Amazon waits (the 429's interval, then its limiter's next slot, an interval on),
        # Walmart orders keep arriving within seconds
        async def amazon_arrival() -> float:
            await eventually(lambda: late_amazon <= _po_numbers(stack, "amazon"),
                             timeout_s=4 * INTERVAL_S, every=0.1)
            return time.monotonic() - t0

        watch = asyncio.ensure_future(amazon_arrival())
        lags: list[float] = []
        while time.monotonic() - t0 < 2.5 * INTERVAL_S:
            placed = time.monotonic()
            po = f"walmart:{walmart.generate_orders(1)[0]['purchaseOrderId']}"
            await eventually(lambda po=po: po in _po_numbers(stack, "walmart"), timeout_s=30, every=0.1)
            lags.append(time.monotonic() - placed)
            await asyncio.sleep(max(0.0, placed + 1.0 - time.monotonic()))
        arrived = await watch

        after = amazon.get_orders(t0 + 0.001)
        assert after and after[0][1] == 200, after  # Amazon did not have to say 429 twice
        next_call = after[0][0] - t0
        assert 0.9 * INTERVAL_S <= next_call <= INTERVAL_S + 2.0, (next_call, INTERVAL_S)
        assert arrived <= INTERVAL_S + 8.0, arrived  # the call, then the ERP
        calls = [(round(t - t0, 1), s) for t, s in amazon.get_orders()]
        assert len(lags) >= 3 and max(lags) < 5.0, (lags, calls, worker.log_tail(10))  # Walmart on
        assert sum(1 for _, s in amazon.get_orders() if s == 429) == 1
    finally:
        await amazon.stop()
        await walmart.stop()


async def test_sigterm_while_the_poller_sleeps_in_amazons_limiter_stops_cleanly(stack: Stack) -> None:
    amazon = RecordingAmazon(AmazonSimConfig(
        seed=23, rate_overrides={"getOrders": {"rate": 0.001, "burst": 1}}))  # 1 call / 1000 s
    try:
        stack.env.update({
            "RETAIL_SYNC_AMAZON_BASE_URL": await amazon.start(),
            "RETAIL_SYNC_POLL_INTERVAL_S": "0.5",
            # our budget as the plan (Amazon's header names the rate, not the burst)
            "RETAIL_SYNC_RATE_LIMITS": '{"amazon:getOrders": [0.001, 1]}',
            "RETAIL_SYNC_BROKER_URL": "",  # its own embedded broker, a child process
            "RETAIL_SYNC_EMBEDDED_BROKER": "true",
        })
        worker = await stack.start_worker()
        assert worker.proc is not None
        brokers = child_pids(worker.proc.pid)
        assert brokers and all(pid_alive(pid) for pid in brokers)
        await eventually(lambda: len(amazon.get_orders()) >= 1, timeout_s=30)
        await asyncio.sleep(3.0)  # several ticks: the poller now sleeps in the limiter (~1100 s)
        assert len(amazon.get_orders()) == 1

        started = time.monotonic()
        worker.proc.send_signal(signal.SIGTERM)
        while worker.proc.poll() is None and time.monotonic() - started < 15:
            await asyncio.sleep(0.1)
        stopped_in = time.monotonic() - started
        assert worker.proc.poll() is not None, f"no exit 15 s after SIGTERM:\n{worker.log_tail()}"
        assert worker.proc.returncode == 0, worker.log_tail()
        deadline = time.monotonic() + 5
        while any(pid_alive(pid) for pid in brokers) and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        assert not any(pid_alive(pid) for pid in brokers), "the embedded broker outlived its worker"
        assert stopped_in < 15
        assert "poll of amazon cancelled" in worker.log_path.read_text(errors="replace")
    finally:
        await amazon.stop()

