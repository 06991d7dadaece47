"""The worker's event loop (``RETAIL_SYNC_EVENT_LOOP``, issue 16): asyncio's own, or uvloop,
measured in docs/BENCHMARKS.md (issue 16, seventh step)."""

from __future__ import annotations


def use_event_loop(name: str) -> None:
    """``uvloop`` sets uvloop's event loop policy; call it before any loop exists (the worker's
    and its Kafka consumer thread's loops are then uvloop's). ``asyncio`` changes nothing."""
    if name == "uvloop":
        import mode.loop

        mode.loop.use("uvloop")
