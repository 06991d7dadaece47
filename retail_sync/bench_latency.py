"""The bench's latency run (``retail-sync bench --only latency``): signed webhooks at a fixed
offered rate through HTTP into one worker (``--latency-ingress``: into an ingress process, the
worker running only the order path), every SKU stocked; p50/p99/max from the Shopify
simulator's first send to the ERP simulator's receipt, and the record operations per order at
that rate from the broker's offsets once every queue is drained (docs/BENCHMARKS.md)."""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

import psutil

from retail_sync.bench_offsets import OffsetReader, RunFigures, run_figures
from retail_sync.bench_pipeline import busy_seconds, cpu_seconds, stock_known
from retail_sync.report import ms, percentile
from retail_sync.simulators.erpnext.simulator import ErpSimConfig
from retail_sync.simulators.shopify.orders import DEFAULT_SKUS
from retail_sync.simulators.shopify.simulator import ShopifySimConfig, ShopifySimulator
from retail_sync.stack import ROOT, Stack, WorkerProcess


async def latency(url: str, rate: float, seconds: float, tansu: bool,
                  front_door: bool = False, broker_pid: int | None = None) -> dict[str, Any]:
    """Webhooks at ``rate`` through HTTP for ``seconds``: p50/p99 webhook -> ERP; every SKU
    stocked (each line reserved, committed and handed over, as in production) and the record
    operations per order at that rate, from the broker's offsets once every queue is drained.
    The CPU per order of every process of the run (worker, ingress, broker, the bench's own:
    the Shopify and ERP simulators) and how busy the whole machine was: on a machine the load
    saturates, the latency is the machine's, not the pipeline's."""
    stack = Stack(app_id=f"bench-lat-{int(time.time())}", workdir=ROOT / "var" / "bench",
                  broker_url=url, erp_config=ErpSimConfig(), tansu=tansu)
    await stack.start()
    reader: OffsetReader | None = None
    try:
        erp = stack.erp
        assert erp is not None
        skus = set(DEFAULT_SKUS)
        for sku in skus:
            erp.set_stock(sku, 10_000_000)
        worker = await stack.start_worker("bench-lat")
        await stock_known([worker], skus)
        ingress = await stack.start_ingress("bench-ingress") if front_door else None
        shop = ShopifySimulator(ShopifySimConfig(
            webhook_url=(ingress or worker).webhook_url(), skus=sorted(skus),
            secret="shpss_demo_secret", rate_per_s=rate, max_attempts=8, concurrency=256,  # noqa: S106
        ))
        reader = await OffsetReader(stack.bootstrap, stack.app_id, tansu).start()
        await reader.discover()
        ends_before, committed_before = await reader.ends(), await reader.committed()
        print(f"latency: {rate:g} webhooks/s for {seconds:g}s through HTTP"
              f"{' and an ingress process' if ingress else ''}…", flush=True)
        pids = _pids(worker, ingress, broker_pid)
        cpu_before = {name: cpu_seconds(pid) for name, pid in pids.items()}
        machine_before = psutil.cpu_times()
        started = time.perf_counter()
        await shop.send_orders(duration_s=seconds)
        sent_for = time.perf_counter() - started
        expected = {f"shopify:{oid}" for oid in shop.accepted_order_ids()}
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and any(erp.order_by_po_no(k) is None for k in expected):
            await asyncio.sleep(0.2)
        used = {name: cpu_seconds(pid) - cpu_before[name] for name, pid in pids.items()}
        machine = busy_seconds(machine_before, psutil.cpu_times())
        busy_for = time.perf_counter() - started
        cores = psutil.cpu_count() or 0
        print(cpu_line(len(expected), busy_for, machine, cores, used), flush=True)
        values = [stored.received_at - shop.first_sent_at[k.split(":", 1)[1]]
                  for k in expected if (stored := erp.order_by_po_no(k)) is not None]
        figures = await _drained_figures(reader, stack.app_id, len(expected), ends_before,
                                         committed_before)
        return {
            "offered_rate_per_s": rate,
            "achieved_rate_per_s": round(len(expected) / sent_for, 1),
            "latency_orders": len(values),
            "latency_p50": ms(percentile(values, 50)),
            "latency_p99": ms(percentile(values, 99)),
            "latency_max": ms(max(values, default=float("nan"))),
            "lost": len(expected) - len(values),
            # each process's CPU from the first webhook until the ERP held every order (without
            # an ingress process the worker serves the webhooks too, unlike the pipeline run)
            **{f"latency_{name}_cpu_ms_per_order": round(1000 * cpu / max(1, len(values)), 3)
               for name, cpu in used.items()},
            "latency_worker_busy": round(used["worker"] / busy_for, 3),
            "latency_via_ingress_process": front_door,
            # everything the machine ran meanwhile (Redis and the rest too), per order, and
            # the cores it kept busy
            "latency_machine_cpu_ms_per_order": round(1000 * machine / max(1, len(values)), 3),
            "latency_machine_busy_cores": round(machine / busy_for, 2),
            "latency_machine_cores": cores,
            "latency_record_ops_per_order": round(figures.ops_per_order, 2),
            "latency_topics": {name: {k: round(v, 3) for k, v in t.per_order(len(expected)).items()}
                               for name, t in figures.topics.items() if t.produced or t.consumed},
        }
    finally:
        if reader is not None:
            await reader.close()
        await stack.close()


def _pids(worker: WorkerProcess, ingress: WorkerProcess | None,
          broker_pid: int | None) -> dict[str, int]:
    """The run's processes by name: the worker, the ingress process (with --latency-ingress),
    the embedded broker (when the bench started it) and the bench's own (the Shopify simulator
    sending the webhooks, the ERP simulator, the harness)."""
    pids = {"worker": worker.proc.pid if worker.proc is not None else None,
            "ingress": ingress.proc.pid if ingress is not None and ingress.proc else None,
            "broker": broker_pid, "bench": os.getpid()}
    return {name: pid for name, pid in pids.items() if pid is not None}


def cpu_line(orders: int, seconds: float, machine: float, cores: int,
             used: dict[str, float]) -> str:
    """How busy the machine was during the run and each process's CPU per order (a process
    that did not run, NaN, is left out)."""
    per_order = ", ".join(f"{name} {1000 * cpu / max(1, orders):.2f}"
                          for name, cpu in used.items() if cpu == cpu)
    return (f"latency: the machine was {machine / seconds:.2f} of {cores} cores busy; CPU ms "
            f"per order: {per_order}; everything on the machine "
            f"{1000 * machine / max(1, orders):.2f}")


async def _drained_figures(reader: OffsetReader, app_id: str, orders: int,
                           ends_before: dict[Any, int], committed_before: dict[Any, int],
                           timeout_s: float = 60.0) -> RunFigures:
    """Record operations per topic once the worker has consumed and committed everything (lag 0
    on every partition it consumes, twice in a row), from the broker's offsets."""
    deadline = time.monotonic() + timeout_s
    quiet = 0
    while True:
        await reader.discover()
        committed = await reader.committed()
        consumed = [tp for tp, offset in committed.items() if offset >= 0]
        lag = sum((await reader.lag(consumed, exact=True)).values()) if consumed else 0
        quiet = quiet + 1 if lag == 0 else 0
        if quiet >= 2 or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.5)
    figures = run_figures(orders, app_id, ends_before, await reader.ends(), committed_before,
                          await reader.committed())
    print("latency: record operations per order "
          f"{figures.ops_per_order:.2f} (" + ", ".join(
              f"{name} {t.produced / orders:.2f}+{t.consumed / orders:.2f}"
              for name, t in sorted(figures.topics.items(),
                                    key=lambda kv: -(kv[1].produced + kv[1].consumed))
              if t.produced or t.consumed) + ")", flush=True)
    return figures
