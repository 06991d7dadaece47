"""The bench's pipeline run: N raw orders through ``workers`` real workers, timed until the work
is really done, with what it cost in records, bytes and CPU.

1. A fresh stack (app id, topics, consumer group) on the bench's broker; every SKU stocked; the
   workers ready, holding partitions and the ERP's position of every SKU (``stock_known``:
   every line of the run is reserved, not accepted untracked). Snapshot: end offsets of every
   topic of the app, the group's committed offsets, CPU times of every process.
2. A load generator process (retail_sync/bench_load.py) produces the N records into orders-raw as
   fast as the broker takes them; the clock starts when it is connected.
3. Three moments are recorded while polling (progress bar):
   - ``confirmed``: the workers' ERP confirmations add up to N (what the bench timed before;
     stock commits, index updates and warehouse releases may still be queued then),
   - ``erp``: the ERP simulator holds all N orders,
   - ``drained``: the ERP holds all N orders AND the group's committed offset equals the end
     offset on every partition the workers consume (read from the broker; the timers' poll-ticks
     left out, ``BACKGROUND_TOPICS``). Sustained throughput is N / drained. The workers commit
     every ``RETAIL_SYNC_BROKER_COMMIT_INTERVAL_S`` (1 s by default; Faust's own default was
     2.8 s), so ``drained`` can be late by up to one interval; ``last record`` (the newest record timestamp
     any topic of the app got during the run, changelogs included) bounds the real end from below.
4. CPU seconds per order per process from the snapshots at the start and at ``drained``; records
   and bytes per order per topic from the end offsets after the run (once they stop moving) and a
   read of the produced range.
"""

from __future__ import annotations

import asyncio
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil

from retail_sync.bench_load import write_records
from retail_sync.bench_offsets import (
    TP,
    OffsetReader,
    is_changelog,
    read_range,
    run_figures,
    short_name,
)
from retail_sync.bench_summary import EVERYTHING
from retail_sync.report import Progress, Samples, bar
from retail_sync.simulators.erpnext.simulator import ErpSimConfig
from retail_sync.stack import ROOT, Stack

POLL_S = 0.25
#: topics written on a timer, not per order: left out of the "newest record" moment and of the
#: lag that says the run is drained (a tick every second keeps its partition's lag above 0 until
#: the next commit, whatever the run's work)
BACKGROUND_TOPICS = frozenset({"poll-ticks", "poll-cursors-changelog"})
METRICS_EVERY = 4  # scrape the workers' /metrics every 4th poll (it costs the worker CPU)


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process and its waited-for children (NaN if gone)."""
    try:
        t = psutil.Process(pid).cpu_times()
    except psutil.Error:
        return float("nan")
    return t.user + t.system + t.children_user + t.children_system


def busy_seconds(before: Any, after: Any) -> float:
    """CPU seconds the machine's cores spent running something between two
    ``psutil.cpu_times()``, summed over the cores: user (Linux counts a guest's time in it),
    nice, system and interrupts; not idle, I/O wait, or time the hypervisor stole."""
    def busy(t: Any) -> float:
        return sum(getattr(t, field, 0.0) for field in ("user", "nice", "system", "irq", "softirq"))
    return max(0.0, busy(after) - busy(before))


async def pipeline(url: str, records: list[tuple[bytes, bytes]], tansu: bool, partitions: int,
                   workers: int, broker_pid: int | None, skus: set[str],
                   label: str = "pipeline") -> dict[str, Any]:
    stack = Stack(app_id=f"bench-pipe-{int(time.time())}", workdir=ROOT / "var" / "bench",
                  broker_url=url, erp_config=ErpSimConfig(), tansu=tansu, partitions=partitions)
    await stack.start()
    erp = stack.erp
    assert erp is not None
    for sku in skus:  # every SKU stocked: each order line is reserved, as in production
        erp.set_stock(sku, 10_000_000)
    reader = None
    try:
        group = [stack.new_worker(f"bench-{i + 1}").start() for i in range(workers)]
        await asyncio.gather(*(w.wait_ready() for w in group))
        await settled(group)
        await stock_known(group, skus)
        reader = await OffsetReader(stack.bootstrap, stack.app_id, tansu).start()
        await reader.discover()
        consumed = await _consumed_partitions(group, reader)
        ends_before = await reader.ends()
        committed_before = await reader.committed()
        return await _run(stack, group, reader, consumed, records, broker_pid, label,
                          ends_before, committed_before)
    finally:
        if reader is not None:
            await reader.close()
        await stack.close()


async def _run(stack: Stack, group: list[Any], reader: OffsetReader, consumed: set[TP],
               records: list[tuple[bytes, bytes]], broker_pid: int | None, label: str,
               ends_before: dict[TP, int], committed_before: dict[TP, int]) -> dict[str, Any]:
    n = len(records)
    erp = stack.erp
    assert erp is not None
    raw_topic = stack.topic("orders-raw")
    raw_tps = [tp for tp in reader.partitions if tp[0] == raw_topic]
    pids = {f"worker {w.name}": w.proc.pid for w in group if w.proc is not None}
    if broker_pid is not None:
        pids["broker (Tansu)"] = broker_pid
    pids["bench: ERP simulator + harness"] = os.getpid()
    with tempfile.NamedTemporaryFile(prefix="bench-orders-", suffix=".bin", delete=False) as f:
        path = Path(f.name)
    write_records(path, records)
    pythonpath = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    load = subprocess.Popen(  # noqa: S603, ASYNC220 - our own module; its pipe read in a thread
        [sys.executable, "-m", "retail_sync.bench_load", stack.bootstrap, raw_topic, str(path)],
        stdout=subprocess.PIPE, cwd=str(ROOT), env={**os.environ, "PYTHONPATH": pythonpath})
    try:
        assert load.stdout is not None
        line = await asyncio.to_thread(load.stdout.readline)
        if line.strip() != b"ready":
            raise RuntimeError(f"the load generator did not start: {line!r}")
        cpu_before = {name: cpu_seconds(pid) for name, pid in pids.items()}
        machine_before = psutil.cpu_times()
        wall0, t0 = time.time(), time.perf_counter()
        done_line = asyncio.ensure_future(asyncio.to_thread(load.stdout.readline))
        moments, cpu_after = await _watch(stack, group, reader, consumed, raw_tps, ends_before,
                                          n, t0, done_line, pids, label)
        machine = busy_seconds(machine_before, psutil.cpu_times())  # just after drained
        # offsets at the drained moment: every record the run's work produced is in (Faust commits
        # an offset only after the changelog records of its events are sent); records written
        # after it are background (timers) and left out
        await reader.discover()  # topics the run created (a partition new since counts from 0)
        ends_after = await reader.ends()
        committed_after = await reader.committed()
        load_cpu = float((await done_line).split()[2])
    finally:
        if load.poll() is None:  # still sending: the run was interrupted
            load.terminate()
            load.wait(10)
        path.unlink(missing_ok=True)  # noqa: ASYNC240 - a local temp file
    sizes, _, stamps = await read_range(stack.bootstrap, ends_before, ends_after)
    newest: dict[str, float] = {}  # topic -> its newest record of the run, s after the start
    for (topic, _), stamp in stamps.items():
        name = short_name(topic, stack.app_id)
        newest[name] = max(newest.get(name, -math.inf), stamp - wall0)
    last = max((s for name, s in newest.items() if name not in BACKGROUND_TOPICS),
               default=math.nan)
    figures = run_figures(n, stack.app_id, ends_before, ends_after, committed_before,
                          committed_after, sizes)
    in_erp = erp.stats()["orders_created"]
    cpu = {name: cpu_after[name] - cpu_before[name] for name in pids}
    cpu["load generator"] = load_cpu
    cpu[EVERYTHING] = machine  # Redis and the kernel's network work too
    drained = moments["drained"]
    return {
        "orders": n, "workers": len(group), "in_erp": in_erp,
        "consumed_partitions": len(consumed),
        "consumed_topics": sorted({short_name(t, stack.app_id) for t, _ in consumed}),
        "seconds_confirmed": moments["confirmed"], "seconds_erp": moments["erp"],
        "seconds_drained": drained, "seconds_last_record": last,
        "seconds_newest_by_topic": newest,
        "orders_per_s": n / drained,
        "orders_per_s_confirmed": n / moments["confirmed"],
        "orders_per_s_last_record": n / last if last == last else None,
        "records_produced": figures.produced, "records_consumed": figures.consumed,
        "bytes_produced": figures.produced_bytes,
        "record_ops_per_order": figures.ops_per_order,
        "record_ops_per_s": (figures.produced + figures.consumed) / drained,
        "topics": {name: t.per_order(n) | {"produced_total": t.produced,
                                           "consumed_total": t.consumed}
                   for name, t in figures.topics.items() if t.produced or t.consumed},
        "cpu_s_per_order": {name: value / n for name, value in cpu.items()},
        "cpu_s_total": cpu,
    }


async def _watch(stack: Stack, group: list[Any], reader: OffsetReader, consumed: set[TP],
                 raw_tps: list[TP], ends_before: dict[TP, int], n: int, t0: float,
                 done_line: Any, pids: dict[str, int],
                 label: str) -> tuple[dict[str, float], dict[str, float]]:
    """Poll until drained: the three moments (seconds from t0) and the CPU times at ``drained``."""
    erp = stack.erp
    assert erp is not None
    moments: dict[str, float] = {}
    progress = Progress()
    confirmed, polls = 0.0, 0
    deadline = time.monotonic() + max(300.0, n / 5)
    while True:
        now = time.perf_counter() - t0
        loading = not done_line.done()
        in_erp = erp.stats()["orders_created"]
        if polls % METRICS_EVERY == 0 or (in_erp >= n and "confirmed" not in moments):
            texts = await asyncio.gather(*(w.metrics_text() for w in group))
            confirmed = sum(Samples(t).get("retail_sync_order_to_erp_seconds_count") for t in texts)
        polls += 1
        if confirmed >= n:
            moments.setdefault("confirmed", now)
        if in_erp >= n:
            moments.setdefault("erp", now)
        confirm = not loading and in_erp >= n
        if confirm:  # near the end: any partition the group has committed on counts too
            committed = await reader.committed([tp for tp in reader.partitions
                                                if not is_changelog(tp[0])])
            consumed |= {tp for tp, offset in committed.items() if offset >= 0}
        work = [tp for tp in consumed if short_name(tp[0], stack.app_id) not in BACKGROUND_TOPICS]
        lags = await reader.lag(work, exact=False)  # on Tansu it can read low, never high
        if confirm and sum(lags.values()) == 0:
            lags = await reader.lag(work, exact=True)
        behind = sum(lags.values())
        if not loading and in_erp >= n and behind == 0:
            cpu = {name: cpu_seconds(pid) for name, pid in pids.items()}
            moments["drained"] = time.perf_counter() - t0
            moments.setdefault("confirmed", moments["drained"])  # metrics not scraped this poll
            progress.update(f"{label}: drained: {n} orders in the ERP, lag 0 on "
                            f"{len(consumed)} partitions, {moments['drained']:.1f} s")
            progress.done()
            return moments, cpu
        if loading:
            ends = await reader.ends(true=False, partitions=raw_tps)
            sent = sum(ends.values()) - sum(ends_before.get(tp, 0) for tp in raw_tps)
            progress.update(f"{label}: loading  {bar(sent / n)} ~{sent}/{n} orders-raw, "
                            f"{in_erp} in the ERP, lag {behind}")
        else:
            progress.update(f"{label}: draining {bar(in_erp / n)} {in_erp}/{n} in the ERP, "
                            f"{int(confirmed)} confirmed, lag {behind} records, {now:.1f} s")
        if time.monotonic() > deadline:
            progress.done()
            worst = sorted(((v, tp) for tp, v in lags.items() if v), reverse=True)[:5]
            raise RuntimeError(f"{label}: not drained in time: {in_erp}/{n} in the ERP, lag "
                               f"{behind} (largest: {worst})")
        await asyncio.sleep(POLL_S)


async def _consumed_partitions(group: list[Any], reader: OffsetReader,
                               timeout_s: float = 30.0) -> set[TP]:
    """The partitions the workers consume: those their ``retail_sync_consumer_lag`` gauge names
    (assigned partitions of our agents' topics), plus any the group has committed on. Waits
    until orders-raw is among them (the gauge needs a first fetch per partition)."""
    raw = reader.app_id + ".orders-raw"
    deadline = time.monotonic() + timeout_s
    while True:
        found: set[TP] = set()
        for text in await asyncio.gather(*(w.metrics_text() for w in group)):
            for name, labels, _ in Samples(text).samples:
                if name == "retail_sync_consumer_lag":
                    found.add((labels["topic"], int(labels["partition"])))
        committed = await reader.committed([tp for tp in reader.partitions
                                            if not is_changelog(tp[0])])
        found |= {tp for tp, offset in committed.items() if offset >= 0}
        found &= set(reader.partitions)
        if sum(1 for t, _ in found if t == raw) >= sum(1 for t, _ in reader.partitions
                                                      if t == raw) or time.monotonic() > deadline:
            return found
        await asyncio.sleep(0.5)


async def stock_known(group: list[Any], skus: set[str], timeout_s: float = 60.0) -> None:
    """Until the stock agent holds the ERP's position of every SKU (``GET /inventory/{sku}``
    says tracked; any worker answers for any SKU), so that every order line of the run is
    reserved, committed and handed over as in production: a line that arrives before its SKU's
    first position is accepted untracked, one line record and no commit (before this wait about
    a third of a run's lines were)."""
    deadline = time.monotonic() + timeout_s
    pending = set(skus)
    while pending:
        if time.monotonic() > deadline:
            raise RuntimeError(f"no stock position for {sorted(pending)} after {timeout_s:g}s")
        asked = sorted(pending)
        answers = await asyncio.gather(*(group[0].get_json(f"/inventory/{s}") for s in asked))
        pending = {s for s, (status, body) in zip(asked, answers, strict=True)
                   if status != 200 or not body.get("tracked")}
        if pending:
            await asyncio.sleep(0.25)


async def settled(group: list[Any], timeout_s: float = 60.0) -> None:
    """Until every worker of the group has partitions (no rebalance left to happen mid-run)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        answers = await asyncio.gather(*(w.get_json("/health") for w in group))
        if all(status == 200 and body["assigned_partitions"] > 0 for status, body in answers):
            return
        await asyncio.sleep(0.5)
