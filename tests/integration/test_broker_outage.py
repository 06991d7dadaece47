"""A broker outage never turns into lost orders (ARCHITECTURE §5f.2).

- The broker killed (SIGKILL, a real Tansu): webhooks are answered 503 within the persist
  timeout (they hung past 10 s before), ``/health`` says 503 while ``/health/live`` says 200,
  and the worker is still running a minute later (it exited ~50 s after the kill before).
- The broker cut off mid-load for 15 s and back (retail_sync/chaos_broker.py says why through a
  proxy: the embedded Tansu keeps records in memory only): every offered order is accepted with
  a 200 after the sender's retries and is in the ERP exactly once; the worker never exits.
- A worker SIGKILLed leaves no orphaned embedded broker behind.
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
from retail_sync.chaos_broker import ANSWER_MARGIN_S, ProxiedBroker, broker_outage
from retail_sync.simulators.shopify.simulator import ShopifyOrderFactory
from retail_sync.stack import ROOT
from tests.integration.helpers import (
    child_pids,
    headers,
    pid_alive,
    stack_on,
)

pytestmark = pytest.mark.integration

PERSIST_TIMEOUT_S = 3.0


async def _post(session: aiohttp.ClientSession, url: str, factory: ShopifyOrderFactory,
                ) -> tuple[int | str, float]:
    body = json.dumps(factory.order()).encode()
    started = time.monotonic()
    try:
        async with session.post(f"{url}/webhooks/shopify/orders/create", data=body,
                                headers=headers(body)) as resp:
            return resp.status, time.monotonic() - started
    except TimeoutError:
        return "timeout", time.monotonic() - started


async def _status(session: aiohttp.ClientSession, url: str) -> int | str:
    try:
        async with session.get(url) as resp:
            return resp.status
    except (aiohttp.ClientError, TimeoutError) as exc:
        return type(exc).__name__


async def test_broker_killed_webhooks_answer_503_in_time_and_the_worker_stays(
        redis_url: str, tmp_path: Path) -> None:
    broker = EmbeddedBroker().start()
    try:
        async with stack_on(broker.url, redis_url, tmp_path,
                            RETAIL_SYNC_WEBHOOK_PERSIST_TIMEOUT_S=str(PERSIST_TIMEOUT_S)) as stack:
            worker = await stack.start_worker()
            factory = ShopifyOrderFactory(seed=11)
            timeout = aiohttp.ClientTimeout(total=12)
            async with aiohttp.ClientSession(timeout=timeout) as session:
                assert (await _post(session, worker.ingress_url, factory))[0] == 200
                assert broker.process is not None
                broker.process.send_signal(signal.SIGKILL)
                broker.process.wait(5)
                killed = time.monotonic()
                answers, health, live = [], set(), set()
                while time.monotonic() - killed < 60:  # the worker exited at ~50 s before
                    answers.append(await _post(session, worker.ingress_url, factory))
                    if time.monotonic() - killed > 5:  # the probe has had its chances
                        health.add(await _status(session, f"{worker.url}/health"))
                    live.add(await _status(session, f"{worker.url}/health/live"))
                    assert worker.alive(), f"the worker exited:\n{worker.log_tail()}"
                    await asyncio.sleep(1.0)
            statuses = {status for status, _ in answers}
            slowest = max(seconds for _, seconds in answers)
            assert statuses == {503}, answers
            assert slowest <= PERSIST_TIMEOUT_S + ANSWER_MARGIN_S, answers
            assert health == {503}, health
            assert live == {200}, live
            assert worker.alive()
    finally:
        broker.stop()


async def test_broker_outage_mid_load_loses_and_duplicates_nothing(
        redis_url: str, tmp_path: Path) -> None:
    async with ProxiedBroker() as proxied, stack_on(proxied.url, redis_url, tmp_path) as stack:
        report = await broker_outage(stack, proxied.proxy, rate_per_s=15, before_s=5,
                                     outage_s=15, after_s=5, persist_timeout_s=PERSIST_TIMEOUT_S)
        worker = stack.workers[0]
        assert not report.failures(), (report.failures(), report.rows(), worker.log_tail())
        assert len(report.offered) > 200  # the load went on through the outage


_STARTER = """
import sys, time
from retail_sync.broker import broker_for
with broker_for(None) as url:
    print(url, flush=True)
    time.sleep(600)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_embedded_broker_dies_with_the_process_that_started_it() -> None:
    """The worker's own embedded broker (started by ``broker_for``, as ``retail-sync worker``
    does) is gone within seconds of the worker being SIGKILLed (it stayed, orphaned)."""
    starter = subprocess.Popen(  # noqa: S603 - our own code
        [sys.executable, "-c", _STARTER], stdout=subprocess.PIPE, cwd=str(ROOT),
        env={**os.environ, "PYTHONPATH": str(ROOT)})
    tansu = None
    try:
        assert starter.stdout is not None
        assert starter.stdout.readline().startswith(b"kafka://")
        tansu = next(iter(child_pids(starter.pid)))
        assert pid_alive(tansu)
        starter.send_signal(signal.SIGKILL)
        starter.wait(5)
        deadline = time.monotonic() + 5
        while pid_alive(tansu) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not pid_alive(tansu), f"the broker {tansu} outlived its worker"
    finally:
        if starter.poll() is None:
            starter.kill()
        if tansu is not None and pid_alive(tansu):
            os.kill(tansu, signal.SIGKILL)
