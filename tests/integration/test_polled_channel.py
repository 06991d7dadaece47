"""A fifth marketplace added through the public contract only (tests/integration/toy_channel.py:
one ChannelPlugin named by RETAIL_SYNC_CHANNEL_PLUGINS, its own RETAIL_SYNC_TOY_* settings):
orders arrive exactly once in the ERP and the cursor (a Faust table) survives a worker restart;
the engine pushes quantities and cancels through the plugin's outbound, paced by the plugin's
rate plan (visible in the rate-limit metrics); the plugin's status table is the engine's; and
``reconcile`` reads the channel through the plugin's reader."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from retail_sync.channels import channels, status_tables
from retail_sync.reconcile import reconcile
from retail_sync.settings import Settings
from retail_sync.stack import Stack
from tests.integration import toy_channel
from tests.integration.helpers import eventually

pytestmark = pytest.mark.integration

PLUGIN = "tests.integration.toy_channel:plugin"


def _append(path: Path, first: int, count: int, sku: str = "TOY-1") -> None:
    with path.open("a") as fh:
        for ref in range(first, first + count):
            fh.write(json.dumps({"ref": f"T{ref}", "sku": sku, "price": "9.50",
                                 # an hour ago: an unknown order older than the retention age
                                 # is refused as a retired one
                                 "ts": int(time.time()) - 3600 + ref}) + "\n")


def _po_numbers(stack: Stack) -> list[str]:
    assert stack.erp is not None
    return sorted(o.doc["po_no"] for o in stack.erp.orders.values())


def _calls(outbox: Path, kind: str) -> list[dict[str, Any]]:
    if not outbox.exists():
        return []
    return [c for c in map(json.loads, outbox.read_text().splitlines()) if c["kind"] == kind]


def _metric(text: str, name: str, **labels: str) -> float | None:
    for line in text.splitlines():
        if line.startswith(f"{name}{{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return None


async def test_toy_channel_through_the_full_plugin_contract(stack: Stack, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    feed, outbox = tmp_path / "toy.jsonl", tmp_path / "toy-outbox.jsonl"
    assert stack.erp is not None
    stack.erp.set_stock("TOY-1", 100)
    stack.erp.set_stock("TOY-0", 0)
    _append(feed, 0, 20)
    stack.env.update({
        "RETAIL_SYNC_CHANNEL_PLUGINS": PLUGIN,
        "RETAIL_SYNC_POLL_INTERVAL_S": "0.5",
        "RETAIL_SYNC_TOY_FEED_FILE": str(feed),  # the plugin's own settings, from the environment
        "RETAIL_SYNC_TOY_OUTBOX_FILE": str(outbox),
    })
    worker = await stack.start_worker()
    expected = [f"toy:T{i}" for i in range(20)]
    await eventually(lambda: _po_numbers(stack) == sorted(expected), timeout_s=60)

    # source + cursor: exactly once across a restart
    await worker.stop()
    # the pushes the outbox holds from the first run: the restarted worker's rate-limit counter
    # starts from zero, so it is compared below with the pushes made after this point only
    pushes_before_restart = len(_calls(outbox, "inventory"))
    worker.start()
    await worker.wait_ready()
    _append(feed, 20, 10)
    expected += [f"toy:T{i}" for i in range(20, 30)]
    await eventually(lambda: _po_numbers(stack) == sorted(expected), timeout_s=60)
    assert stack.erp.stats()["orders_created"] == 30
    raw = await stack.read_topic("orders-raw")
    assert len(raw) == 30  # the restarted worker resumed at its stored cursor: nothing re-polled

    status, found = await worker.get_json("/orders/lookup?id=T25")
    assert status == 200 and found["orders"][0]["order_key"] == "toy:T25"

    # outbound: the engine tells the toy marketplace its sellable quantity of TOY-1 (100 on hand,
    # 30 of them sold above), through the plugin's outbound ...
    await eventually(lambda: any(c["quantities"].get("TOY-1") == 70
                                 for c in _calls(outbox, "inventory")), timeout_s=60)
    # ... paced by the plugin's rate plan, which the rate-limit metrics show: every push the
    # restarted worker made went through it (the outbox is read first: a push made between the
    # two reads is then counted by the metric, never only in the file)
    pushed_since_restart = len(_calls(outbox, "inventory")) - pushes_before_restart
    metrics = await worker.metrics_text()
    calls = _metric(metrics, "retail_sync_ratelimit_calls_total", channel="toy", operation="push")
    assert pushed_since_restart >= 1  # the 70 above was pushed by the restarted worker
    assert calls is not None and calls >= pushed_since_restart, (calls, pushed_since_restart)

    # status table: the plugin's is the engine's
    monkeypatch.setenv("RETAIL_SYNC_TOY_FEED_FILE", str(feed))
    settings = Settings(erp_base_url=stack.erp_url, channel_plugins=PLUGIN)
    assert status_tables(channels(settings))["toy"] is toy_channel.TABLE

    # reconcile: the plugin's reader is read and its orders compared with the ERP's
    report = await reconcile(settings, ["toy"])
    assert report.ok, report.mismatches
    assert report.channels["toy"].marketplace == 30 and report.channels["toy"].matched == 30

    # outbound again: an order for a SKU without stock is cancelled on the marketplace (the
    # default policy) through the plugin's outbound
    _append(feed, 30, 1, sku="TOY-0")
    cancels = await eventually(lambda: _calls(outbox, "cancel"), timeout_s=60)
    assert cancels[0]["order"] == "T30" and cancels[0]["lines"][0]["sku"] == "TOY-0"
