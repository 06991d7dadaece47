"""`retail-sync bench --only soak`: does the worker's memory plateau under a steady load?

The demo's four marketplaces (Shopify webhooks, Amazon and Walmart polled, regional CSV files) at
``rate`` orders per second through one worker, every SKU stocked so no buyer is refused, the
warehouse simulator shipping what the worker releases (orders close). The worker's resident memory
is read with psutil from its pid after ``orders`` (N) orders in the ERP, when caches and buffers
are warm, and again after 4N: the slope between the two, in KiB per 1,000 orders, is what grows
with traffic. A flat line (a slope near zero; RSS moves by allocator noise) is the goal
(ARCHITECTURE §5f.5). Also reports the RocksDB size on disk, the peak RSS and the rate achieved.
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from retail_sync.broker import free_port
from retail_sync.demo_channels import DEMO_SKUS, make_driver, parse_mix
from retail_sync.report import Progress, bar
from retail_sync.stack import ROOT, Stack, WorkerFailed
from simulators.erp import ErpSimConfig
from simulators.wms import WmsSimConfig, WmsSimulator

MIX = "shopify=2,amazon=1,walmart=1,regional=1"  # the demo's default
SAMPLE_EVERY_S = 1.0
SAMPLES_PER_MARK = 5  # RSS at a mark: the median of the samples around it (allocator noise)


def kib_per_1000(rss_from: int, rss_to: int, orders_from: int, orders_to: int) -> float:
    """The RSS slope between two marks, in KiB per 1,000 orders."""
    if orders_to <= orders_from:
        raise ValueError("the second mark must come after the first")
    return (rss_to - rss_from) / 1024 / ((orders_to - orders_from) / 1000)


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
        worker = stack.new_worker("soak", port=port).start()
        await worker.wait_ready()
        assert worker.proc is not None
        proc = psutil.Process(worker.proc.pid)
        await _stocked(drivers)
        started_rss = proc.memory_info().rss
        print(f"soak: the demo's marketplaces at {rate:g} orders/s through one worker until "
              f"{4 * orders} orders are in the ERP (RSS marks at {orders} and {4 * orders})…",
              flush=True)
        sending = asyncio.gather(*(d.run(worker.url, rate * mix[name], None, stop)
                                   for name, d in drivers.items()))
        marks = await _watch(proc, erp, worker, orders, sending)
        stop.set()
        await sending
        sending = None
        db = dir_size(stack.workdir / stack.app_id / "soak")
        (n1, rss1, t1), (n4, rss4, t4) = marks[orders], marks[4 * orders]
        return {
            "soak_rate_offered_per_s": rate,
            "soak_rate_achieved_per_s": round((n4 - n1) / (t4 - t1), 1),
            "soak_rss_at_start_mib": round(started_rss / 2**20, 1),
            f"soak_rss_after_{n1}_orders_mib": round(rss1 / 2**20, 1),
            f"soak_rss_after_{n4}_orders_mib": round(rss4 / 2**20, 1),
            "soak_rss_slope_kib_per_1000_orders": round(kib_per_1000(rss1, rss4, n1, n4), 1),
            "soak_rss_peak_mib": round(marks["peak"] / 2**20, 1),
            "soak_rocksdb_on_disk_mib": round(db / 2**20, 1),
        }
    finally:
        stop.set()
        if sending is not None:
            await asyncio.gather(sending, return_exceptions=True)
        for driver in drivers.values():
            await driver.close()
        await wms.stop()
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
                 sending: asyncio.Future[Any]) -> dict[Any, Any]:
    """Sample the worker's RSS every second until 4N orders are in the ERP; each mark is the
    order count, the median RSS of the samples around the crossing and the time."""
    progress, marks, peak = Progress(), {}, 0
    recent: list[int] = []
    started = time.monotonic()
    pending = [orders, 4 * orders]
    while pending:
        if not worker.alive():
            raise WorkerFailed(f"worker {worker.name} exited during the soak:\n{worker.log_tail()}")
        if sending.done():
            sending.result()  # a driver failed: raise its error
            raise RuntimeError("the marketplaces stopped sending before the soak ended")
        done = erp.stats()["orders_created"]
        rss = proc.memory_info().rss
        peak = max(peak, rss)
        recent = [*recent, rss][-SAMPLES_PER_MARK:]
        if done >= pending[0]:
            marks[pending.pop(0)] = (done, int(statistics.median(recent)), time.monotonic())
        progress.update(f"soak: {bar(done / (4 * orders))} {done}/{4 * orders} orders in the ERP"
                        f"  worker RSS {rss / 2**20:.0f} MiB  {time.monotonic() - started:.0f}s")
        await asyncio.sleep(SAMPLE_EVERY_S)
    progress.done()
    marks["peak"] = peak
    return marks
