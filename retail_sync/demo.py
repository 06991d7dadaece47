"""`retail-sync demo`: orders and stock end to end, on the embedded broker, with live progress.

Starts the embedded Kafka-compatible broker (unless RETAIL_SYNC_BROKER_URL is set), the ERP
simulator (stocked with the demo catalogue), the marketplace simulators of ``--mix`` and one Faust
worker process. The Shopify-like simulator sends signed ``orders/create`` webhooks (with injected
duplicates, malformed and unmappable bodies); the Amazon-, Walmart- and regional-like simulators
create orders the worker polls or reads. All of them sell the same SKUs, so they compete for the
stock; the ERP receives goods once a second; the worker pushes every channel's available-to-sell.
Runs until Ctrl-C or ``--duration``, drains, prints a per-channel summary and exits non-zero if
any order was neither posted to the ERP nor cancelled by its channel's stock policy, if the ERP
was oversold, or if a marketplace does not show the final available-to-sell.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import signal
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson

from retail_sync.cli import load_settings
from retail_sync.demo_channels import (
    DEMO_SKUS,
    AmazonDriver,
    Driver,
    ShopifyDriver,
    make_driver,
    parse_mix,
)
from retail_sync.interrupt import sigterm_as_ctrl_c
from retail_sync.reconcile import reconcile
from retail_sync.redact import mask_url
from retail_sync.report import Progress, Samples, bar, ms, percentile, table
from retail_sync.settings import ENV_PREFIX, Settings
from retail_sync.stack import ROOT, Stack, WorkerProcess
from simulators.erp import ErpSimConfig
from simulators.wms import WmsSimConfig, WmsSimulator


@dataclass
class DemoRun:
    args: argparse.Namespace
    stack: Stack
    worker: WorkerProcess
    drivers: dict[str, Driver]
    mix: dict[str, float]
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    baseline: Samples = field(default_factory=Samples)  # worker metrics once stock was loaded
    wms: WmsSimulator | None = None
    returns: dict[str, str] = field(default_factory=dict)  # order key -> refund id asked for
    started: float = field(default_factory=time.monotonic)
    interrupted: int = 0

    def erp_keys(self) -> set[str]:
        assert self.stack.erp is not None
        return {stored.doc["po_no"] for stored in self.stack.erp.orders.values()}

    def expected_keys(self) -> set[str]:
        return set().union(*(d.expected() for d in self.drivers.values()))

    def cancelled_keys(self) -> set[str]:
        """Orders the seller cancelled on their marketplace (wholly or partly) for lack of stock."""
        return {f"{name}:{c['order_id']}" for name, d in self.drivers.items()
                for c in d.sim.cancellations}

    def handled_keys(self) -> set[str]:
        return self.erp_keys() | self.cancelled_keys()


def run_demo(args: argparse.Namespace) -> int:
    try:  # SIGTERM while starting or closing stops the worker too, as Ctrl-C does
        with sigterm_as_ctrl_c():
            return asyncio.run(_demo(args))
    except KeyboardInterrupt:
        return 130


async def _demo(args: argparse.Namespace) -> int:
    settings = load_settings()
    mix = parse_mix(args.mix)
    erp_config = ErpSimConfig(latency_ms=args.erp_latency_ms, latency_jitter_ms=args.erp_latency_ms,
                              error_rate=args.erp_error_rate)
    app_id = f"demo-{time.strftime('%Y%m%d-%H%M%S')}"
    stack = Stack(app_id=app_id, workdir=ROOT / "var" / "demo", broker_url=settings.broker_url,
                  erp_config=erp_config, tansu=settings.tansu_compat)
    secret = settings.shopify_webhook_secret.get_secret_value()
    ingress_url = f"http://127.0.0.1:{settings.ingress_port}"  # where the webhooks go
    drivers = {name: make_driver(name, secret, args, stack.workdir / app_id, ingress_url)
               for name in mix}
    print("retail-sync demo: starting the broker, the simulators and a worker…", flush=True)
    await stack.start()
    assert stack.erp is not None
    stock_rng = random.Random(7)
    for sku in DEMO_SKUS:  # a few scarce SKUs run out and show the stock policies at work
        stack.erp.set_stock(sku, stock_rng.choice((6, 25, 100, 250, 500, 800)))
    wms = WmsSimulator(WmsSimConfig(ship_delay_ms=600, ship_jitter_ms=400, partial_rate=0.15,
                                    return_delay_ms=500))
    try:
        for driver in drivers.values():
            stack.env.update(await driver.prepare())
        stack.env.update({"RETAIL_SYNC_WMS_BASE_URL": await wms.start(),
                          "RETAIL_SYNC_WMS_POLL_INTERVAL_S": "0.5",
                          "RETAIL_SYNC_ERP_ORDER_POLL_INTERVAL_S": "1"})
        # one worker: webhook dedupe and rate limits in process unless a Redis is configured
        stack.env["RETAIL_SYNC_REDIS_URL"] = os.environ.get("RETAIL_SYNC_REDIS_URL", "none")
        stack.env.setdefault("RETAIL_SYNC_POLL_INTERVAL_S", "1")
        stack.env.setdefault("RETAIL_SYNC_ERP_STOCK_POLL_INTERVAL_S", "0.5")
        stack.env.setdefault("RETAIL_SYNC_STOCK_POLICY",
                             '{"walmart": "partial", "regional": "backorder"}')
        worker = stack.new_worker("worker-1", port=settings.web_port,
                                  ingress_port=settings.ingress_port).start()
        await worker.wait_ready()
        run = DemoRun(args, stack, worker, drivers, mix, wms=wms)
        await _initial_stock(run)
        await _send_with_progress(run)
        await _drain(run)
        return await _summary(run)
    finally:
        for driver in drivers.values():
            await driver.close()
        await wms.stop()
        await stack.close()


def _print_parts(run: DemoRun) -> None:
    stack, args = run.stack, run.args
    broker = "embedded Tansu" if stack.broker is not None else "configured Kafka"
    duration = f"{args.duration:.0f}s" if args.duration else "until Ctrl-C"
    mix = ", ".join(f"{name} {share * args.rate:g}/s" for name, share in run.mix.items())
    rows = [
        ("broker", f"{mask_url(stack.broker_url or '')} ({broker})"),
        ("worker admin", f"{run.worker.url}  (/orders/<key>, /orders/lookup?id=, "
                         "/inventory/<sku>, /exceptions, /metrics, /health)"),
        ("admin token", f"{stack.admin_token()}  (every scope; this run only: curl -H "
                        "'Authorization: Bearer <token>' ...)"),
        ("worker ingress", f"{run.worker.ingress_url}  (POST /webhooks/shopify/...: signed "
                           "webhooks only)"),
        ("worker log", str(run.worker.log_path)),
        ("Redis", stack.env["RETAIL_SYNC_REDIS_URL"] if stack.env["RETAIL_SYNC_REDIS_URL"] != "none"
         else "none: dedupe and rate limits in process (set RETAIL_SYNC_REDIS_URL to share them)"),
        ("ERP simulator", f"{stack.erp_url}  (/_sim/stats, /_sim/stock, /_sim/finance; "
                          f"{len(DEMO_SKUS)} SKUs stocked, goods received once a second)"),
        ("WMS simulator", f"{run.wms.base_url if run.wms else '-'}  (ships 0.6 ± 0.4 s after "
                          "release, 15 % in two parts; a return every 2 s)"),
        *((f"{name} simulator", d.describe()) for name, d in run.drivers.items()),
        ("offered load", f"{mix}; {duration}"),
    ]
    print(table(rows, "parts"), flush=True)


def _install_interrupt(run: DemoRun) -> None:
    loop = asyncio.get_running_loop()

    def on_interrupt() -> None:
        run.interrupted += 1
        run.stop.set()
        if run.interrupted > 1:
            raise KeyboardInterrupt

    loop.add_signal_handler(signal.SIGINT, on_interrupt)
    loop.add_signal_handler(signal.SIGTERM, on_interrupt)


async def _send_with_progress(run: DemoRun) -> None:
    _install_interrupt(run)
    sending = asyncio.gather(
        *(d.run(run.worker.url, run.args.rate * run.mix[name], run.args.duration, run.stop)
          for name, d in run.drivers.items()),
        _receive_goods(run), _ask_for_returns(run))
    await asyncio.sleep(0.3)  # the webhook simulator's server is up once sending began
    _print_parts(run)
    progress = Progress()
    while not sending.done():
        progress.update(await _status_line(run))
        await asyncio.wait({sending}, timeout=0.5)
    progress.update(await _status_line(run))
    progress.done()
    sending.result()


async def _initial_stock(run: DemoRun) -> None:
    """Wait until every marketplace shows the ERP's opening stock, then take the metrics baseline:
    the summary's propagation figures are those of the run, not of the worker's start."""
    progress, deadline = Progress(), time.monotonic() + 60
    while time.monotonic() < deadline:
        behind = await _listings_behind(run)
        if not behind:
            break
        progress.update(f"loading the opening stock: {len(behind)} listings to go")
        await asyncio.sleep(0.5)
    progress.done()
    await asyncio.sleep(2.0)  # a feed's push report lands after the listing changed
    run.baseline = await _worker_metrics(run.worker)


async def _receive_goods(run: DemoRun) -> None:
    """The warehouse receives goods into the ERP once a second: each receipt is an ERP stock
    change the worker reads from the ERP's feed and pushes to every marketplace."""
    rng, erp = random.Random(11), run.stack.erp
    assert erp is not None
    start = time.monotonic()
    while not run.stop.is_set() and (not run.args.duration
                                     or time.monotonic() - start < run.args.duration):
        erp.receive(rng.choice(DEMO_SKUS), rng.randint(2, 12))
        try:
            await asyncio.wait_for(run.stop.wait(), 1.0)
        except TimeoutError:
            pass


async def _ask_for_returns(run: DemoRun) -> None:
    """Customer service authorises a return every two seconds: one unit of a shipped order comes
    back (the warehouse receives it, the ERP books it and a credit note, the marketplace refunds)."""
    start = time.monotonic()
    while not run.stop.is_set() and (not run.args.duration
                                     or time.monotonic() - start < run.args.duration):
        try:
            await asyncio.wait_for(run.stop.wait(), 2.0)
        except TimeoutError:
            pass
        shipped = [o for o in (run.wms.orders if run.wms else [])
                   if o["status"] == "shipped" and o["reference"] not in run.returns]
        if not shipped:
            continue
        order = shipped[0]
        line = order["lines"][0]
        try:
            async with aiohttp.ClientSession(headers=run.worker.headers) as session, session.post(
                    f"{run.worker.url}/orders/{order['reference']}/returns",
                    headers={"Content-Type": "application/json"},
                    data=orjson.dumps({"lines": {line["line_id"]: 1}, "amount": "1.00",
                                       "reason": "damaged in transit", "restock": True})) as resp:
                if resp.status == 202:
                    run.returns[order["reference"]] = (await resp.json())["refund_id"]
        except aiohttp.ClientError:
            continue


async def _status_line(run: DemoRun) -> str:
    elapsed = time.monotonic() - run.started
    metrics = await _worker_metrics(run.worker)
    received = len(run.expected_keys())
    posted = len(run.erp_keys())
    cancelled = len(run.cancelled_keys() - run.erp_keys())
    failed = int(metrics.get("retail_sync_sync_exceptions_total"))
    pushes = int(metrics.count("retail_sync_stock_propagation_seconds"))
    head = (f"{bar(elapsed / run.args.duration)} {elapsed:5.1f}/{run.args.duration:.0f}s"
            if run.args.duration else f"{elapsed:6.1f}s (Ctrl-C to stop)")
    return (f"{head}  received {received}  posted to ERP {posted}  cancelled (stock) {cancelled}  "
            f"exceptions {failed}  stock pushes {pushes}  "
            f"in flight {max(0, received - posted - cancelled)}")


async def _worker_metrics(worker: WorkerProcess) -> Samples:
    try:
        return Samples(await worker.metrics_text())
    except Exception:  # noqa: BLE001 - progress must not stop the demo
        return Samples()


async def _drain(run: DemoRun) -> None:
    """Wait until every order the channels produced is in the ERP or cancelled by the seller, and
    every marketplace shows the available-to-sell the worker computed (or the drain timeout)."""
    deadline = time.monotonic() + run.args.drain_timeout
    progress = Progress()
    while time.monotonic() < deadline and not run.expected_keys() <= run.handled_keys():
        missing = len(run.expected_keys() - run.handled_keys())
        progress.update(f"draining: {missing} orders still on their way to the ERP")
        await asyncio.sleep(0.25)
    while time.monotonic() < deadline:
        metrics = (await _worker_metrics(run.worker)).minus(run.baseline)
        refunded = metrics.count("retail_sync_flow_seconds", flow="refund_to_marketplace")
        if refunded >= len(run.returns):
            break
        progress.update(f"draining: {len(run.returns) - int(refunded)} refunds on their way")
        await asyncio.sleep(0.5)
    steady = 0  # two checks in a row a second apart: the last returns' goods have been pushed
    while time.monotonic() < deadline and steady < 2:
        behind = await _listings_behind(run)
        steady = steady + 1 if not behind else 0
        if steady >= 2:
            break
        progress.update(f"draining: {len(behind)} marketplace listings not yet at the final ATS")
        await asyncio.sleep(1.0)
    progress.done()


async def _reconcile(run: DemoRun) -> Any:
    """What an operator would run at the end of the day: every marketplace's orders (through
    its own API) against the ERP's sales orders, invoices and credit notes."""
    env = {k[len(ENV_PREFIX):].lower(): orjson.loads(v) if v[:1] in "{[" else v
           for k, v in run.stack.env.items() if k.startswith(ENV_PREFIX)}
    settings = Settings.model_validate({**env, "erp_base_url": run.stack.erp_url})
    return await reconcile(settings)


async def _listings_behind(run: DemoRun) -> list[tuple[str, str, int | None, int]]:
    """(channel, sku, what the marketplace shows, the ATS the worker computed) where they differ."""
    behind = []
    for sku in DEMO_SKUS:
        try:
            status, view = await run.worker.get_json(f"/inventory/{sku}")
        except Exception:  # noqa: BLE001 - reported as behind
            status, view = 0, {}
        for name, driver in run.drivers.items():
            if name == "regional":
                driver.sim.process_outbox()
            shown = driver.sim.listings.quantity(sku)
            want = view.get("ats", {}).get(name) if status == 200 else None
            if want is None or shown != want:
                behind.append((name, sku, shown, want if want is not None else -1))
    return behind


async def _summary(run: DemoRun) -> int:
    stack, erp = run.stack, run.stack.erp
    assert erp is not None
    expected, in_erp, cancelled = run.expected_keys(), run.erp_keys(), run.cancelled_keys()
    lost = sorted(expected - in_erp - cancelled)
    unknown = sorted(in_erp - expected)
    records = [orjson.loads(r.value) for r in await stack.read_topic("sync-exceptions")]
    kinds = Counter(r["kind"] for r in records)
    edits_not_applied = sum("was edited on" in r["reason"] for r in records)
    e = erp.stats()
    print(table(list(_channel_rows(run, in_erp, cancelled)),
                "per channel (created -> ERP sales order)"))
    metrics = await _worker_metrics(run.worker)
    behind = await _listings_behind(run)
    print(table(list(_stock_rows(run, metrics.minus(run.baseline), behind)),
                "stock (ERP -> marketplaces, during the run)"))
    print(table(list(_flow_rows(run, metrics.minus(run.baseline))),
                "after the order: sync latency per flow, p50 / p99 (n)"))
    report = await _reconcile(run)
    print(report.table(limit=10))
    rows: list[tuple[str, object]] = []
    shopify = run.drivers.get("shopify")
    if isinstance(shopify, ShopifyDriver):
        s = shopify.shop.stats()
        deduped = int(metrics.get("retail_sync_webhooks_total", outcome="duplicate"))
        rows += [
            ("shopify webhook deliveries / retries", f"{s['deliveries_attempted']} / {s['retries']}"),
            ("duplicates injected", f"{s['duplicates_sent']} (the worker answered {deduped} "
                                    "deliveries as duplicates, incl. retries of malformed ones)"),
            ("malformed bodies injected", f"{s['malformed_sent']} -> 400 + sync exception"),
            ("unmappable orders injected", f"{s['unmappable_sent']} -> 200 + sync exception"),
            ("shopify order edits", f"{len(shopify.shop.edits)} (orders/updated): "
                                    f"{edits_not_applied} after the ERP post -> one exception "
                                    "each naming the sales order; the others applied"),
        ]
    amazon = run.drivers.get("amazon")
    if isinstance(amazon, AmazonDriver):
        asked, answered, too_late = amazon.buyer_cancels()
        rows.append(("buyer cancel requests", f"{asked} -> cancelled {answered} (the rest had "
                                              f"shipped: exception); {too_late} too late to ask"))
    all_latencies = _latencies(run, expected & in_erp)
    rows += [
        ("sync-exception records", dict(kinds) or 0),
        ("ERP: orders posted (unique)", e["orders_created"]),
        ("ERP: oversold units", e.get("oversold_units", 0)),
        ("ERP: duplicates refused", e["duplicates_refused"]),
        ("ERP: injected errors (retried)", e["errors_injected"]),
        ("lost orders", len(lost)),
        ("end-to-end latency, all", _latency_text(all_latencies)),
    ]
    print(table(rows, "summary"))
    if lost:
        print(f"LOST: {len(lost)} orders neither reached the ERP nor were cancelled, e.g. "
              f"{lost[:5]}", file=sys.stderr)
    if unknown:
        print(f"UNKNOWN: {len(unknown)} ERP orders no marketplace accepted, e.g. {unknown[:5]}",
              file=sys.stderr)
    if behind:
        print(f"BEHIND: {len(behind)} listings differ from the worker's ATS, e.g. {behind[:5]}",
              file=sys.stderr)
    oversold = e.get("oversold_units", 0)
    if not report.ok:
        print(f"RECONCILIATION: {len(report.mismatches)} mismatches between the marketplaces and "
              "the ERP (see above)", file=sys.stderr)
    ok = not lost and not unknown and not behind and not oversold and report.ok
    print(f"{e['orders_created']} orders posted to the ERP, {len(cancelled - in_erp)} cancelled "
          f"for lack of stock; " + ("no order lost, nothing oversold, every marketplace in step."
                                    if ok else "FAILED: see above."))
    return 0 if ok else 1


def _channel_rows(run: DemoRun, in_erp: set[str], cancelled: set[str]) -> Any:
    for name, driver in run.drivers.items():
        expected = driver.expected()
        latencies = _latencies(run, expected & in_erp)
        gone = expected & cancelled - in_erp
        yield (name, f"{len(expected)} created, {len(expected & in_erp)} in ERP, {len(gone)} "
                     f"cancelled (stock), {len(expected - in_erp - cancelled)} lost; "
                     f"{_latency_text(latencies)}")


FLOWS = (("order_to_erp", "order -> ERP"), ("shipment_to_marketplace", "shipped -> marketplace"),
         ("refund_to_erp", "refund -> ERP credit note"),
         ("refund_to_marketplace", "refund -> marketplace"))


def _flow_rows(run: DemoRun, metrics: Samples) -> Any:
    name = "retail_sync_flow_seconds"
    for channel in run.drivers:
        parts = []
        for flow, label in FLOWS:
            n = int(metrics.count(name, flow=flow, channel=channel))
            if n:
                parts.append(f"{label} {ms(metrics.quantile(name, 0.5, flow=flow, channel=channel))}"
                             f" / {ms(metrics.quantile(name, 0.99, flow=flow, channel=channel))}"
                             f" ({n})")
        yield (channel, "; ".join(parts) or "-")
    e = run.stack.erp.stats() if run.stack.erp else {}
    wms = run.wms.stats() if run.wms else {}
    yield ("warehouse", ", ".join(f"{k} {v}" for k, v in wms.items()) or "-")
    yield ("ERP documents", f"delivery notes {e.get('delivery_notes', 0)}, invoices "
                            f"{e.get('invoices', 0)}, returns {e.get('returns', 0)}, credit notes "
                            f"{e.get('credit_notes', 0)}, cancellations {e.get('cancellations', 0)}")
    yield ("returns asked / refunded", f"{len(run.returns)} / "
                                       f"{int(metrics.count(name, flow='refund_to_marketplace'))}")


def _stock_rows(run: DemoRun, metrics: Samples, behind: list[Any]) -> Any:
    """Per channel: stock decisions, pushes and the propagation latency histogram's p50/p99."""
    name = "retail_sync_stock_propagation_seconds"
    for channel, driver in run.drivers.items():
        decisions = {d: int(metrics.get("retail_sync_stock_decisions_total", channel=channel,
                                        decision=d))
                     for d in ("accepted", "partial", "backorder", "cancelled")}
        shown = ", ".join(f"{d} {n}" for d, n in decisions.items() if n)
        wait = "retail_sync_backorder_wait_seconds"  # buckets for days: the mean says more here
        released = int(metrics.count(wait, channel=channel))
        if released:  # backordered units that goods arrived for during the run
            mean = metrics.get(f"{wait}_sum", channel=channel) / released
            shown += (f" ({released} backorder release(s) to the warehouse after "
                      f"{mean:.1f} s on average)")
        listing = driver.sim.listings.snapshot()["totals"]
        yield (f"{channel} orders", f"{shown or 'none'}; buyers refused at zero stock "
                                    f"{listing['refused_units']} units")
        for cause in ("erp", "order"):
            count = int(metrics.count(name, channel=channel, cause=cause))
            yield (f"{channel} <- {'ERP change' if cause == 'erp' else 'reservation'}",
                   f"p50 {ms(metrics.quantile(name, 0.5, channel=channel, cause=cause))}  "
                   f"p99 {ms(metrics.quantile(name, 0.99, channel=channel, cause=cause))}  "
                   f"(n={count})")
    coalesced = int(metrics.get("retail_sync_inventory_updates_coalesced_total"))
    yield ("updates coalesced away", coalesced)
    for channel in run.drivers:
        calls = int(metrics.get("retail_sync_ratelimit_calls_total", channel=channel))
        if calls:
            throttled = Counter({lab["operation"]: int(v) for n, lab, v in metrics.samples
                                 if n == "retail_sync_ratelimit_throttled_total"
                                 and lab.get("channel") == channel and v})
            waited = metrics.get("retail_sync_ratelimit_wait_seconds_total", channel=channel)
            where = f" ({', '.join(f'{op} {n}' for op, n in throttled.items())})" if throttled else ""
            yield (f"{channel} API calls", f"{calls}, answered 429: {sum(throttled.values())}"
                                           f"{where}, waited for the budget {waited:.1f} s in all")
    yield ("listings at the final ATS",
           f"{len(DEMO_SKUS) * len(run.drivers) - len(behind)} of "
           f"{len(DEMO_SKUS) * len(run.drivers)} (SKU x channel)")


def _latency_text(values: list[float]) -> str:
    return (f"p50 {ms(percentile(values, 50))}  p90 {ms(percentile(values, 90))}  "
            f"p99 {ms(percentile(values, 99))}  max {ms(max(values, default=float('nan')))}  "
            f"(n={len(values)})")


def _latencies(run: DemoRun, keys: set[str]) -> list[float]:
    erp = run.stack.erp
    assert erp is not None
    created = {k: v for d in run.drivers.values() for k, v in d.created_at.items()}
    values = []
    for key in keys:
        stored = erp.order_by_po_no(key)
        if stored is not None and key in created:
            values.append(max(0.0, stored.received_at - created[key]))
    return values
