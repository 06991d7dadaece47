"""`retail-sync bench --only soak`: does the worker's memory plateau under a steady load?

The demo's four marketplaces (Shopify webhooks, Amazon and Walmart polled, regional CSV files) at
``rate`` orders per second through one worker, every SKU stocked so no buyer is refused, the
warehouse simulator shipping what the worker releases (orders close). The worker's resident memory
is read with psutil from its pid after ``orders`` (N) orders in the ERP, when caches and buffers
are warm, and again after 2N, 3N and 4N: the slope between N and 4N, in KiB per 1,000 orders, is
what grows with traffic. A flat line (a slope near zero; RSS moves by allocator noise) is the goal
(ARCHITECTURE §5f.5). Also reports the RocksDB size on disk, the peak RSS and the rate achieved.

A worker that does not keep up builds a backlog, and a backlog holds memory (records fetched and
not yet processed, orders half way): at each mark the run reports the orders the marketplaces
offered, those in the ERP, and the worker's consumer lag (``retail_sync_consumer_lag`` summed,
from its /metrics), and the summary says whether a backlog built up between N and 4N. Only a run
without one measures what the worker keeps.

With ``RETAIL_SYNC_TEST_MEMDEBUG=<dir>`` set (retail_sync/memdebug.py) the worker's
``/debug/memory`` breakdown (C heap, RocksDB, Python objects, our structures) is printed at each
mark; with ``RETAIL_SYNC_TEST_TRACEMALLOC=<frames>`` too, tracemalloc snapshots are taken at the
marks and the allocation sites that grew most between N and 4N are printed.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import aiohttp

from retail_sync import memdebug
from retail_sync.broker import free_port
from retail_sync.demo_channels import DEMO_SKUS, make_driver, parse_mix
from retail_sync.report import Progress, bar
from retail_sync.simulators.erpnext.simulator import ErpSimConfig
from retail_sync.simulators.wms.simulator import WmsSimConfig, WmsSimulator
from retail_sync.stack import ROOT, Stack, WorkerFailed

MIX = "shopify=2,amazon=1,walmart=1,regional=1"  # the demo's default
SAMPLE_EVERY_S = 1.0
SAMPLES_PER_MARK = 5  # RSS at a mark: the median of the samples around it (allocator noise)
MARKS = (1, 2, 3, 4)  # RSS marks at these multiples of N
#: a backlog "built up" when the consumer lag or the orders offered and not yet in the ERP grew
#: by more than this many between the N and 4N marks (steady state: a few seconds of traffic)
BACKLOG_GROWTH = 200


def kib_per_1000(rss_from: int, rss_to: int, orders_from: int, orders_to: int) -> float:
    """The RSS slope between two marks, in KiB per 1,000 orders."""
    if orders_to <= orders_from:
        raise ValueError("the second mark must come after the first")
    return (rss_to - rss_from) / 1024 / ((orders_to - orders_from) / 1000)


def offered(drivers: dict[str, Any]) -> int:
    """Orders the marketplaces have created so far (Shopify: webhooks sent at least once)."""
    total = 0
    for name, driver in drivers.items():
        total += len(driver.shop.first_sent_at) if name == "shopify" else len(driver.created_at)
    return total


def consumer_lag(metrics_text: str) -> int:
    """``retail_sync_consumer_lag`` summed over every partition of a /metrics page."""
    total = 0.0
    for line in metrics_text.splitlines():
        if line.startswith("retail_sync_consumer_lag{"):
            total += float(line.rsplit(" ", 1)[1])
    return int(total)


def backlog_grew(first: dict[str, int], last: dict[str, int]) -> bool:
    """Did work pile up between two marks (lag or offered-not-done grew past BACKLOG_GROWTH)?"""
    behind = (last["offered"] - last["done"]) - (first["offered"] - first["done"])
    return last["lag"] - first["lag"] > BACKLOG_GROWTH or behind > BACKLOG_GROWTH


def dir_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


async def soak(url: str, tansu: bool, rate: float, orders: int) -> dict[str, Any]:
    import psutil  # a dependency of the project; imported here as only this run needs it

    if orders < 1 or rate <= 0:
        raise ValueError("--soak-orders must be >= 1 and --soak-rate > 0")
    stack = Stack(app_id=f"bench-soak-{int(time.time())}", workdir=ROOT / "var" / "bench",
                  broker_url=url, erp_config=ErpSimConfig(), tansu=tansu)
    await stack.start()
    erp = stack.erp
    assert erp is not None
    for sku in DEMO_SKUS:  # nobody is refused and nothing is cancelled for lack of stock
        erp.set_stock(sku, 10_000_000)
    port = free_port()
    args = SimpleNamespace(duplicate_rate=0.05, malformed_rate=0.0, unmappable_rate=0.0)
    workdir = Path(tempfile.mkdtemp(prefix="bench-soak-"))
    mix = parse_mix(MIX)
    drivers = {c: make_driver(c, "shpss_demo_secret", args, workdir, f"http://127.0.0.1:{port}")
               for c in mix}
    wms = WmsSimulator(WmsSimConfig(ship_delay_ms=600, ship_jitter_ms=400, partial_rate=0.15))
    stop = asyncio.Event()
    sending: asyncio.Future[Any] | None = None
    try:
        for driver in drivers.values():
            stack.env.update(await driver.prepare())
        stack.env.update({"RETAIL_SYNC_WMS_BASE_URL": await wms.start(),
                          "RETAIL_SYNC_WMS_POLL_INTERVAL_S": "0.5",
                          "RETAIL_SYNC_ERP_ORDER_POLL_INTERVAL_S": "1",
                          "RETAIL_SYNC_REDIS_URL": "none",
                          "RETAIL_SYNC_POLL_INTERVAL_S": "1",
                          "RETAIL_SYNC_ERP_STOCK_POLL_INTERVAL_S": "0.5"})
        worker = stack.new_worker("soak", ingress_port=port).start()  # port: the webhooks
        await worker.wait_ready()
        assert worker.proc is not None
        proc = psutil.Process(worker.proc.pid)
        await _stocked(drivers)
        started_rss = proc.memory_info().rss
        print(f"soak: the demo's marketplaces at {rate:g} orders/s through one worker until "
              f"{4 * orders} orders are in the ERP (RSS marks at "
              f"{', '.join(str(m * orders) for m in MARKS)})…", flush=True)
        sending = asyncio.gather(*(d.run(worker.url, rate * mix[name], None, stop)
                                   for name, d in drivers.items()))
        marks = await _watch(proc, erp, worker, orders, sending, drivers)
        stop.set()
        await sending
        sending = None
        db = dir_size(stack.workdir / stack.app_id / "soak")
        first, last = marks[orders], marks[4 * orders]
        n1, rss1, t1 = first["done"], first["rss"], first["t"]
        n4, rss4, t4 = last["done"], last["rss"], last["t"]
        result: dict[str, Any] = {
            "soak_rate_offered_per_s": rate,
            "soak_rate_achieved_per_s": round((n4 - n1) / (t4 - t1), 1),
            "soak_rss_at_start_mib": round(started_rss / 2**20, 1),
        }
        for m in MARKS:
            mark = marks[m * orders]
            result[f"soak_rss_after_{mark['done']}_orders_mib"] = round(mark["rss"] / 2**20, 1)
            result[f"soak_at_{m}n_offered_done_lag"] = (
                f"{mark['offered']} / {mark['done']} / {mark['lag']}")
        result.update({
            "soak_rss_slope_kib_per_1000_orders": round(kib_per_1000(rss1, rss4, n1, n4), 1),
            "soak_rss_peak_mib": round(marks["peak"] / 2**20, 1),
            "soak_max_consumer_lag": marks["max_lag"],
            "soak_backlog_built_up": "yes" if backlog_grew(first, last) else "no",
            "soak_rocksdb_on_disk_mib": round(db / 2**20, 1),
        })
        if os.environ.get(memdebug.ENV_TRACEMALLOC) and os.environ.get(memdebug.ENV_DIR):
            snaps = [Path(os.environ[memdebug.ENV_DIR]) / f"soak-{m}n.tracemalloc"
                     for m in (MARKS[0], MARKS[-1])]
            if all(p.exists() for p in snaps):
                print("soak: tracemalloc, the sites that grew most from N to 4N:")
                print("\n".join("  " + line for line in memdebug.diff(str(snaps[0]), str(snaps[1]))))
        return result
    finally:
        stop.set()
        try:
            if sending is not None:  # bounded: a sender retrying a delivery must not keep the
                await asyncio.wait({sending}, timeout=15)  # worker running (SIGTERM, Ctrl-C)
                sending.cancel()
            for driver in drivers.values():
                await driver.close()
            await wms.stop()
        finally:
            await stack.close()


async def _stocked(drivers: dict[str, Any], timeout_s: float = 60.0) -> None:
    """Until every marketplace lists the opening stock (a buyer of an empty listing is refused)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for name, driver in drivers.items():
            if name == "regional":
                driver.sim.process_outbox()
        if all((driver.sim.listings.quantity(sku) or 0) > 0 for driver in drivers.values()
               for sku in DEMO_SKUS):
            return
        await asyncio.sleep(0.5)


async def _watch(proc: Any, erp: Any, worker: Any, orders: int,
                 sending: asyncio.Future[Any], drivers: dict[str, Any]) -> dict[Any, Any]:
    """Sample the worker's RSS and consumer lag every second until 4N orders are in the ERP; each
    mark is the order count, the median RSS of the samples around the crossing, the time, the
    orders offered and the lag then."""
    marks: dict[Any, Any] = {}  # mark -> its figures, and "peak", "max_lag"
    progress, peak, max_lag = Progress(), 0, 0
    recent: list[int] = []
    started = time.monotonic()
    pending = [m * orders for m in MARKS]
    debug = bool(os.environ.get(memdebug.ENV_DIR))
    async with aiohttp.ClientSession(headers=worker.headers) as session:  # /metrics needs a token
        while pending:
            if not worker.alive():
                raise WorkerFailed(
                    f"worker {worker.name} exited during the soak:\n{worker.log_tail()}")
            if sending.done():
                sending.result()  # a driver failed: raise its error
                raise RuntimeError("the marketplaces stopped sending before the soak ended")
            done = erp.stats()["orders_created"]
            rss = proc.memory_info().rss
            lag = await _lag(session, worker.url)
            peak, max_lag = max(peak, rss), max(max_lag, lag)
            recent = [*recent, rss][-SAMPLES_PER_MARK:]
            if done >= pending[0]:
                mark = pending.pop(0)
                marks[mark] = {"done": done, "rss": int(statistics.median(recent)),
                               "t": time.monotonic(), "offered": offered(drivers), "lag": lag}
                progress.done()
                print(f"soak: mark {mark // orders}N: {done} in the ERP, "
                      f"{marks[mark]['offered']} offered, consumer lag {lag}, "
                      f"RSS {marks[mark]['rss'] / 2**20:.1f} MiB", flush=True)
                if debug:
                    await _debug_report(session, worker.url, f"soak-{mark // orders}n")
                    if not pending:  # how much of it is free memory glibc kept?
                        await _debug_report(session, worker.url, "soak-4n-trimmed", trim=True)
            progress.update(
                f"soak: {bar(done / (4 * orders))} {done}/{4 * orders} orders in the ERP"
                f"  lag {lag}  worker RSS {rss / 2**20:.0f} MiB"
                f"  {time.monotonic() - started:.0f}s")
            await asyncio.sleep(SAMPLE_EVERY_S)
    progress.done()
    marks["peak"], marks["max_lag"] = peak, max_lag
    return marks


async def _lag(session: aiohttp.ClientSession, url: str) -> int:
    try:
        async with session.get(f"{url}/metrics") as resp:
            return consumer_lag(await resp.text())
    except (aiohttp.ClientError, OSError, TimeoutError, ValueError, IndexError):
        return -1


async def _debug_report(session: aiohttp.ClientSession, url: str, label: str,
                        trim: bool = False) -> None:
    """The worker's /debug/memory breakdown (retail_sync/memdebug.py), printed compactly."""
    params = {"snapshot": label, **({"trim": "1"} if trim else {})}
    async with session.get(f"{url}/debug/memory", params=params) as resp:
        report = await resp.json(content_type=None)

    def mib(n: float | None) -> str:
        return f"{(n or 0) / 2**20:.1f}"
    m, r, p, s = report["malloc"], report["rocksdb"], report["python"], report["structures"]
    q, y = report.get("process", {}), report.get("pymalloc", {})
    print(f"  memdebug {label}: rss {mib(report['rss'])} MiB (anon {mib(q.get('RssAnon'))} file "
          f"{mib(q.get('RssFile'))}, {q.get('Threads')} threads); pymalloc arenas "
          f"{mib(y.get('arena_bytes'))} used {mib(y.get('used_bytes'))}; malloc heap "
          f"{mib(m.get('heap_bytes'))}"
          f" in use {mib(m.get('in_use_bytes'))} free kept {mib(m.get('free_kept_bytes'))}"
          f" mmapped {mib(m.get('mmapped_bytes'))}; rocksdb memtables "
          f"{mib(r['rocksdb.cur-size-all-mem-tables'])} table readers "
          f"{mib(r['rocksdb.estimate-table-readers-mem'])} block cache "
          f"{mib(r.get('block_cache_usage'))} (pinned {mib(r.get('block_cache_pinned'))}); "
          f"python gc objects {p['gc_objects']} blocks {p.get('allocated_blocks')}"
          + (f", tracemalloc {mib(p['tracemalloc_current_bytes'])} MiB"
             if "tracemalloc_current_bytes" in p else "")
          + f"; {s}", flush=True)
    print(f"  memdebug {label}: top types {list(p['by_type'].items())[:12]}", flush=True)
