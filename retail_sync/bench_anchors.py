"""The bench's two anchors, run on the same broker in the same session as the pipeline:

- ``ceiling``: plain aiokafka consuming the same raw-order records (no Faust, no work), records/s,
  median of ``runs`` passes over a preloaded topic.
- ``faust``: a tuned Faust worker doing one RocksDB table update per event
  (retail_sync/bench_faust_anchor.py, its own process), events/s from its first event to the last
  with its changelog flushed, median of ``runs`` workers (each a new consumer group).

Each event of the Faust anchor is two record operations (the record consumed, one changelog
record produced), so ``2 * events/s`` is what plain Faust does in record operations per second
here: the pipeline's record operations per second divided by it says how close the pipeline's
cost per record is to Faust's own.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from retail_sync.bench_load import preload

ROOT = Path(__file__).resolve().parent.parent
#: record operations per event of the Faust anchor: one consumed, one changelog record produced
FAUST_ANCHOR_OPS_PER_EVENT = 2


async def ceiling(bootstrap: str, records: list[tuple[bytes, bytes]], partitions: int,
                  runs: int = 3) -> float:
    topic = f"bench-ceiling-{int(time.time())}"
    await preload(bootstrap, topic, records, partitions)
    rates = []
    for run in range(runs):
        consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
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
        print(f"anchor aiokafka consume, run {run + 1}/{runs}: {rates[-1]:,.0f} records/s",
              flush=True)
    return statistics.median(rates)


async def faust_anchor(bootstrap: str, records: list[tuple[bytes, bytes]], partitions: int,
                       tansu: bool, workdir: Path, runs: int = 1,
                       timeout_s: float = 300.0) -> dict[str, Any]:
    """Median events/s (and CPU per event) of ``runs`` tuned Faust table-update workers."""
    stamp = int(time.time())
    topic = f"bench-faust-anchor-{stamp}"
    await preload(bootstrap, topic, records, partitions)
    results = []
    for run in range(runs):
        app_id = f"bench-anchor-{stamp}-{run}"
        rundir = workdir / app_id
        rundir.mkdir(parents=True, exist_ok=True)
        out = rundir / "result.json"
        result = await _one_worker(bootstrap, topic, app_id, rundir, partitions, len(records),
                                   out, tansu, timeout_s)
        results.append(result)
        print(f"anchor Faust table update, run {run + 1}/{runs}: "
              f"{result['events_per_s']:,.0f} events/s", flush=True)
        shutil.rmtree(rundir / "data", ignore_errors=True)
    return {
        "faust_anchor_events": len(records),
        "faust_anchor_events_per_s": round(statistics.median(r["events_per_s"] for r in results)),
        "faust_anchor_runs_events_per_s": [round(r["events_per_s"]) for r in results],
        "faust_anchor_cpu_ms_per_event": round(
            statistics.median(r["cpu_s_per_event"] for r in results) * 1000, 4),
    }


async def _one_worker(bootstrap: str, topic: str, app_id: str, rundir: Path, partitions: int,
                      expect: int, out: Path, tansu: bool, timeout_s: float) -> dict[str, Any]:
    pythonpath = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    argv = [sys.executable, "-m", "retail_sync.bench_faust_anchor", bootstrap, topic, app_id,
            str(rundir / "data"), str(partitions), str(expect), str(out)]
    if tansu:
        argv.append("--tansu")
    proc = _spawn(argv, rundir / "worker.log", pythonpath)
    try:
        deadline = time.monotonic() + timeout_s
        while not out.exists():  # noqa: ASYNC240 - a stat every 0.2 s
            if proc.poll() is not None:
                raise RuntimeError(f"the Faust anchor exited ({proc.returncode}); see "
                                   f"{rundir / 'worker.log'}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"the Faust anchor did not finish in {timeout_s:.0f} s; see "
                                   f"{rundir / 'worker.log'}")
            await asyncio.sleep(0.2)
        return dict(json.loads(out.read_text()))  # noqa: ASYNC240 - a few bytes
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            for _ in range(100):
                if proc.poll() is not None:
                    break
                await asyncio.sleep(0.1)
            if proc.poll() is None:
                proc.kill()
                proc.wait(5)


def _spawn(argv: list[str], log_path: Path, pythonpath: str) -> subprocess.Popen[bytes]:
    with log_path.open("ab") as log:
        return subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, cwd=str(ROOT),  # noqa: S603
                                env={**os.environ, "PYTHONPATH": pythonpath},
                                start_new_session=True)
