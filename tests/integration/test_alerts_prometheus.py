"""Issue 14 §2: a real Prometheus (Debian's prometheus package, /usr/bin/prometheus) scrapes a
real worker whose ERP is slow and evaluates deploy/alerts.yml: the lag alert goes pending on
erp-requests and on no other topic (before, poll-ticks queued behind slow polls and lagged too).

The rules are the repository's, with one number changed so the test needs tens of orders, not a
thousand: ConsumerLagHigh's threshold (1000 -> 50). Scrape and evaluation every second. Orders
come at 2/s for 40 s while the ERP takes one at a time, 3 s each: erp-requests falls ~65 behind;
every other topic keeps up (its lag is what is read but not committed yet, Faust commits every
2.8 s: a few tens at most)."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from retail_sync.broker import free_port
from retail_sync.simulators.erpnext.simulator import ErpSimConfig
from retail_sync.simulators.shopify.simulator import ShopifyOrderFactory
from retail_sync.stack import Stack
from tests.integration.helpers import (
    GROUP_TIMINGS_ENV,
    TEARDOWN_STOP_TIMEOUT_S,
    eventually,
    headers,
    order_body,
)

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS = "/usr/bin/prometheus"
LAG_THRESHOLD = 50
#: sent at 2/s; the ERP takes one every 3 s, so erp-requests ends ~ORDERS * 5/6 behind
ORDERS = 80


def _prometheus() -> str:
    found = shutil.which("prometheus") or (PROMETHEUS if os.path.exists(PROMETHEUS) else None)
    if found:
        return found
    message = "prometheus not installed (Debian's prometheus package; .ci/run installs it)"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def _rules(tmp: Path) -> Path:
    text = (ROOT / "deploy" / "alerts.yml").read_text()
    old = "sum by (job, instance, topic) (retail_sync_consumer_lag) > 1000"
    assert old in text
    path = tmp / "alerts.yml"
    path.write_text(text.replace(old, old.replace("1000", str(LAG_THRESHOLD))))
    return path


async def _alerts(url: str) -> list[dict[str, Any]]:
    async with aiohttp.ClientSession() as session, \
            session.get(f"{url}/api/v1/alerts", timeout=aiohttp.ClientTimeout(total=5)) as resp:
        return (await resp.json())["data"]["alerts"]


async def _query(url: str, expr: str) -> list[dict[str, Any]]:
    async with aiohttp.ClientSession() as session, \
            session.get(f"{url}/api/v1/query", params={"query": expr},
                        timeout=aiohttp.ClientTimeout(total=5)) as resp:
        return (await resp.json())["data"]["result"]


async def test_lag_alert_goes_pending_on_erp_requests_only(broker_url: str, redis_url: str,
                                                           tmp_path: Path) -> None:
    binary = _prometheus()
    # one ERP post at a time, 3 s each (the simulator slows posts only): orders queue on
    # erp-requests; the change feeds keep polling the ERP every second meanwhile
    erp = ErpSimConfig(unknown_items="create", latency_ms=3000)
    env = {"RETAIL_SYNC_REDIS_URL": redis_url, "RETAIL_SYNC_ERP_CONCURRENCY": "1",
           **GROUP_TIMINGS_ENV}
    async with Stack(broker_url=broker_url, workdir=tmp_path, erp_config=erp,
                     tansu=not os.environ.get("RETAIL_SYNC_TEST_BROKER_URL"), env=env,
                     stop_timeout_s=TEARDOWN_STOP_TIMEOUT_S) as stack:
        worker = await stack.start_worker()
        token = tmp_path / "metrics-token"
        token.write_text(stack.admin_token("metrics"))
        port = free_port()
        config = tmp_path / "prometheus.yml"
        config.write_text(yaml.safe_dump({
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s",
                       "scrape_timeout": "900ms"},
            "rule_files": [str(_rules(tmp_path))],
            "scrape_configs": [{
                "job_name": "retail-sync", "metrics_path": "/metrics",
                "authorization": {"type": "Bearer", "credentials_file": str(token)},
                "static_configs": [{"targets": [f"127.0.0.1:{worker.port}"]}]}],
        }))
        log = (tmp_path / "prometheus.log").open("wb")
        prom = subprocess.Popen(  # noqa: S603, ASYNC220 - the system's prometheus, started once
            [binary, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
             f"--web.listen-address=127.0.0.1:{port}"], stdout=log, stderr=subprocess.STDOUT)
        url = f"http://127.0.0.1:{port}"
        watcher: asyncio.Task[None] | None = None
        try:
            async def scraped() -> bool:
                try:
                    up = await _query(url, 'up{job="retail-sync"}')
                except (aiohttp.ClientError, OSError):
                    return False
                return bool(up) and up[0]["value"][1] == "1"
            await eventually(scraped, timeout_s=60, every=0.5)

            seen: set[str] = set()  # every topic a lag alert was pending/firing on, all along

            async def watch() -> None:
                while True:
                    try:
                        seen.update(a["labels"]["topic"] for a in await _alerts(url)
                                    if a["labels"]["alertname"].startswith("ConsumerLag"))
                    except (aiohttp.ClientError, OSError, KeyError):
                        pass
                    await asyncio.sleep(0.5)
            watcher = asyncio.create_task(watch())

            factory = ShopifyOrderFactory(seed=1414)
            async with aiohttp.ClientSession() as session:
                for _ in range(ORDERS):
                    _, body = order_body(factory)
                    async with session.post(worker.webhook_url(), data=body,
                                            headers=headers(body)) as resp:
                        assert resp.status == 200, await resp.text()
                    await asyncio.sleep(0.5)

            erp_requests = stack.topic("erp-requests")

            async def lag_pending() -> list[dict[str, Any]]:
                return [a for a in await _alerts(url) if a["labels"]["alertname"] == "ConsumerLagHigh"]
            alerts = await eventually(lag_pending, timeout_s=60, every=0.5)
            assert {a["labels"]["topic"] for a in alerts} == {erp_requests}, alerts
            assert all(a["state"] in ("pending", "firing") for a in alerts)
            # while orders queue on erp-requests, poll ticks do not queue: 10 s more of polls
            await asyncio.sleep(10)
            lag_alerts = [a for a in await _alerts(url)
                          if a["labels"]["alertname"].startswith("ConsumerLag")]
            assert {a["labels"]["topic"] for a in lag_alerts} == {erp_requests}, lag_alerts
            ticks = await _query(url, f'max_over_time(sum(retail_sync_consumer_lag'
                                      f'{{topic="{stack.topic("poll-ticks")}"}})[1m:1s])')
            assert not ticks or float(ticks[0]["value"][1]) < LAG_THRESHOLD, ticks
            watcher.cancel()
            assert seen == {erp_requests}, seen
        finally:
            if watcher is not None:
                watcher.cancel()
            prom.terminate()
            try:
                prom.wait(timeout=15)
            except subprocess.TimeoutExpired:
                prom.kill()
                prom.wait()
            log.close()
