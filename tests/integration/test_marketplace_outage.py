"""A marketplace is unreachable for a while in the middle of a run: its stock updates are held (in
Kafka, behind the batch its push agent keeps retrying) and delivered after it comes back; the
other channel is not delayed; nothing is lost."""

from __future__ import annotations

import time

import pytest

from retail_sync.stack import Stack
from simulators.amazon import AmazonSimConfig, AmazonSimulator
from simulators.regional import RegionalSimulator
from tests.integration.helpers import eventually

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
        status, view = await worker.get_json(f"/inventory/{SKUS[0]}")
        assert status == 200 and view["told"]["amazon"]["quantity"] == 3
        assert view["told"]["amazon"]["ok"] is True
        assert regional_in < 20
        metrics = await worker.metrics_text()
        assert 'retail_sync_circuit_open{system="amazon"} 0.0' in metrics  # closed again
    finally:
        await amazon.stop()
