"""The worker hands freed C-heap pages back (retail_sync/heap.py, ARCHITECTURE §5f.5).

Real glibc, real memory: 64 MiB malloc'ed in 64 KiB blocks (inside the heap, below the mmap
threshold) and freed except the last block, which pins the heap's top so free() cannot shrink it:
the pages stay resident (what the soak saw as "free kept" growing) until malloc_trim.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from types import SimpleNamespace

import faust
import pytest

from retail_sync import heap
from retail_sync.memdebug import process_stats
from retail_sync.settings import Settings

BLOCK, COUNT = 64 * 1024, 1024  # 64 MiB
MIB = 2**20

pytestmark = pytest.mark.skipif(not heap.available(), reason="not glibc: no malloc_trim")


def _rss_anon() -> int:
    return process_stats()["RssAnon"]


def test_trim_returns_the_pages_free_leaves_resident() -> None:
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    heap.trim()
    start = _rss_anon()
    blocks = [libc.malloc(BLOCK) for _ in range(COUNT)]
    try:
        for block in blocks:
            ctypes.memset(block, 1, BLOCK)  # resident
        for block in blocks[:-1]:
            libc.free(block)
        freed = _rss_anon()
        assert freed - start > 48 * MIB  # free() kept them: the growth the soak measured
        assert heap.trim()
        assert freed - _rss_anon() > 48 * MIB
    finally:
        libc.free(blocks[-1])


def test_the_worker_trims_on_its_interval_unless_told_not_to() -> None:
    for interval, timers in ((60.0, 1), (0.0, 0)):
        app = faust.App(f"heap-test-{interval:g}", autodiscover=False)
        before = len(app._app_tasks)
        heap.register(SimpleNamespace(app=app, settings=Settings(malloc_trim_interval_s=interval)))
        assert len(app._app_tasks) - before == timers
    assert Settings().malloc_trim_interval_s == 60.0
