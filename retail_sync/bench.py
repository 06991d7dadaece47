"""`retail-sync bench`: the webhook -> ERP pipeline and its anchors, on one broker.

1. ceiling   - anchor: plain aiokafka consume rate of the same raw-order records (no Faust, no
               work), records/s (retail_sync/bench_anchors.py)
2. faust     - anchor: a tuned Faust worker doing one RocksDB table update per event, events/s
               (retail_sync/bench_faust_anchor.py); ``anchors`` in ``--only`` names both
3. pipeline  - the same records produced into orders-raw by a load generator process as fast as
               the broker takes them, to ``--workers`` ready workers; every SKU stocked. The clock
               stops when the ERP simulator holds all N orders AND the app's consumer group has
               zero lag on every partition the workers consume (committed vs end offsets from the
               broker); the time of N ERP confirmations (what this bench timed before) is shown
               next to it. Also record operations and bytes per order per topic (end-offset and
               committed-offset deltas, a read of the produced records), CPU seconds per order per
               process (psutil), and pipeline/anchor ratios: the headline
               (retail_sync/bench_pipeline.py, bench_offsets.py, bench_summary.py). ``--repeat R``
               runs it R times on fresh topics and reports medians
4. latency   - webhooks at a fixed offered rate through HTTP: p50/p99 from the simulator's
               send to the ERP simulator's receipt; every SKU stocked, and the record operations
               per order at that rate once every queue is drained
5. stock     - ``--stock-changes`` ERP receipts at ``--stock-rate`` per second on the demo
               catalogue, pushed to the four marketplace simulators: p50/p99 of the worker's
               ``retail_sync_stock_propagation_seconds{cause="erp"}`` histogram per channel
               (ERP change -> marketplace took the quantity), measured after the opening stock
6. failover  - two workers, ``--failover-orders`` orders through both, then one SIGKILLed: seconds
               until the survivor answers every order and SKU from its own tables (the dead
               worker's partitions reassigned and recovered); with standby replicas (the
               default, 1) and without
7. soak      - (only with ``--only soak``) the demo's four marketplaces at ``--soak-rate`` orders/s
               through one worker (every SKU stocked, the warehouse ships): the worker's resident
               memory (psutil, the worker's pid) after ``--soak-orders`` N and 4N orders in the
               ERP, the slope between them in KiB per 1,000 orders, and its RocksDB size on disk.
               Caches are warm after N; a flat line after that is the goal (ARCHITECTURE §5f.5)

``--json FILE`` writes every figure (per topic, per process, every run); docs/BENCHMARKS.md
describes the method. Results go there by hand, with the command.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import time
from pathlib import Path
from typing import Any

import aiohttp

from retail_sync.bench_anchors import ceiling, faust_anchor
from retail_sync.bench_latency import latency
from retail_sync.bench_load import preload
from retail_sync.bench_pipeline import pipeline, settled
from retail_sync.bench_summary import combine, flat, headline, pipeline_tables
from retail_sync.broker import EmbeddedBroker
from retail_sync.cli import load_settings
from retail_sync.interrupt import sigterm_as_ctrl_c
from retail_sync.redact import mask_url
from retail_sync.report import Progress, Samples, bar, ms, table
from retail_sync.simulators.erpnext.simulator import ErpSimConfig
from retail_sync.simulators.shopify.simulator import ShopifyOrderFactory
from retail_sync.stack import ROOT, Stack
from retail_sync.streams.models import RawOrderMessage, utcnow


def run_bench(args: argparse.Namespace) -> int:
    with sigterm_as_ctrl_c():  # SIGTERM stops the workers and the broker, as Ctrl-C does
        return asyncio.run(_bench(args))


async def _bench(args: argparse.Namespace) -> int:
    settings = load_settings()
    broker = None if settings.broker_url else EmbeddedBroker().start()
    url = settings.broker_url or broker.url  # type: ignore[union-attr]  # set without a broker_url
    tansu = settings.tansu_compat if settings.tansu_compat is not None else broker is not None
    broker_pid = broker.process.pid if broker is not None and broker.process else None
    runs = _runs(args.only)
    try:
        records = raw_records(args.messages if runs & {"ceiling", "faust", "pipeline"} else 0)
        print(f"bench: {len(records)} raw Shopify order records, {settings.partitions} partitions, "
              f"broker {mask_url(url)} ({'embedded Tansu' if broker else 'configured Kafka'})", flush=True)
        results: dict[str, Any] = {
            "machine": f"{platform.machine()}, {os.cpu_count()} cores, "
                       f"Python {platform.python_version()}"}
        if runs & {"ceiling", "faust", "pipeline"}:
            results.update(await _throughput(args, runs, url, tansu, settings.partitions,
                                             broker_pid, records))
        if "latency" in runs:
            results.update(await latency(url, args.rate, args.latency_seconds, tansu,
                                         front_door=args.latency_ingress, broker_pid=broker_pid))
        if "stock" in runs:
            results.update(await _stock_propagation(url, tansu, args.stock_changes,
                                                    args.stock_rate))
        if "failover" in runs:
            for standby in (1, 0):
                results.update(await _failover(url, tansu, settings.partitions,
                                               args.failover_orders, standby))
        if "soak" in runs:
            from retail_sync.soak import soak  # a run of minutes: only when asked for
            results.update(await soak(url, tansu, getattr(args, "soak_rate", 50.0),
                                      getattr(args, "soak_orders", 2500)))
    finally:
        if broker is not None:
            broker.stop()
    print(table([(k.replace("_", " "), v) for k, v in results.items()
                 if not isinstance(v, dict | list)], "benchmark"))
    if "pipeline_orders_per_s" in results:
        print(_headline(results))
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(results, indent=2))  # noqa: ASYNC240
    return 0


def _headline(r: dict[str, Any]) -> str:
    workers = f"{r['pipeline_workers']} worker{'s' if r['pipeline_workers'] > 1 else ''}"
    parts = [f"headline: {r['pipeline_orders_per_s']:,.1f} orders/s sustained (lag 0, {workers}), "
             f"{r['pipeline_record_ops_per_order']:.1f} record operations per order"]
    if "ratio_pipeline_to_aiokafka" in r:
        parts.append(f"{r['ratio_pipeline_to_aiokafka']:.4f} x aiokafka consume "
                     f"({r['ceiling_msgs_per_s']:,} records/s)")
    if "ratio_pipeline_to_faust" in r:
        parts.append(f"{r['ratio_pipeline_to_faust']:.4f} x Faust table update "
                     f"({r['faust_anchor_events_per_s']:,} events/s); record ops/s "
                     f"{r['ratio_record_ops_to_faust']:.3f} x Faust's")
    return ";\n          ".join(parts)


async def _throughput(args: argparse.Namespace, runs: set[str], url: str, tansu: bool,
                      partitions: int, broker_pid: int | None,
                      records: list[tuple[bytes, bytes]]) -> dict[str, Any]:
    """The anchors and the pipeline, on the same records (bench_anchors, bench_pipeline)."""
    results: dict[str, Any] = {"messages": len(records)}
    bootstrap = _bootstrap(url)
    repeat = max(1, getattr(args, "repeat", 1))
    faust = None
    if "ceiling" in runs:
        results["ceiling_msgs_per_s"] = round(await ceiling(bootstrap, records, partitions))
    if "faust" in runs:
        faust = await faust_anchor(bootstrap, records, partitions, tansu, ROOT / "var" / "bench",
                                   runs=repeat)
        results.update(faust)
    if "pipeline" not in runs:
        return results
    skus = _skus(records)
    passes = []
    for run in range(repeat):
        label = f"pipeline {run + 1}/{repeat}" if repeat > 1 else "pipeline"
        passes.append(await pipeline(url, records, tansu, partitions, args.workers, broker_pid,
                                     skus, label))
        print(f"{label}: {passes[-1]['orders_per_s']:,.0f} orders/s sustained (lag 0), "
              f"{passes[-1]['orders_per_s_confirmed']:,.0f} at N confirmations", flush=True)
    pipe = combine(passes)
    ratios = headline(pipe, results.get("ceiling_msgs_per_s"),
                      faust["faust_anchor_events_per_s"] if faust else None)
    results.update(flat(pipe), pipeline_workers=args.workers,
                   pipeline_orders_per_s=round(pipe["orders_per_s"], 1), **ratios)
    if "ratio_pipeline_to_aiokafka" in ratios:  # the name this figure had before
        results["ratio_pipeline_to_ceiling"] = ratios["ratio_pipeline_to_aiokafka"]
    results["pipeline_passes"] = passes
    print("\n" + pipeline_tables(pipe, ratios, results.get("ceiling_msgs_per_s"), faust))
    return results


DEFAULT_RUNS = frozenset({"ceiling", "faust", "pipeline", "latency", "stock", "failover"})


def _runs(only: str) -> set[str]:
    """``--only`` as a set of runs (``anchors`` = ceiling + faust); every run but soak if empty."""
    if not only:
        return set(DEFAULT_RUNS)
    names = {name.strip() for name in only.split(",") if name.strip()}
    if "anchors" in names:
        names = (names - {"anchors"}) | {"ceiling", "faust"}
    return names


def raw_records(n: int, *, seed: int = 1,
                delivery_prefix: str = "bench") -> list[tuple[bytes, bytes]]:
    """``n`` orders-raw records (key, value) of Shopify orders, as the webhook writes them."""
    factory = ShopifyOrderFactory(seed=seed)
    out = []
    for _ in range(n):
        order = factory.order()
        raw = RawOrderMessage(channel="shopify", topic="orders/create",
                              delivery_id=f"{delivery_prefix}-{order['id']}", received_at=utcnow(),
                              body=json.dumps(order))
        out.append((f"shopify:{order['id']}".encode(), raw.model_dump_json().encode()))
    return out


def _skus(records: list[tuple[bytes, bytes]]) -> set[str]:
    skus = set()
    for _, value in records:
        body = json.loads(RawOrderMessage.model_validate_json(value).body)
        skus |= {line["sku"] for line in body.get("line_items", []) if line.get("sku")}
    return skus


def _bootstrap(url: str) -> str:
    return ",".join(h.split("://", 1)[-1] for h in url.split(","))


async def _until_confirmed(group: list[Any], total: int, label: str, what: str) -> None:
    """Until the workers' ERP confirmations add up to ``total``, with a progress bar."""
    progress = Progress()
    while True:
        texts = await asyncio.gather(*(w.metrics_text() for w in group))
        done = sum(Samples(t).get("retail_sync_order_to_erp_seconds_count") for t in texts)
        progress.update(f"{label} {bar(done / total)} {int(done)}/{total} {what}")
        if done >= total:
            break
        await asyncio.sleep(0.25)
    progress.done()


async def _stock_propagation(url: str, tansu: bool, changes: int, rate: float) -> dict[str, Any]:
    """ERP receipts -> every marketplace, through the real worker and simulators."""
    import random
    import tempfile
    from types import SimpleNamespace

    from retail_sync.demo_channels import DEMO_SKUS, make_driver

    stack = Stack(app_id=f"bench-stock-{int(time.time())}", workdir=ROOT / "var" / "bench",
                  broker_url=url, erp_config=ErpSimConfig(), tansu=tansu)
    await stack.start()
    erp = stack.erp
    assert erp is not None
    rng = random.Random(3)
    for sku in DEMO_SKUS:
        erp.set_stock(sku, rng.randint(50, 500))
    fake_args = SimpleNamespace(duplicate_rate=0, malformed_rate=0, unmappable_rate=0)
    workdir = Path(tempfile.mkdtemp(prefix="bench-stock-"))
    drivers = {c: make_driver(c, "shpss_demo_secret", fake_args, workdir, "http://127.0.0.1:9")
               for c in ("shopify", "amazon", "walmart", "regional")}
    try:
        for driver in drivers.values():
            stack.env.update(await driver.prepare())
        stack.env["RETAIL_SYNC_ERP_STOCK_POLL_INTERVAL_S"] = "0.5"
        worker = await stack.start_worker("bench-stock")

        async def in_step() -> bool:
            return await _in_step(worker, drivers, DEMO_SKUS)

        deadline = time.monotonic() + 120
        while not await in_step() and time.monotonic() < deadline:
            await asyncio.sleep(0.5)
        await asyncio.sleep(2.0)  # a feed's push report lands after the listing changed
        baseline = Samples(await worker.metrics_text())
        print(f"stock: {changes} ERP receipts at {rate:g}/s, pushed to 4 marketplaces…", flush=True)
        progress = Progress()
        for i in range(changes):
            erp.receive(rng.choice(DEMO_SKUS), rng.randint(1, 20))
            progress.update(f"stock: {bar((i + 1) / changes)} {i + 1}/{changes} ERP receipts")
            await asyncio.sleep(1 / rate)
        progress.done()
        deadline = time.monotonic() + 120
        await asyncio.sleep(1.0)
        while not await in_step() and time.monotonic() < deadline:
            await asyncio.sleep(0.5)
        since = Samples(await worker.metrics_text()).minus(baseline)
        out: dict[str, Any] = {"stock_erp_changes": changes, "stock_change_rate_per_s": rate,
                               **_propagation_figures(since, list(drivers))}
        out["stock_in_step_at_end"] = await in_step()
        return out
    finally:
        for driver in drivers.values():
            await driver.close()
        await stack.close()


async def _in_step(worker: Any, drivers: dict[str, Any], skus: list[str]) -> bool:
    """Every marketplace simulator lists every SKU at the worker's ATS for it."""
    for sku in skus:
        status, view = await worker.get_json(f"/inventory/{sku}")
        if status != 200:
            return False
        for name, driver in drivers.items():
            if name == "regional":
                driver.sim.process_outbox()
            if driver.sim.listings.quantity(sku) != view["ats"][name]:
                return False
    return True


def _propagation_figures(since: Samples, channels: list[str]) -> dict[str, Any]:
    """p50/p99 and pushes per channel of ERP -> marketplace propagation, updates coalesced."""
    name = "retail_sync_stock_propagation_seconds"
    out: dict[str, Any] = {}
    for channel in channels:
        out[f"stock_{channel}_p50"] = ms(since.quantile(name, 0.5, channel=channel, cause="erp"))
        out[f"stock_{channel}_p99"] = ms(since.quantile(name, 0.99, channel=channel, cause="erp"))
        out[f"stock_{channel}_pushes"] = int(since.count(name, channel=channel, cause="erp"))
    out["stock_updates_coalesced"] = int(since.get("retail_sync_inventory_updates_coalesced_total"))
    return out


async def _failover(url: str, tansu: bool, partitions: int, orders: int,
                    standby: int) -> dict[str, Any]:
    """Kill one of two loaded workers: how long until the survivor owns and serves everything."""
    records = raw_records(orders)
    stack = Stack(app_id=f"bench-fail{standby}-{int(time.time())}", workdir=ROOT / "var" / "bench",
                  broker_url=url, erp_config=ErpSimConfig(), tansu=tansu, partitions=partitions)
    stack.env["RETAIL_SYNC_TABLE_STANDBY_REPLICAS"] = str(standby)
    await stack.start()
    assert stack.erp is not None
    skus = sorted(_skus(records))
    for sku in skus:
        stack.erp.set_stock(sku, 10_000_000)
    keys = [key.decode() for key, _ in records]
    sample = keys[:: max(1, len(keys) // 200)]  # ~200 orders spread over every partition
    try:
        survivor, victim = group = [stack.new_worker(f"bench-fail-{i + 1}").start() for i in range(2)]
        await asyncio.gather(*(w.wait_ready() for w in group))
        await settled(group)
        await preload(_bootstrap(url), stack.topic("orders-raw"), records, partitions)
        await _until_confirmed(group, len(records), f"failover (standby {standby}):",
                               "orders in the ERP before the kill")
        await asyncio.sleep(3.0)  # standbys catch up with the last changelog writes
        await victim.kill()
        killed = time.monotonic()
        serving_at = None
        while time.monotonic() - killed < 180:
            if await _serves(survivor, sample, skus):
                serving_at = time.monotonic() - killed
                break
            await asyncio.sleep(0.1)
        assert stack.erp.stats()["orders_created"] == len(records)
        shown = f"{serving_at:.1f} s" if serving_at is not None else "not within 180 s"
        print(f"failover (standby {standby}): the survivor serves every order and SKU after "
              f"{shown}", flush=True)
        return {f"failover_standby{standby}_orders": len(records),
                f"failover_standby{standby}_serving_s": round(serving_at, 1) if serving_at else None}
    finally:
        await stack.close()


async def _serves(worker: Any, keys: list[str], skus: list[str]) -> bool:
    try:
        return await _serves_all(worker, keys, skus)
    except (ValueError, aiohttp.ClientError, TimeoutError):  # mid-rebalance: not JSON, no answer
        return False


async def _serves_all(worker: Any, keys: list[str], skus: list[str]) -> bool:
    for key in keys:
        status, body = await worker.get_json(f"/orders/{key}")
        if status != 200 or body.get("status") != "erp_confirmed":
            return False
    for sku in skus:
        status, _ = await worker.get_json(f"/inventory/{sku}")
        if status != 200:
            return False
    return True
