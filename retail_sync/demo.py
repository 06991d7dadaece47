"""`retail-sync demo`: the order path end to end, on the embedded broker, with live progress.

Starts the embedded Kafka-compatible broker (unless RETAIL_SYNC_BROKER_URL is set), the ERP
simulator, one Faust worker process and the Shopify-like simulator, which sends signed
``orders/create`` webhooks (with injected duplicates, malformed and unmappable bodies) to the
worker. Runs until Ctrl-C or ``--duration``, drains, prints a summary and exits non-zero if any
order accepted by the worker did not reach the ERP.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import time
from collections import Counter
from dataclasses import dataclass, field

import orjson

from retail_sync.cli import load_settings
from retail_sync.report import Progress, Samples, bar, ms, percentile, table
from retail_sync.stack import ROOT, Stack, WorkerProcess
from simulators.erp import ErpSimConfig
from simulators.shopify import ShopifySimConfig, ShopifySimulator


@dataclass
class DemoRun:
    args: argparse.Namespace
    stack: Stack
    worker: WorkerProcess
    shop: ShopifySimulator
    started: float = field(default_factory=time.monotonic)
    interrupted: int = 0

    def erp_keys(self) -> set[str]:
        assert self.stack.erp is not None
        return {stored.doc["po_no"] for stored in self.stack.erp.orders.values()}

    def expected_keys(self) -> set[str]:
        return {f"shopify:{oid}" for oid in self.shop.accepted_order_ids()}


def run_demo(args: argparse.Namespace) -> int:
    try:
        return asyncio.run(_demo(args))
    except KeyboardInterrupt:
        return 130


async def _demo(args: argparse.Namespace) -> int:
    settings = load_settings()
    erp_config = ErpSimConfig(latency_ms=args.erp_latency_ms, latency_jitter_ms=args.erp_latency_ms,
                              error_rate=args.erp_error_rate)
    app_id = f"demo-{time.strftime('%Y%m%d-%H%M%S')}"
    stack = Stack(app_id=app_id, workdir=ROOT / "var" / "demo", broker_url=settings.broker_url,
                  erp_config=erp_config, tansu=settings.tansu_compat)
    print("retail-sync demo: starting the broker, the ERP simulator and a worker…", flush=True)
    await stack.start()
    try:
        worker = stack.new_worker("worker-1", port=settings.web_port).start()
        await worker.wait_ready()
        shop = ShopifySimulator(ShopifySimConfig(
            webhook_url=f"{worker.url}/webhooks/shopify/orders/create",
            secret=settings.shopify_webhook_secret.get_secret_value(),
            rate_per_s=args.rate, duplicate_rate=args.duplicate_rate,
            malformed_rate=args.malformed_rate, unmappable_rate=args.unmappable_rate,
            max_attempts=8,
        ))
        shop_url = await shop.start()
        _print_parts(stack, worker, shop_url, args)
        run = DemoRun(args, stack, worker, shop)
        await _send_with_progress(run)
        await _drain(run)
        return await _summary(run)
    finally:
        if "shop" in locals():
            await shop.stop()
        await stack.close()


def _print_parts(stack: Stack, worker: WorkerProcess, shop_url: str, args: argparse.Namespace):
    broker = "embedded Tansu" if stack.broker is not None else "configured Kafka"
    duration = f"{args.duration:.0f}s" if args.duration else "until Ctrl-C"
    print(table([
        ("broker", f"{stack.broker_url} ({broker})"),
        ("worker", f"{worker.url}  (/orders/<key>, /orders/lookup?id=, /metrics, /health)"),
        ("worker log", str(worker.log_path)),
        ("ERP simulator", f"{stack.erp_url}  (/_sim/stats)"),
        ("Shopify simulator", f"{shop_url}  (/admin/api/2024-04/orders.json, /_sim/stats)"),
        ("offered load", f"{args.rate:g} orders/s, {duration}"),
    ], "parts"), flush=True)


def _install_interrupt(run: DemoRun) -> None:
    loop = asyncio.get_running_loop()

    def on_interrupt() -> None:
        run.interrupted += 1
        run.shop.stop_sending()
        if run.interrupted > 1:
            raise KeyboardInterrupt

    loop.add_signal_handler(signal.SIGINT, on_interrupt)
    loop.add_signal_handler(signal.SIGTERM, on_interrupt)


async def _send_with_progress(run: DemoRun) -> None:
    _install_interrupt(run)
    sending = asyncio.create_task(run.shop.send_orders(duration_s=run.args.duration))
    progress = Progress()
    while not sending.done():
        progress.update(await _status_line(run))
        await asyncio.wait({sending}, timeout=0.5)
    progress.update(await _status_line(run))
    progress.done()
    sending.result()


async def _status_line(run: DemoRun) -> str:
    elapsed = time.monotonic() - run.started
    metrics = await _worker_metrics(run.worker)
    received = len(run.shop.accepted_order_ids())
    posted = len(run.erp_keys())
    failed = int(metrics.get("retail_sync_sync_exceptions_total"))
    head = (f"{bar(elapsed / run.args.duration)} {elapsed:5.1f}/{run.args.duration:.0f}s"
            if run.args.duration else f"{elapsed:6.1f}s (Ctrl-C to stop)")
    return (f"{head}  received {received}  posted to ERP {posted}  "
            f"failed {failed}  in flight {max(0, received - posted)}")


async def _worker_metrics(worker: WorkerProcess) -> Samples:
    try:
        return Samples(await worker.metrics_text())
    except Exception:  # noqa: BLE001 - progress must not stop the demo
        return Samples()


async def _drain(run: DemoRun) -> None:
    """Wait until every order the worker accepted is in the ERP (or the drain timeout)."""
    deadline = time.monotonic() + run.args.drain_timeout
    progress = Progress()
    while time.monotonic() < deadline and not run.expected_keys() <= run.erp_keys():
        missing = len(run.expected_keys() - run.erp_keys())
        progress.update(f"draining: {missing} orders still on their way to the ERP")
        await asyncio.sleep(0.25)
    progress.done()


async def _summary(run: DemoRun) -> int:
    stack, shop, erp = run.stack, run.shop, run.stack.erp
    assert erp is not None
    expected, in_erp = run.expected_keys(), run.erp_keys()
    lost = sorted(expected - in_erp)
    unexpected = sorted(in_erp - {f"shopify:{oid}" for oid in shop.orders})
    latencies = _latencies(run, expected & in_erp)
    kinds = Counter(orjson.loads(r.value)["kind"] for r in await stack.read_topic("sync-exceptions"))
    s, e = shop.stats(), erp.stats()
    metrics = await _worker_metrics(run.worker)
    deduped = int(metrics.get("retail_sync_webhooks_total", outcome="duplicate"))
    print(table([
        ("orders generated", s["orders_generated"]),
        ("accepted by the worker (2xx)", len(expected)),
        ("webhook deliveries / retries", f"{s['deliveries_attempted']} / {s['retries']}"),
        ("duplicates injected", f"{s['duplicates_sent']} (the worker answered {deduped} deliveries "
                                "as duplicates, incl. retries of malformed ones)"),
        ("malformed bodies injected", f"{s['malformed_sent']} -> 400 + sync exception"),
        ("unmappable orders injected", f"{s['unmappable_sent']} -> 200 + sync exception"),
        ("sync-exception records", dict(kinds) or 0),
        ("ERP: orders posted (unique)", e["orders_created"]),
        ("ERP: idempotent replays", e["idempotent_replays"]),
        ("ERP: injected errors (retried)", e["errors_injected"]),
        ("lost orders", len(lost)),
        ("unexpected ERP orders", len(unexpected)),
        ("end-to-end latency", f"p50 {ms(percentile(latencies, 50))}  "
                               f"p90 {ms(percentile(latencies, 90))}  "
                               f"p99 {ms(percentile(latencies, 99))}  "
                               f"max {ms(max(latencies, default=float('nan')))}  "
                               f"(n={len(latencies)}, webhook sent -> ERP sales order)"),
    ], "summary"))
    if lost:
        print(f"LOST: {len(lost)} accepted orders never reached the ERP, e.g. {lost[:5]}",
              file=sys.stderr)
    ok = not lost and not unexpected and e["orders_created"] == len(expected)
    print(f"{e['orders_created']} orders posted to the ERP; "
          + ("no order lost." if ok else "FAILED: see above."))
    return 0 if ok else 1


def _latencies(run: DemoRun, keys: set[str]) -> list[float]:
    erp = run.stack.erp
    assert erp is not None
    values = []
    for key in keys:
        stored = erp.order_by_po_no(key)
        sent = run.shop.first_sent_at.get(key.split(":", 1)[1])
        if stored is not None and sent is not None:
            values.append(max(0.0, stored.received_at - sent))
    return values
