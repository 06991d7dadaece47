"""Hand the C heap's free pages back to the system now and then (glibc ``malloc_trim``).

A worker's C heap (glibc malloc: RocksDB's memtables and blocks, aiokafka's and aiohttp's
buffers, orjson, Python objects larger than 512 bytes) is freed in pieces between pieces still
in use, and glibc keeps such free memory for later instead of returning it: resident memory
then rises with every new high-water mark of fragmentation while the memory in use stays flat
(the soak, docs/BENCHMARKS.md: "free kept" grew 7 -> 13 MiB over 6,000 orders, in use flat).
``malloc_trim(0)`` releases the free pages of every arena (madvise), not only the heap's top.
Every ``RETAIL_SYNC_MALLOC_TRIM_INTERVAL_S`` (60 s; 0 = never) the worker calls it; a call
takes milliseconds on a heap of this size. Not glibc (musl, macOS): nothing is done.

The worker also sets Python's garbage collector thresholds (``RETAIL_SYNC_GC_THRESHOLDS``,
``tune_gc``): with Python's defaults (700, 10, 10) a worker moving orders spent ~15 % of its CPU
collecting, mostly in full collections that walk every object it keeps (the table cache's decoded
order states: ~300 objects each); the pauses (tens of ms) add to every order's latency. Our
objects rarely form cycles (the frozen pydantic values never do), so the collector finds little:
collected less often, it costs ~1/4 of that. ``python_gc_*`` on /metrics shows the collections.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import logging
from typing import Any

log = logging.getLogger(__name__)


def _trim_function() -> Any:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None
    trim = getattr(libc, "malloc_trim", None)
    if trim is not None:
        trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return trim


_TRIM = _trim_function()


def available() -> bool:
    return _TRIM is not None


def trim() -> bool:
    """Return the free pages of every malloc arena to the system; True if any were."""
    return bool(_TRIM is not None and _TRIM(0))


def tune_gc(thresholds: str) -> tuple[int, ...]:
    """Set the collector's thresholds from ``"gen0,gen1,gen2"`` ('default': Python's); returns
    the thresholds in force."""
    if thresholds != "default":
        gen0, gen1, gen2 = (int(part) for part in thresholds.split(","))
        gc.set_threshold(gen0, gen1, gen2)
    return gc.get_threshold()


def register(ctx: Any) -> None:
    interval = ctx.settings.malloc_trim_interval_s
    if interval <= 0 or not available():
        return

    @ctx.app.timer(interval=interval)  # type: ignore[untyped-decorator]  # Faust: @no_type_check
    async def _trim_heap() -> None:
        trim()
