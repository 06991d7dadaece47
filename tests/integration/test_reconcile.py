"""Reconciliation end to end: orders from all four marketplaces reach the ERP through a real
worker, and ``reconcile`` (reading every system through its public API only) finds nothing; then
four faults injected straight into the simulators are each found, with the right cause."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest

from retail_sync.broker import free_port
from retail_sync.reconcile import reconcile
from retail_sync.settings import Settings
from retail_sync.simulators.amazon.simulator import AmazonSimConfig, AmazonSimulator
from retail_sync.simulators.regional.simulator import RegionalSimulator
from retail_sync.simulators.shopify.simulator import ShopifySimConfig, ShopifySimulator
from retail_sync.simulators.walmart.simulator import WalmartSimConfig, WalmartSimulator
from retail_sync.stack import Stack
from tests.integration.helpers import SECRET, eventually

pytestmark = pytest.mark.integration

SKUS = ["RECON-A", "RECON-B"]
REGIONAL_SEED = 5  # its first batch of three orders is all pending/paid (no SHIPPED/CXL on arrival)


async def test_reconcile_clean_then_every_injected_fault(stack: Stack) -> None:
    port = free_port()
    webhook = f"http://127.0.0.1:{port}/webhooks/shopify/orders/create"
    shop = ShopifySimulator(ShopifySimConfig(webhook_url=webhook, secret=SECRET, skus=SKUS,
                                             max_quantity=2, seed=31))
    amazon = AmazonSimulator(AmazonSimConfig(time_scale=1000, seed=32, skus=SKUS, max_quantity=2,
                                             mfn_rate=1.0))
    walmart = WalmartSimulator(WalmartSimConfig(seed=33, skus=SKUS, max_quantity=2))
    drop, outbox = stack.workdir / "regional-drop", stack.workdir / "regional-outbox"
    drop.mkdir(parents=True)
    # the simulator's clock defaults to a fixed day (2026-11-27) for repeatable files; reconcile
    # looks back from now, so these orders are dated today or they fall outside its window
    regional = RegionalSimulator(drop, seed=REGIONAL_SEED, outbox_dir=outbox,
                                 start=datetime.now(UTC) - timedelta(hours=1))
    urls = {"shopify": await shop.start(), "amazon": await amazon.start(),
            "walmart": await walmart.start()}
    stack.env.update({
        "RETAIL_SYNC_SHOPIFY_ADMIN_BASE_URL": urls["shopify"],
        "RETAIL_SYNC_AMAZON_BASE_URL": urls["amazon"],
        "RETAIL_SYNC_WALMART_BASE_URL": urls["walmart"],
        "RETAIL_SYNC_REGIONAL_DROP_DIR": str(drop),
        "RETAIL_SYNC_REGIONAL_OUTBOX_DIR": str(outbox),
        "RETAIL_SYNC_POLL_INTERVAL_S": "0.3",
    })
    erp = stack.erp
    assert erp is not None
    settings = Settings(
        erp_base_url=stack.erp_url, shopify_admin_base_url=urls["shopify"],
        amazon_base_url=urls["amazon"], walmart_base_url=urls["walmart"],
        regional_drop_dir=drop, regional_outbox_dir=outbox)  # every credential: the default
    try:
        worker = await stack.start_worker(ingress_port=port)
        keys: dict[str, list[str]] = {"shopify": [], "amazon": [], "walmart": [], "regional": []}
        for lines in ([(SKUS[0], 1)], [(SKUS[0], 1), (SKUS[1], 2)]):
            order = await shop.send_order(lines)
            assert order is not None
            keys["shopify"].append(f"shopify:{order['id']}")
            po = walmart.create_order(lines)
            assert po is not None
            keys["walmart"].append(f"walmart:{po['purchaseOrderId']}")
        keys["amazon"] = [f"amazon:{i}" for i in amazon.generate_orders(2)]
        regional.write_batch(3)
        keys["regional"] = [f"regional:{ref}" for ref in regional.good_refs]
        assert [len(k) for k in keys.values()] == [2, 2, 2, 3]
        every = [k for ks in keys.values() for k in ks]
        await eventually(lambda: all(erp.order_by_po_no(k) for k in every), timeout_s=40)

        clean = await reconcile(settings)
        assert clean.ok, clean.table()
        for channel, mine in keys.items():
            counts = clean.channels[channel]
            assert (counts.marketplace, counts.erp, counts.matched) == (len(mine),) * 3, clean.table()

        # faults, with the engine stopped so that nothing heals them
        await worker.stop()
        gone, dearer = keys["shopify"][0], keys["regional"][0]
        stored = erp.order_by_po_no(gone)
        assert stored is not None
        del erp.orders[stored.doc["name"]]
        erp._by_po_no.pop(gone)  # noqa: SLF001 - the sales order vanishes from the ERP
        stored = erp.order_by_po_no(dearer)
        assert stored is not None
        stored.doc["grand_total"] = stored.doc["grand_total"] + 5
        shipped = keys["amazon"][0]
        amazon.update_order(shipped.split(":", 1)[1], status="Shipped")
        cancelled = keys["walmart"][0]
        walmart.cancel_by_buyer(cancelled.split(":", 1)[1])

        report = await reconcile(settings)
    finally:
        for sim in (shop, amazon, walmart):
            await sim.stop()
    found = {(m.order_key, m.cause) for m in report.mismatches}
    assert found == {(gone, "missing_in_erp"), (dearer, "amount_differs"),
                     (shipped, "status_differs"), (cancelled, "status_differs")}, report.table()
    assert len(report.mismatches) == 4 and not report.ok
    by_key = {m.order_key: m for m in report.mismatches}
    assert by_key[shipped].marketplace.status == "shipped" and by_key[shipped].erp.status == "accepted"
    assert by_key[cancelled].marketplace.status == "cancelled"
    assert by_key[cancelled].erp.status == "accepted"
    assert report.by_cause() == Counter({"status_differs": 2, "missing_in_erp": 1, "amount_differs": 1})
    assert report.as_json()["channels"]["walmart"]["mismatches"]["status_differs"] == 1
    assert gone in report.table()
