"""`retail-sync chaos <scenario>`: the resilience scenarios, by hand, with a pass/fail report.

Each scenario starts its own world (embedded broker unless RETAIL_SYNC_BROKER_URL is set, the
ERP simulator, the marketplace simulators it needs, real worker processes), injects its fault
through the simulators' test-only controls, and checks the guarantees the integration tests
check. The same faults are driven by tests/integration (test_erp_faults, test_marketplace_outage,
test_worker_failover, test_restart_under_load); this command is for watching them happen.

- ``erp-flaky``: the ERP answers 10 % 5xx and 10 % slower than our timeout; passes when every
  order is in the ERP exactly once.
- ``marketplace-outage``: Amazon unreachable while stock changes; passes when the regional
  channel is not held up and Amazon gets the final quantity after it is back.
- ``worker-kill``: one of two workers SIGKILLed mid-run, not restarted; passes when every order
  is in the ERP once and nothing is oversold.
- ``worker-restart``: the only worker SIGKILLed in the middle of a 200-order run on partly scarce
  stock (while reservations hold units) and restarted on the same disk; passes when every order
  is in the ERP once or cancelled for lack of stock, nothing is oversold, and every SKU's stock
  table equals its recomputation from the ERP's bins.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable

from retail_sync.broker import free_port
from retail_sync.cli import load_settings
from retail_sync.report import Progress, table
from retail_sync.stack import ROOT, Stack
from simulators.amazon import AmazonSimConfig, AmazonSimulator
from simulators.erp import ErpSimConfig
from simulators.regional import RegionalSimulator
from simulators.shopify import ShopifySimConfig, ShopifySimulator

SECRET = "shpss_demo_secret"  # noqa: S105 - the demo's webhook secret


class Failed(AssertionError):
    """A guarantee did not hold; the message says which."""


async def until(check: Callable[[], object], timeout_s: float, what: str) -> None:
    deadline, progress = time.monotonic() + timeout_s, Progress()
    while time.monotonic() < deadline:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            progress.done()
            return
        progress.update(f"waiting: {what}")
        await asyncio.sleep(0.5)
    progress.done()
    raise Failed(f"not within {timeout_s:.0f}s: {what}")


def _po_numbers(stack: Stack) -> list[str]:
    assert stack.erp is not None
    return [stored.doc["po_no"] for stored in stack.erp.orders.values()]


async def erp_flaky(stack: Stack, rows: list[tuple[str, object]]) -> None:
    assert stack.erp is not None
    stack.erp.set_config({"error_rate": 0.1, "slow_rate": 0.1, "slow_ms": 1500})
    stack.env.update({"RETAIL_SYNC_ERP_TIMEOUT_S": "1", "RETAIL_SYNC_ERP_BACKOFF_MAX_S": "0.5"})
    worker = await stack.start_worker()
    shop = ShopifySimulator(ShopifySimConfig(
        webhook_url=f"{worker.url}/webhooks/shopify/orders/create", secret=SECRET, rate_per_s=40))
    await shop.send_orders(count=100)
    keys = {f"shopify:{oid}" for oid in shop.accepted_order_ids()}
    await until(lambda: set(_po_numbers(stack)) == keys, 120, "every order in the ERP")
    twice = [k for k, n in Counter(_po_numbers(stack)).items() if n > 1]
    stats = stack.erp.stats()
    rows += [("orders", len(keys)), ("injected 5xx / slow", f"{stats['errors_injected']} / "
                                                            f"{stats['slow_injected']}"),
             ("sales orders twice", len(twice))]
    if twice:
        raise Failed(f"sales orders created twice: {twice[:5]}")


async def marketplace_outage(stack: Stack, rows: list[tuple[str, object]]) -> None:
    erp = stack.erp
    assert erp is not None
    skus = ["CHAOS-A", "CHAOS-B"]
    for sku in skus:
        erp.set_stock(sku, 10)
    amazon = AmazonSimulator(AmazonSimConfig(time_scale=1000, skus=skus))
    url = await amazon.start()
    drop, outbox = stack.workdir / stack.app_id / "drop", stack.workdir / stack.app_id / "outbox"
    drop.mkdir(parents=True, exist_ok=True)
    regional = RegionalSimulator(drop, seed=1, outbox_dir=outbox)
    stack.env.update({
        "RETAIL_SYNC_AMAZON_BASE_URL": url, "RETAIL_SYNC_REGIONAL_DROP_DIR": str(drop),
        "RETAIL_SYNC_REGIONAL_OUTBOX_DIR": str(outbox),
        "RETAIL_SYNC_ERP_STOCK_POLL_INTERVAL_S": "0.3", "RETAIL_SYNC_BREAKER_FAILURES": "2",
        "RETAIL_SYNC_BREAKER_COOL_DOWN_S": "0.5", "RETAIL_SYNC_BREAKER_MAX_COOL_DOWN_S": "2",
        "RETAIL_SYNC_ERP_BACKOFF_MAX_S": "0.5"})

    def shown(sim: object, sku: str) -> int | None:
        if sim is regional:
            regional.process_outbox()
        return sim.listings.quantity(sku)  # type: ignore[attr-defined]

    try:
        await stack.start_worker()
        await until(lambda: all(shown(amazon, s) == 10 and shown(regional, s) == 10
                                for s in skus), 60, "opening stock on both marketplaces")
        port = int(url.rsplit(":", 1)[1])
        await amazon.stop()
        down = time.monotonic()
        erp.set_stock(skus[0], 3)
        await until(lambda: shown(regional, skus[0]) == 3, 30, "regional updated during the outage")
        rows.append(("regional updated while Amazon was down", f"{time.monotonic() - down:.1f}s"))
        await asyncio.sleep(3)
        await amazon.start("127.0.0.1", port)
        back = time.monotonic()
        await until(lambda: shown(amazon, skus[0]) == 3, 60, "Amazon gets the held update")
        rows.append(("Amazon updated after it came back", f"{time.monotonic() - back:.1f}s"))
    finally:
        await amazon.stop()


async def worker_kill(stack: Stack, rows: list[tuple[str, object]]) -> None:
    erp = stack.erp
    assert erp is not None
    skus = ["CHAOS-K1", "CHAOS-K2"]
    for sku in skus:
        erp.set_stock(sku, 1000)
    survivor, victim = await stack.start_worker("w1"), await stack.start_worker("w2")
    shop = ShopifySimulator(ShopifySimConfig(
        webhook_url=f"{survivor.url}/webhooks/shopify/orders/create", secret=SECRET,
        rate_per_s=30, max_attempts=10, skus=skus, max_quantity=2))
    sending = asyncio.create_task(shop.send_orders(count=150))
    await asyncio.sleep(2.0)
    await victim.kill()
    rows.append(("worker killed", victim.name))
    await sending
    keys = {f"shopify:{oid}" for oid in shop.accepted_order_ids()}
    await until(lambda: set(_po_numbers(stack)) == keys, 120, "every order in the ERP")
    twice = [k for k, n in Counter(_po_numbers(stack)).items() if n > 1]
    rows += [("orders", len(keys)), ("sales orders twice", len(twice)),
             ("oversold units", erp.stats()["oversold_units"])]
    if twice or erp.stats()["oversold_units"]:
        raise Failed("duplicated or oversold")


RESTART_STOCK = {"CHAOS-R1": 1000, "CHAOS-R2": 1000, "CHAOS-R3": 60, "CHAOS-R4": 80}


def _stock_drift(view: dict, erp_bins: list[dict], sku: str) -> dict[str, tuple[object, int]]:
    """Where the worker's stock view of ``sku`` differs from its recomputation from the ERP's
    bins (nothing held, on hand and free from the ERP): field -> (worker, recomputed)."""
    bins = [b for b in erp_bins if b["item_code"] == sku]
    actual = sum(int(b["actual_qty"]) for b in bins)
    reserved = sum(int(b["reserved_qty"]) for b in bins)
    expected = {"on_hand": actual, "erp_reserved": reserved, "reserved_open": 0,
                "reserved_committed_pending_erp": 0, "free": max(0, actual - reserved)}
    return {k: (view.get(k), v) for k, v in expected.items() if view.get(k) != v}


async def worker_restart(stack: Stack, rows: list[tuple[str, object]]) -> None:
    erp = stack.erp
    assert erp is not None
    skus = list(RESTART_STOCK)
    for sku, qty in RESTART_STOCK.items():
        erp.set_stock(sku, qty)
    port = free_port()
    shop = ShopifySimulator(ShopifySimConfig(
        webhook_url=f"http://127.0.0.1:{port}/webhooks/shopify/orders/create", secret=SECRET,
        rate_per_s=20, skus=skus, max_quantity=2, duplicate_rate=0.1, max_attempts=12,
        listing_mode="allow", api_bucket_capacity=80, api_leak_per_s=40))
    stack.env.update({"RETAIL_SYNC_SHOPIFY_ADMIN_BASE_URL": await shop.start(),
                      "RETAIL_SYNC_ERP_STOCK_POLL_INTERVAL_S": "0.3"})
    try:
        worker = await stack.start_worker(port=port)
        sending = asyncio.create_task(shop.send_orders(count=200))

        async def reservations_held() -> bool:
            if len(erp.orders) < 50:
                return False
            for sku in skus:
                status, view = await worker.get_json(f"/inventory/{sku}")
                if status == 200 and view["reserved_open"] + view["reserved_committed_pending_erp"]:
                    return True
            return False

        await until(reservations_held, 90, "50 orders in the ERP and reservations holding units")
        rows.append(("killed (SIGKILL) with sales orders in the ERP", len(erp.orders)))
        await worker.kill()
        down = time.monotonic()
        worker.start()
        await worker.wait_ready()
        rows.append(("restarted on the same disk, ready after", f"{time.monotonic() - down:.1f}s"))
        await sending
        keys = sorted(f"shopify:{oid}" for oid in shop.accepted_order_ids())
        states: dict[str, dict] = {}

        async def all_decided() -> bool:
            for key in keys:
                if states.get(key, {}).get("status") not in ("erp_confirmed", "cancelled"):
                    status, state = await worker.get_json(f"/orders/{key}")
                    if status != 200 or state["status"] not in ("erp_confirmed", "cancelled"):
                        return False
                    states[key] = state
            return True

        await until(all_decided, 120, "every order in the ERP or cancelled for lack of stock")
        po_numbers = Counter(_po_numbers(stack))
        twice = [k for k, n in po_numbers.items() if n > 1]
        cancelled = [k for k, s in states.items() if s["stock_decision"] == "cancelled"]
        lost = [k for k, s in states.items()
                if (s["status"] == "erp_confirmed") != (k in po_numbers)
                or (s["status"] == "cancelled" and s["stock_decision"] != "cancelled")]
        rows += [("orders", len(keys)), ("in the ERP", len(po_numbers)),
                 ("cancelled for lack of stock", len(cancelled)),
                 ("sales orders twice", len(twice)), ("orders lost or misfiled", len(lost)),
                 ("oversold units", erp.stats()["oversold_units"])]
        if twice or lost or erp.stats()["oversold_units"]:
            raise Failed(f"duplicated {twice[:5]}, lost {lost[:5]} or oversold")
        drift: dict[str, dict] = {}

        async def stock_agrees() -> bool:
            drift.clear()
            for sku in skus:
                _, view = await worker.get_json(f"/inventory/{sku}")
                wrong = _stock_drift(view, erp.bins(), sku)
                if wrong:
                    drift[sku] = wrong
            return not drift

        try:
            await until(stock_agrees, 60, "the stock table equal to its recomputation from the ERP")
        finally:
            rows.append(("SKUs whose stock table drifted from the ERP", len(drift)))
            if drift:
                rows.append(("drift (worker, recomputed from the ERP)", drift))
    finally:
        await shop.stop()


SCENARIOS: dict[str, Callable[[Stack, list[tuple[str, object]]], Awaitable[None]]] = {
    "erp-flaky": erp_flaky,
    "marketplace-outage": marketplace_outage,
    "worker-kill": worker_kill,
    "worker-restart": worker_restart,
}


async def run_scenario(name: str) -> bool:
    settings = load_settings()
    stack = Stack(app_id=f"chaos-{name}-{int(time.time())}", workdir=ROOT / "var" / "chaos",
                  broker_url=settings.broker_url, erp_config=ErpSimConfig(),
                  tansu=settings.tansu_compat)
    rows: list[tuple[str, object]] = []
    started = time.monotonic()
    await stack.start()
    try:
        await SCENARIOS[name](stack, rows)
        verdict = "PASS"
    except Failed as exc:
        rows.append(("failure", str(exc)))
        verdict = "FAIL"
    finally:
        await stack.close()
    rows.append(("took", f"{time.monotonic() - started:.0f}s"))
    print(table(rows, f"chaos {name}: {verdict}"))
    return verdict == "PASS"


def run_chaos(names: list[str]) -> int:
    # a request the ERP answers after our timeout is the injected fault, not news
    logging.getLogger("aiohttp.server").setLevel(logging.CRITICAL)
    chosen = list(SCENARIOS) if names == ["all"] else names
    results = {name: asyncio.run(run_scenario(name)) for name in chosen}
    print(table([(n, "PASS" if ok else "FAIL") for n, ok in results.items()], "chaos summary"))
    return 0 if all(results.values()) else 1


__all__ = ["SCENARIOS", "run_chaos"]
