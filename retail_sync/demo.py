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

Long module: one command's run from start to summary (stack, load, returns, drain, reconciliation,
report), in the order it happens; the summary tables and the HTML report are already in
demo_summary.py and demo_report.py.
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
from pathlib import Path
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
from retail_sync.demo_report import histogram_buckets, render_html
from retail_sync.demo_summary import (
    HISTOGRAM,
    Outcome,
    channel_grid,
    classify,
    closing_line,
    exceptions_grid,
    in_flight_text,
    order_causes,
)
from retail_sync.interrupt import sigterm_as_ctrl_c
from retail_sync.reconcile import reconcile
from retail_sync.redact import mask_url
from retail_sync.report import Progress, Samples, bar, counts_grid, duration, grid, table
from retail_sync.settings import ENV_PREFIX, Settings
from retail_sync.simulators.erpnext.simulator import ErpSimConfig
from retail_sync.simulators.wms.simulator import WmsSimConfig, WmsSimulator
from retail_sync.stack import ROOT, Stack, WorkerProcess


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
        """Orders cancelled on their marketplace (wholly or partly), whatever the cause."""
        return {f"{name}:{c['order_id']}" for name, d in self.drivers.items()
                for c in d.sim.cancellations}

    def cancel_causes(self) -> dict[str, str]:
        """Order key -> ``stock``, ``buyer`` or ``other``, from the marketplaces' records."""
        asked: set[str] = set()
        amazon = self.drivers.get("amazon")
        if isinstance(amazon, AmazonDriver):
            asked = {f"amazon:{r['order_id']}" for r in amazon.sim.buyer_cancel_requests}
        return order_causes({name: d.sim.cancellations for name, d in self.drivers.items()},
                            asked)

    def dashboard_url(self) -> str:
        return f"{self.worker.url}/dashboard/ops#token={self.stack.admin_token('viewer')}"

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
        print(f"dashboard: {run.dashboard_url()}", flush=True)
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
        ("dashboard", f"{run.dashboard_url()}  (operations; /dashboard/finance for finance; "
                      "viewer token of this run)"),
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
    in_erp = run.erp_keys()
    posted = len(in_erp)
    causes = Counter(c for k, c in run.cancel_causes().items() if k not in in_erp)
    cancelled = sum(causes.values())
    failed = int(metrics.get("retail_sync_sync_exceptions_total"))
    pushes = int(metrics.count("retail_sync_stock_propagation_seconds"))
    head = (f"{bar(elapsed / run.args.duration)} {elapsed:5.1f}/{run.args.duration:.0f}s"
            if run.args.duration else f"{elapsed:6.1f}s (Ctrl-C to stop)")
    return (f"{head}  received {received}  posted to ERP {posted}  cancelled: stock "
            f"{causes['stock']} buyer {causes['buyer']} other {causes['other']}  "
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
    expected, in_erp = run.expected_keys(), run.erp_keys()
    causes = run.cancel_causes()
    status = await _worker_status(run, expected - in_erp - set(causes))
    outcomes = {name: classify(d.expected(), in_erp, causes, status)
                for name, d in run.drivers.items()}
    total = Outcome()
    for o in outcomes.values():
        total.add(o)
    unknown = sorted(in_erp - expected)
    records = [orjson.loads(r.value) for r in await stack.read_topic("sync-exceptions")]
    edits_not_applied = sum("was edited on" in r["reason"] for r in records)
    e = erp.stats()
    latencies = {name: _latencies(run, d.expected() & in_erp) for name, d in run.drivers.items()}
    print(channel_grid(outcomes, latencies))
    metrics = await _worker_metrics(run.worker)
    since = metrics.minus(run.baseline)
    behind = await _listings_behind(run)
    print(_stock_grid(run, since))
    print(table(list(_stock_rows(run, since, behind)), "stock (ERP -> marketplaces, during the run)"))
    print(_flow_grid(run, since))
    print(counts_grid(run.wms.stats() if run.wms else {}, "warehouse (WMS simulator)"))
    print(counts_grid({k: e.get(k, 0) for k in ("delivery_notes", "invoices", "returns",
                                                "credit_notes", "cancellations")},
                      "ERP documents"))
    report = await _reconcile(run)
    print(report.table(limit=10))
    print(exceptions_grid(records))
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
    rows += [
        ("returns asked / refunded", f"{len(run.returns)} / "
         f"{int(since.count('retail_sync_flow_seconds', flow='refund_to_marketplace'))}"),
        ("ERP: orders posted (unique)", e["orders_created"]),
        ("ERP: oversold units", e.get("oversold_units", 0)),
        ("ERP: duplicates refused", e["duplicates_refused"]),
        ("ERP: injected errors (retried)", e["errors_injected"]),
        ("in flight at the drain timeout", in_flight_text(total.in_flight)),
        ("lost (unknown to the worker)", len(total.lost)),
    ]
    print(table(rows, "summary"))
    path = _write_report(run, outcomes, latencies, since, records, behind, ok=False)
    if total.lost:
        print(f"LOST: {len(total.lost)} orders the marketplace accepted are unknown to the worker "
              f"(never arrived or dropped), e.g. {total.lost[:5]}", file=sys.stderr)
    if total.in_flight:
        print(f"IN FLIGHT: {len(total.in_flight)} orders not yet in the ERP at the drain timeout "
              f"({run.args.drain_timeout:g} s; the worker has them: "
              f"{in_flight_text(total.in_flight)}), e.g. {sorted(total.in_flight)[:5]}",
              file=sys.stderr)
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
    ok = (not total.lost and not total.in_flight and not unknown and not behind and not oversold
          and report.ok)
    if ok:
        path = _write_report(run, outcomes, latencies, since, records, behind, ok=True)
    print(f"report: {path}")
    print(closing_line(e["orders_created"], total, run.args.drain_timeout, ok))
    return 0 if ok else 1


async def _worker_status(run: DemoRun, keys: set[str]) -> dict[str, str | None]:
    """The worker's status of each order (None: it does not know it), asked on its admin
    listener; at most 500 asked, the rest counted as unknown."""
    out: dict[str, str | None] = {}
    for key in sorted(keys)[:500]:
        try:
            code, view = await run.worker.get_json(f"/orders/{key}")
        except Exception:  # noqa: BLE001 - a worker that cannot answer knows nothing
            code, view = 0, {}
        out[key] = str(view.get("status") or "known") if code == 200 else None
    return out


def _write_report(run: DemoRun, outcomes: dict[str, Outcome], latencies: dict[str, list[float]],
                  since: Samples, records: list[dict[str, Any]], behind: list[Any],
                  ok: bool) -> Path:
    """run.json (the run's figures) and report.html drawn from it, in var/demo/<run>/."""
    hists = []
    for flow, label in FLOWS:
        for channel in run.drivers:
            hists.append({"metric": "flow", "name": label, "channel": channel,
                          "buckets": histogram_buckets(since, "retail_sync_flow_seconds",
                                                       flow=flow, channel=channel)})
    for cause, label in (("erp", "ERP change -> marketplace"),
                         ("order", "reservation -> marketplace")):
        for channel in run.drivers:
            hists.append({"metric": "stock", "name": label, "channel": channel,
                          "buckets": histogram_buckets(since, "retail_sync_stock_propagation_seconds",
                                                       channel=channel, cause=cause)})
    kinds = Counter((r.get("kind", "?"), r.get("channel")) for r in records)
    total = len(DEMO_SKUS) * len(run.drivers)
    record = {
        "run": run.stack.app_id, "duration_s": run.args.duration, "rate": run.args.rate,
        "drain_timeout_s": run.args.drain_timeout, "ok": ok,
        "channels": {name: {"created": o.created, "in_erp": o.in_erp,
                            "cancelled": {c: o.cancelled[c] for c in ("stock", "buyer", "other")},
                            "in_flight": len(o.in_flight), "lost": len(o.lost),
                            "latencies_s": [round(v, 4) for v in latencies.get(name, [])]}
                     for name, o in outcomes.items()},
        "histograms": hists,
        "exceptions": [{"kind": k, "channel": c, "count": n} for (k, c), n in kinds.items()],
        "listings": {"at_final_ats": total - len(behind), "total": total},
    }
    folder = run.stack.workdir / run.stack.app_id
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "run.json").write_bytes(orjson.dumps(record, option=orjson.OPT_INDENT_2))
    path = folder / "report.html"
    path.write_text(render_html(record), encoding="utf-8")
    return path


FLOWS = (("order_to_erp", "order -> ERP"), ("shipment_to_marketplace", "shipped -> marketplace"),
         ("refund_to_erp", "refund -> ERP credit note"),
         ("refund_to_marketplace", "refund -> marketplace"))


def _flow_grid(run: DemoRun, metrics: Samples) -> str:
    """After the order, per channel and flow: p50 / p99 (n) from the worker's histogram. The order
    -> ERP figure is the demo's measured one (orders per channel above), not repeated here."""
    name = "retail_sync_flow_seconds"
    rows = []
    for channel in run.drivers:
        row: list[object] = [channel]
        for flow, _label in FLOWS[1:]:
            n = int(metrics.count(name, flow=flow, channel=channel))
            row.append(f"{duration(metrics.quantile(name, 0.5, flow=flow, channel=channel))} / "
                       f"{duration(metrics.quantile(name, 0.99, flow=flow, channel=channel))}"
                       f" ({n})" if n else None)
        rows.append(row)
    return grid(["channel", *(f"{label} [h]" for _f, label in FLOWS[1:])], rows,
                "after the order: sync latency per flow, p50 / p99 (n)", [HISTOGRAM])


def _stock_grid(run: DemoRun, metrics: Samples) -> str:
    """Per channel: stock decisions and propagation p50 / p99 (n) from the worker's histogram."""
    name = "retail_sync_stock_propagation_seconds"
    rows = []
    for channel, driver in run.drivers.items():
        decisions = [int(metrics.get("retail_sync_stock_decisions_total", channel=channel,
                                     decision=d))
                     for d in ("accepted", "partial", "backorder", "cancelled")]
        listing = driver.sim.listings.snapshot()["totals"]
        row: list[object] = [channel, *decisions, listing["refused_units"]]
        for cause in ("erp", "order"):
            n = int(metrics.count(name, channel=channel, cause=cause))
            row.append(f"{duration(metrics.quantile(name, 0.5, channel=channel, cause=cause))} / "
                       f"{duration(metrics.quantile(name, 0.99, channel=channel, cause=cause))}"
                       f" ({n})" if n else None)
        rows.append(row)
    return grid(["channel", "accepted", "partial", "backorder", "cancelled", "refused units",
                 "ERP change -> listing [h]", "reservation -> listing [h]"], rows,
                "stock decisions and propagation, p50 / p99 (n)",
                ["refused units: buyers refused at zero stock on the marketplace", HISTOGRAM])


def _stock_rows(run: DemoRun, metrics: Samples, behind: list[Any]) -> Any:
    """Backorder releases, coalescing, rate limits and the listings' final state."""
    wait = "retail_sync_backorder_wait_seconds"  # buckets for days: the mean says more here
    for channel in run.drivers:
        released = int(metrics.count(wait, channel=channel))
        if released:  # backordered units that goods arrived for during the run
            mean = metrics.get(f"{wait}_sum", channel=channel) / released
            yield (f"{channel} backorders", f"{released} release(s) to the warehouse after "
                                            f"{duration(mean)} on average (mean of the histogram)")
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
                                           f"{where}, waited for the budget {duration(waited)} "
                                           "in all")
    yield ("listings at the final ATS",
           f"{len(DEMO_SKUS) * len(run.drivers) - len(behind)} of "
           f"{len(DEMO_SKUS) * len(run.drivers)} (SKU x channel)")


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
