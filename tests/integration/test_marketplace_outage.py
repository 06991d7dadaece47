"""A marketplace is unreachable for a while in the middle of a run: its stock updates are held (in
Kafka, behind the batch its push agent keeps retrying) and delivered after it comes back; the
other channel is not delayed; nothing is lost. The same holds for the marketplace commands
(seller cancel, shipment, refund): an unreachable marketplace's commands wait behind its open
circuit on its own topic while another channel's go through."""

from __future__ import annotations

import time

import orjson
import pytest

from retail_sync.broker import free_port
from retail_sync.simulators.amazon.simulator import AmazonSimConfig, AmazonSimulator
from retail_sync.simulators.regional.simulator import RegionalSimConfig, RegionalSimulator
from retail_sync.simulators.shopify.simulator import ShopifyOrderFactory
from retail_sync.stack import Stack, WorkerProcess
from tests.integration.helpers import eventually, headers, order_body, post_webhook

pytestmark = pytest.mark.integration

SKUS = ["OUTAGE-A", "OUTAGE-B"]


async def test_unreachable_marketplace_gets_its_updates_after_recovery(stack: Stack) -> None:
    erp = stack.erp
    assert erp is not None
    for sku in SKUS:
        erp.set_stock(sku, 10)
    amazon = AmazonSimulator(AmazonSimConfig(time_scale=1000, seed=31, skus=SKUS))
    amazon_url = await amazon.start()
    port = int(amazon_url.rsplit(":", 1)[1])
    drop, outbox = stack.workdir / "regional-drop", stack.workdir / "regional-outbox"
    drop.mkdir(parents=True)
    regional = RegionalSimulator(drop, seed=32, outbox_dir=outbox)
    stack.env.update({
        "RETAIL_SYNC_AMAZON_BASE_URL": amazon_url,
        "RETAIL_SYNC_REGIONAL_DROP_DIR": str(drop),
        "RETAIL_SYNC_REGIONAL_OUTBOX_DIR": str(outbox),
        "RETAIL_SYNC_ERP_STOCK_POLL_INTERVAL_S": "0.3",
        "RETAIL_SYNC_BREAKER_FAILURES": "2",
        "RETAIL_SYNC_BREAKER_COOL_DOWN_S": "0.5",
        "RETAIL_SYNC_BREAKER_MAX_COOL_DOWN_S": "2",
        "RETAIL_SYNC_ERP_BACKOFF_MAX_S": "0.5",
    })

    def shown(sim, sku: str) -> int | None:
        if sim is regional:
            regional.process_outbox()
        return sim.listings.quantity(sku)

    try:
        worker = await stack.start_worker()
        for sku in SKUS:
            await eventually(lambda s=sku: shown(amazon, s) == 10 and shown(regional, s) == 10,
                             timeout_s=60)

        await amazon.stop()  # Amazon is unreachable from here on
        down_at = time.monotonic()
        for qty in (7, 5, 3):  # several changes while it is down: only the last one matters
            erp.set_stock(SKUS[0], qty)
            await eventually(lambda q=qty: shown(regional, SKUS[0]) == q, timeout_s=20)
        erp.set_stock(SKUS[1], 4)
        await eventually(lambda: shown(regional, SKUS[1]) == 4, timeout_s=20)
        regional_in = time.monotonic() - down_at  # the other channel went on meanwhile
        assert shown(amazon, SKUS[0]) == 10 and shown(amazon, SKUS[1]) == 10

        await amazon.start("127.0.0.1", port)  # back
        await eventually(lambda: shown(amazon, SKUS[0]) == 3 and shown(amazon, SKUS[1]) == 4,
                         timeout_s=60)

        async def told_amazon() -> dict | None:
            """The engine's record of the push: it comes back through stock-events a moment
            after Amazon took the quantity."""
            status, view = await worker.get_json(f"/inventory/{SKUS[0]}")
            told = view.get("told", {}).get("amazon") if status == 200 else None
            return told if told and told["quantity"] == 3 else None
        told = await eventually(told_amazon, timeout_s=20)
        assert told["ok"] is True
        assert regional_in < 20
        metrics = await worker.metrics_text()
        assert 'retail_sync_circuit_open{system="amazon"} 0.0' in metrics  # closed again
    finally:
        await amazon.stop()


SHORT = "OUTAGE-SHORT"  # tracked at 0 on hand: every order for it is cancelled on its marketplace
HELD_SHOPIFY_ORDERS = 10  # more than the four actors the shared command agent used to have


async def _state(worker: WorkerProcess, key: str) -> dict | None:
    status, body = await worker.get_json(f"/orders/{key}")
    return body if status == 200 else None


def _events(state: dict | None) -> list[str]:
    return [t["event"] for t in state["timeline"]] if state else []


async def test_an_unreachable_marketplace_does_not_hold_back_another_channels_commands(
        stack: Stack) -> None:
    """Shopify's Admin API is unreachable and its circuit stays open (5 min cool-down) while ten
    seller cancellations for it queue up; a regional order that must be cancelled afterwards is
    cancelled on its marketplace within seconds. (With one shared command topic the Shopify
    commands waiting at the breaker took every actor and the regional one waited minutes.)"""
    erp = stack.erp
    assert erp is not None
    erp.set_stock(SHORT, 0)
    drop, outbox = stack.workdir / "regional-drop", stack.workdir / "regional-outbox"
    drop.mkdir(parents=True)
    regional = RegionalSimulator(drop, seed=33, outbox_dir=outbox, config=RegionalSimConfig(
        skus=[SHORT], max_quantity=1, statuses=["pending"], listing_mode="allow"))
    stack.env.update({
        "RETAIL_SYNC_SHOPIFY_ADMIN_BASE_URL": f"http://127.0.0.1:{free_port()}",  # nobody there
        "RETAIL_SYNC_REGIONAL_DROP_DIR": str(drop),
        "RETAIL_SYNC_REGIONAL_OUTBOX_DIR": str(outbox),
        "RETAIL_SYNC_POLL_INTERVAL_S": "0.3",
        "RETAIL_SYNC_ERP_STOCK_POLL_INTERVAL_S": "0.3",
        "RETAIL_SYNC_STOCK_DEFAULT_POLICY": "cancel",
        "RETAIL_SYNC_BREAKER_FAILURES": "1",
        "RETAIL_SYNC_BREAKER_COOL_DOWN_S": "300",
        "RETAIL_SYNC_BREAKER_MAX_COOL_DOWN_S": "300",
        "RETAIL_SYNC_ERP_MAX_ATTEMPTS": "2",
        "RETAIL_SYNC_ERP_BACKOFF_MAX_S": "0.2",
    })
    worker = await stack.start_worker()
    await eventually(lambda: _tracked(worker), timeout_s=60)

    factory = ShopifyOrderFactory(seed=34, skus=[SHORT], max_quantity=1)
    shopify_keys = []
    for _ in range(HELD_SHOPIFY_ORDERS):
        order, body = order_body(factory)
        status, _ = await post_webhook(worker.ingress_url, body, headers(body))
        assert status == 200
        shopify_keys.append(f"shopify:{order['id']}")
    for key in shopify_keys:  # cancelled here; the cancellation for Shopify is on its way
        await eventually(lambda k=key: _cancelled(worker, k), timeout_s=60, every=0.3)
    await eventually(lambda: _circuit_open(worker, "shopify"), timeout_s=30)

    regional.write_batch(1)
    ref = regional.good_refs[-1]
    written_at = time.monotonic()

    def regional_cancelled() -> bool:
        regional.process_outbox()
        return any(c["order_id"] == ref for c in regional.cancellations)

    await eventually(regional_cancelled, timeout_s=90, every=0.3)
    healthy_in = time.monotonic() - written_at
    assert healthy_in < 60  # the open circuit would have held it for 300 s

    async def told_done() -> dict | None:  # the outcome is back on the order's timeline
        state = await _state(worker, f"regional:{ref}")
        return state if "marketplace_cancel_done" in _events(state) else None

    state = await eventually(told_done, timeout_s=30, every=0.3)
    assert state["status"] == "cancelled"

    # Shopify's cancellations are held (in Kafka, behind its open circuit), not dropped: at
    # most the one that found the circuit still closed has an outcome, a failure
    told = {k: [e for e in _events(await _state(worker, k)) if e.startswith("marketplace_cancel")]
            for k in shopify_keys}
    assert sum(1 for events in told.values() if events) <= 1, told
    assert all(events in ([], ["marketplace_cancel_failed"]) for events in told.values()), told
    assert await _circuit_open(worker, "shopify")
    records = [orjson.loads(r.value) for r in await stack.read_topic("sync-exceptions")]
    shopify_outbound = [r for r in records if r["kind"] == "outbound" and r["channel"] == "shopify"
                        and r["order_key"] in shopify_keys]
    assert all(r["source_topic"] == stack.topic("channel-commands.shopify")
               for r in shopify_outbound), shopify_outbound


async def _tracked(worker: WorkerProcess) -> bool:
    status, _ = await worker.get_json(f"/inventory/{SHORT}")
    return status == 200


async def _cancelled(worker: WorkerProcess, key: str) -> bool:
    state = await _state(worker, key)
    return state is not None and state["status"] == "cancelled"


async def _circuit_open(worker: WorkerProcess, channel: str) -> bool:
    return f'retail_sync_circuit_open{{system="{channel}"}} 1.0' in await worker.metrics_text()
