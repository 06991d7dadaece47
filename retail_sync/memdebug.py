"""Where a worker's memory is (a test and bench aid, off unless asked for).

With ``RETAIL_SYNC_TEST_MEMDEBUG=<dir>`` in its environment a worker answers
``GET /debug/memory`` with a JSON breakdown of its resident memory:

- ``rss``: the process's resident set (psutil), and ``process``: its anonymous and file-backed
  parts and the thread count (/proc);
- ``pymalloc``: Python's small-object allocator, whose arenas are mmapped outside glibc's heap;
- ``malloc``: glibc's ``mallinfo2`` (heap in use, free but kept, mmapped), the part of RSS that is
  the C heap (Python objects, RocksDB's allocations, aiokafka's buffers);
- ``rocksdb``: the RocksDB properties of every open table partition summed (memtables, table
  readers, pinned blocks) and the shared block cache and write buffer manager (tables/rocks.py);
- ``python``: the objects the garbage collector tracks, by type (the largest counts), and
  tracemalloc's total when it runs;
- ``structures``: sizes of the worker's own bounded structures (the in-process webhook dedupe,
  Faust's key index per table, the consumer's per-partition ack bookkeeping).

With ``RETAIL_SYNC_TEST_TRACEMALLOC=<frames>`` as well, tracemalloc runs from the start (it slows
the worker and costs memory of its own: for attribution, not for RSS figures), and
``/debug/memory?snapshot=<label>`` dumps a snapshot to ``<dir>/<label>.tracemalloc``; `diff`
compares two (``python -m retail_sync.memdebug a.tracemalloc b.tracemalloc``).
``?trim=1`` calls ``malloc_trim(0)`` first (is the growth freed memory glibc kept?).

Nothing here is registered without the variable; it is not a setting (``RETAIL_SYNC_TEST_*``).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import os
import re
import sys
import tracemalloc
from collections import Counter
from pathlib import Path
from typing import Any

ENV_DIR = "RETAIL_SYNC_TEST_MEMDEBUG"
ENV_TRACEMALLOC = "RETAIL_SYNC_TEST_TRACEMALLOC"
ROCKSDB_PROPERTIES = (
    "rocksdb.cur-size-all-mem-tables",
    "rocksdb.size-all-mem-tables",
    "rocksdb.estimate-table-readers-mem",
    "rocksdb.block-cache-pinned-usage",
    "rocksdb.num-live-versions",
)
LABEL = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


class _Mallinfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
        "fordblks", "keepcost")]


def _libc() -> Any:
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None


def malloc_stats() -> dict[str, int]:
    """glibc's view of the C heap: in use, free but kept by the allocator, mmapped blocks."""
    libc = _libc()
    if libc is None or not hasattr(libc, "mallinfo2"):
        return {}
    libc.mallinfo2.restype = _Mallinfo2
    info = libc.mallinfo2()
    return {"heap_bytes": info.arena, "mmapped_bytes": info.hblkhd, "in_use_bytes": info.uordblks,
            "free_kept_bytes": info.fordblks, "releasable_top_bytes": info.keepcost}


def malloc_trim() -> bool:
    from retail_sync import heap
    return heap.trim()


def process_stats() -> dict[str, int]:
    """Resident memory by kind (/proc: anonymous, file-backed) and the thread count."""
    out: dict[str, int] = {}
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            name, _, value = line.partition(":")
            if name in ("RssAnon", "RssFile", "RssShmem", "Threads"):
                number = int(value.split()[0])
                out[name] = number * 1024 if name.startswith("Rss") else number
    except OSError:
        pass
    return out


def pymalloc_stats() -> dict[str, int]:
    """Python's small-object allocator (its arenas are mmapped, not in glibc's heap): arenas
    held, bytes in live blocks and free blocks kept (``sys._debugmallocstats``, read from fd 2)."""
    import tempfile

    wanted = {"# arenas allocated current": "arenas", "# bytes in allocated blocks": "used_bytes",
              "# bytes in available blocks": "free_bytes"}
    out: dict[str, int] = {}
    with tempfile.TemporaryFile() as captured:
        saved = os.dup(2)
        try:
            os.dup2(captured.fileno(), 2)
            sys._debugmallocstats()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        captured.seek(0)
        for line in captured.read().decode(errors="replace").splitlines():
            name, _, value = line.partition("=")
            if name.strip() in wanted:
                out[wanted[name.strip()]] = int(value.strip().replace(",", ""))
            elif line.startswith(tuple("0123456789")) and "arenas *" in line:
                out["arena_bytes"] = int(value.strip().replace(",", ""))
    return out


def rocksdb_stats(tables: dict[str, Any]) -> dict[str, Any]:
    """RocksDB properties summed over every open partition of the given Faust tables."""
    totals: dict[str, int] = dict.fromkeys(ROCKSDB_PROPERTIES, 0)
    per_table: dict[str, int] = {}
    databases = 0
    for name, table in tables.items():
        dbs = getattr(table.data, "_dbs", {})
        for db in list(dbs.values()):
            databases += 1
            for prop in ROCKSDB_PROPERTIES:
                try:
                    value = db.property_int_value(prop)
                except Exception:  # noqa: BLE001 - a closed or closing database
                    value = None
                totals[prop] += int(value or 0)
            per_table[name] = per_table.get(name, 0) + int(
                db.property_int_value("rocksdb.cur-size-all-mem-tables") or 0)
    out: dict[str, Any] = {"databases": databases, **totals, "memtables_by_table": per_table}
    from retail_sync.tables import rocks
    for (cache_bytes, budget), (cache, manager) in rocks._shared.items():
        out["block_cache_usage"] = cache.get_usage()
        out["block_cache_pinned"] = cache.get_pinned_usage()
        out["block_cache_capacity"] = cache_bytes
        out["write_buffer_manager_usage"] = manager.get_usage()
        out["write_buffer_manager_budget"] = budget
    return out


def python_stats(top: int = 25) -> dict[str, Any]:
    counts = Counter(type(o).__qualname__ for o in gc.get_objects())
    out: dict[str, Any] = {"gc_objects": sum(counts.values()),
                           "allocated_blocks": sys.getallocatedblocks(),
                           "by_type": dict(counts.most_common(top))}
    if tracemalloc.is_tracing():
        current, peak = tracemalloc.get_traced_memory()
        out["tracemalloc_current_bytes"], out["tracemalloc_peak_bytes"] = current, peak
        out["tracemalloc_overhead_bytes"] = tracemalloc.get_tracemalloc_memory()
    return out


def structure_stats(ctx: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    seen = getattr(ctx.deduper, "_seen", None)
    if seen is not None:
        out["webhook_dedupe_entries"] = len(seen)
        out["webhook_dedupe_max_entries"] = getattr(ctx.deduper, "max_entries", None)
    for name in ("orders", "cursors", "stock"):
        table = getattr(ctx.tables, name)
        out[f"key_index_{name}"] = len(getattr(table.data, "_key_index", ()) or ())
    consumer = getattr(ctx.app, "_consumer", None)
    if consumer is not None:
        out["consumer_acked_offsets"] = sum(len(v) for v in getattr(consumer, "_acked", {}).values())
        out["consumer_gap_offsets"] = sum(len(v) for v in getattr(consumer, "_gap", {}).values())
    return out


def report(ctx: Any, snapshot_dir: Path | None = None, label: str | None = None,
           trim: bool = False) -> dict[str, Any]:
    import psutil

    trimmed = malloc_trim() if trim else None
    gc.collect()
    tables = {name: getattr(ctx.tables, name) for name in ("orders", "cursors", "stock")}
    out: dict[str, Any] = {
        "rss": psutil.Process().memory_info().rss,
        "process": process_stats(),
        "malloc": malloc_stats(),
        "pymalloc": pymalloc_stats(),
        "rocksdb": rocksdb_stats(tables),
        "python": python_stats(),
        "structures": structure_stats(ctx),
    }
    if trim:
        out["malloc_trim_released"] = trimmed
    if label and snapshot_dir is not None and tracemalloc.is_tracing():
        path = snapshot_dir / f"{label}.tracemalloc"
        tracemalloc.take_snapshot().dump(str(path))
        out["snapshot"] = str(path)
    return out


def start_tracing() -> None:
    """Called as early as possible in a worker (cli worker) when the variables ask for it."""
    frames = os.environ.get(ENV_TRACEMALLOC)
    if os.environ.get(ENV_DIR) and frames and not tracemalloc.is_tracing():
        tracemalloc.start(int(frames))


def register(ctx: Any) -> None:
    directory = os.environ.get(ENV_DIR)
    if not directory:
        return
    snapshot_dir = Path(directory)
    snapshot_dir.mkdir(parents=True, exist_ok=True)
    start_tracing()
    from faust.web import Request, Response, View

    from retail_sync.admin_auth import requires

    @ctx.app.page("/debug/memory")
    class DebugMemory(View):
        @requires("metrics")
        async def get(self, request: Request) -> Response:
            label = request.query.get("snapshot")
            if label is not None and not LABEL.match(label):
                return self.json({"error": "snapshot: letters, digits, '.', '_', '-'"}, status=400)
            return self.json(report(ctx, snapshot_dir, label, request.query.get("trim") == "1"))


def diff(before: str, after: str, top: int = 20, key: str = "lineno") -> list[str]:
    """The allocation sites that grew most between two snapshots (tracemalloc statistics)."""
    filters = [tracemalloc.Filter(False, tracemalloc.__file__),
               tracemalloc.Filter(False, "<frozen importlib._bootstrap*>")]
    old = tracemalloc.Snapshot.load(before).filter_traces(filters)
    new = tracemalloc.Snapshot.load(after).filter_traces(filters)
    stats = new.compare_to(old, key)
    total = sum(s.size_diff for s in stats)
    lines = [f"total {total / 1024:+.0f} KiB over {len(stats)} sites"]
    for stat in stats[:top]:
        lines.append(f"{stat.size_diff / 1024:+9.0f} KiB {stat.count_diff:+8d} blocks  "
                     f"{stat.size / 1024:9.0f} KiB now  {stat.traceback.format()[0].strip()}")
    return lines


if __name__ == "__main__":  # python -m retail_sync.memdebug before.tracemalloc after.tracemalloc
    mode = sys.argv[3] if len(sys.argv) > 3 else "lineno"
    print("\n".join(diff(sys.argv[1], sys.argv[2], key=mode)))
