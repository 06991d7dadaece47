"""`retail-sync bench`: the consume ceiling and the webhook -> ERP pipeline, on one broker.

1. ceiling   - raw aiokafka consume rate of the same raw-order records (no Faust, no work)
2. pipeline  - the same records produced into orders-raw as fast as the broker takes them, to
               ``--workers`` ready workers: orders/s from the first record produced until every
               order is confirmed by the ERP (ingest -> order state -> stock reservation per SKU
               -> order state -> ERP post -> state -> stock commit); every SKU is stocked
3. latency   - webhooks at a fixed offered rate through HTTP: p50/p99 from the simulator's
               send to the ERP simulator's receipt
4. stock     - ``--stock-changes`` ERP receipts at ``--stock-rate`` per second on the demo
               catalogue, pushed to the four marketplace simulators: p50/p99 of the worker's
               ``retail_sync_stock_propagation_seconds{cause="erp"}`` histogram per channel
               (ERP change -> marketplace took the quantity), measured after the opening stock
5. failover  - two workers, ``--failover-orders`` orders through both, then one SIGKILLed: seconds
               until the survivor answers every order and SKU from its own tables (the dead
               worker's partitions reassigned and recovered); with standby replicas (the
               default, 1) and without
6. soak      - (only with ``--only soak``) the demo's four marketplaces at ``--soak-rate`` orders/s
               through one worker (every SKU stocked, the warehouse ships): the worker's resident
               memory (psutil, the worker's pid) after ``--soak-orders`` N and 4N orders in the
               ERP, the slope between them in KiB per 1,000 orders, and its RocksDB size on disk.
               Caches are warm after N; a flat line after that is the goal (ARCHITECTURE §5f.5)

Prints pipeline/ceiling. Results go to docs/BENCHMARKS.md by hand, with the command.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any

import aiohttp
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from retail_sync.broker import EmbeddedBroker
from retail_sync.cli import load_settings
from retail_sync.interrupt import sigterm_as_ctrl_c
from retail_sync.redact import mask_url
from retail_sync.report import Progress, Samples, bar, ms, percentile, table
from retail_sync.simulators.erpnext.simulator import ErpSimConfig
from retail_sync.simulators.shopify.simulator import ShopifyOrderFactory, ShopifySimConfig, ShopifySimulator
from retail_sync.stack import ROOT, Stack
from retail_sync.streams.models import RawOrderMessage, utcnow


def run_bench(args: argparse.Namespace) -> int:
    with sigterm_as_ctrl_c():  # SIGTERM stops the workers and the broker, as Ctrl-C does
        return asyncio.run(_bench(args))


async def _bench(args: argparse.Namespace) -> int:
    settings = load_settings()
    broker = None if settings.broker_url else EmbeddedBroker().start()
    url = settings.broker_url or broker.url  # type: ignore[union-attr]
    tansu = settings.tansu_compat if settings.tansu_compat is not None else broker is not None
    try:
        records = _raw_records(args.messages if not args.only or "ceiling" in args.only
                               or "pipeline" in args.only else 0)
        print(f"bench: {len(records)} raw Shopify order records, {settings.partitions} partitions, "
              f"broker {mask_url(url)} ({'embedded Tansu' if broker else 'configured Kafka'})", flush=True)
        runs = set(args.only.split(",")) if args.only else {"ceiling", "pipeline", "latency",
                                                             "stock", "failover"}
        results: dict[str, Any] = {
            "machine": f"{platform.machine()}, {os.cpu_count()} cores, "
                       f"Python {platform.python_version()}"}
        if "ceiling" in runs or "pipeline" in runs:
            results["messages"] = len(records)
        if "ceiling" in runs:
            results["ceiling_msgs_per_s"] = round(await _ceiling(url, records, settings.partitions))
        if "pipeline" in runs:
            pipeline = await _pipeline(url, records, tansu, settings.partitions, args.workers)
            results.update(pipeline_workers=args.workers, pipeline_orders_per_s=round(pipeline))
            if "ceiling_msgs_per_s" in results:
                results["ratio_pipeline_to_ceiling"] = round(
                    pipeline / results["ceiling_msgs_per_s"], 4)
        if "latency" in runs:
            results.update(await _latency(url, args.rate, args.latency_seconds, tansu))
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
    print(table([(k.replace("_", " "), v) for k, v in results.items()], "benchmark"))
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(results, indent=2))  # noqa: ASYNC240
    return 0


def _raw_records(n: int) -> list[tuple[bytes, bytes]]:
    factory = ShopifyOrderFactory(seed=1)
    out = []
    for _ in range(n):
        order = factory.order()
        raw = RawOrderMessage(channel="shopify", topic="orders/create",
                              delivery_id=f"bench-{order['id']}", received_at=utcnow(),
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


async def _preload(url: str, topic: str, records: list[tuple[bytes, bytes]],
                   partitions: int) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=_bootstrap(url))
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, partitions, 1)])
    except TopicAlreadyExistsError:
        pass  # the worker declared it already
    finally:
        await admin.close()
    producer = AIOKafkaProducer(bootstrap_servers=_bootstrap(url), linger_ms=20,
                                max_batch_size=1024 * 1024)
    await producer.start()
    try:
        progress = Progress()
        for i, (key, value) in enumerate(records, 1):
            await producer.send(topic, value, key=key)
            if i % 2000 == 0 or i == len(records):
                progress.update(f"preloading {topic}: {bar(i / len(records))} {i}/{len(records)}")
        await producer.flush()
        progress.done()
    finally:
        await producer.stop()


async def _ceiling(url: str, records: list[tuple[bytes, bytes]], partitions: int,
                   runs: int = 3) -> float:
    topic = f"bench-ceiling-{int(time.time())}"
    await _preload(url, topic, records, partitions)
    rates = []
    for run in range(runs):
        consumer = AIOKafkaConsumer(bootstrap_servers=_bootstrap(url), enable_auto_commit=False)
        await consumer.start()
        try:
            tps = [TopicPartition(topic, p) for p in range(partitions)]
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            seen, started = 0, time.perf_counter()
            while seen < len(records):
                batch = await consumer.getmany(timeout_ms=1000)
                seen += sum(len(msgs) for msgs in batch.values())
            rates.append(seen / (time.perf_counter() - started))
        finally:
            await consumer.stop()
        print(f"ceiling run {run + 1}/{runs}: {rates[-1]:,.0f} msgs/s", flush=True)
    return statistics.median(rates)


async def _pipeline(url: str, records: list[tuple[bytes, bytes]], tansu: bool,
                    partitions: int, workers: int) -> float:
    stack = Stack(app_id=f"bench-pipe-{int(time.time())}", workdir=ROOT / "var" / "bench",
                  broker_url=url, erp_config=ErpSimConfig(), tansu=tansu, partitions=partitions)
    await stack.start()
    assert stack.erp is not None
    for sku in _skus(records):  # every SKU stocked: each order line is reserved, as in production
        stack.erp.set_stock(sku, 10_000_000)
    try:
        group = [stack.new_worker(f"bench-{i + 1}").start() for i in range(workers)]
        await asyncio.gather(*(w.wait_ready() for w in group))
        await _settled(group)
        started = time.perf_counter()
        await _preload(url, stack.topic("orders-raw"), records, partitions)
        await _until_confirmed(group, len(records), "pipeline:", "orders confirmed by the ERP")
        elapsed = time.perf_counter() - started
        assert stack.erp is not None and stack.erp.stats()["orders_created"] == len(records)
        rate = len(records) / elapsed
        print(f"pipeline: {rate:,.0f} orders/s ({workers} worker{'s' if workers > 1 else ''})",
              flush=True)
        return rate
    finally:
        await stack.close()


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


async def _settled(group: list[Any], timeout_s: float = 60.0) -> None:
    """Until every worker of the group has partitions (no rebalance left to happen mid-run)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        answers = await asyncio.gather(*(w.get_json("/health") for w in group))
        if all(status == 200 and body["assigned_partitions"] > 0 for status, body in answers):
            return
        await asyncio.sleep(0.5)


async def _latency(url: str, rate: float, seconds: float, tansu: bool) -> dict[str, Any]:
    stack = Stack(app_id=f"bench-lat-{int(time.time())}", workdir=ROOT / "var" / "bench",
                  broker_url=url, erp_config=ErpSimConfig(), tansu=tansu)
    await stack.start()
    try:
        worker = await stack.start_worker("bench-lat")
        shop = ShopifySimulator(ShopifySimConfig(
            webhook_url=worker.webhook_url(),
            secret="shpss_demo_secret", rate_per_s=rate, max_attempts=8, concurrency=256,  # noqa: S106
        ))
        print(f"latency: {rate:g} webhooks/s for {seconds:g}s through HTTP…", flush=True)
        started = time.perf_counter()
        await shop.send_orders(duration_s=seconds)
        sent_for = time.perf_counter() - started
        expected = {f"shopify:{oid}" for oid in shop.accepted_order_ids()}
        erp = stack.erp
        assert erp is not None
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and any(erp.order_by_po_no(k) is None for k in expected):
            await asyncio.sleep(0.2)
        values = [erp.order_by_po_no(k).received_at - shop.first_sent_at[k.split(":", 1)[1]]
                  for k in expected if erp.order_by_po_no(k) is not None]
        return {
            "offered_rate_per_s": rate,
            "achieved_rate_per_s": round(len(expected) / sent_for, 1),
            "latency_orders": len(values),
            "latency_p50": ms(percentile(values, 50)),
            "latency_p99": ms(percentile(values, 99)),
            "latency_max": ms(max(values, default=float("nan"))),
            "lost": len(expected) - len(values),
        }
    finally:
        await stack.close()


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
            for sku in DEMO_SKUS:
                status, view = await worker.get_json(f"/inventory/{sku}")
                if status != 200:
                    return False
                for name, driver in drivers.items():
                    if name == "regional":
                        driver.sim.process_outbox()
                    if driver.sim.listings.quantity(sku) != view["ats"][name]:
                        return False
            return True

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
        name = "retail_sync_stock_propagation_seconds"
        out: dict[str, Any] = {"stock_erp_changes": changes, "stock_change_rate_per_s": rate}
        for channel in drivers:
            out[f"stock_{channel}_p50"] = ms(since.quantile(name, 0.5, channel=channel, cause="erp"))
            out[f"stock_{channel}_p99"] = ms(since.quantile(name, 0.99, channel=channel, cause="erp"))
            out[f"stock_{channel}_pushes"] = int(since.count(name, channel=channel, cause="erp"))
        out["stock_updates_coalesced"] = int(
            since.get("retail_sync_inventory_updates_coalesced_total"))
        out["stock_in_step_at_end"] = await in_step()
        return out
    finally:
        for driver in drivers.values():
            await driver.close()
        await stack.close()


async def _failover(url: str, tansu: bool, partitions: int, orders: int,
                    standby: int) -> dict[str, Any]:
    """Kill one of two loaded workers: how long until the survivor owns and serves everything."""
    records = _raw_records(orders)
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
        await _settled(group)
        await _preload(url, stack.topic("orders-raw"), records, partitions)
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
