"""SIGTERM stops `retail-sync demo`, `bench` and `chaos` the way Ctrl-C does.

These commands start children: worker processes (in their own session, so a signal to the
command's process group does not reach them), the simulators' servers and, without a configured
broker, the embedded one. Their cleanup (``Stack.close``: SIGTERM each worker and wait, stop the
ERP simulator and the broker) is in ``finally`` blocks, which Ctrl-C runs (asyncio cancels the
main task) but Python's default SIGTERM does not: the process died at once and its workers kept
running, attached to nothing. Within :func:`sigterm_as_ctrl_c` a SIGTERM calls whatever SIGINT
handler is in force at that moment (asyncio's, which cancels the main task, or Python's, which
raises KeyboardInterrupt), so ``finally`` blocks run. A second SIGTERM, like a second Ctrl-C,
interrupts the cleanup itself.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType


def _as_interrupt(signum: int, frame: FrameType | None) -> None:
    handler = signal.getsignal(signal.SIGINT)
    if callable(handler):
        handler(signal.SIGINT, frame)
    else:  # SIG_IGN / SIG_DFL for SIGINT: still stop, with cleanup
        raise KeyboardInterrupt


@contextmanager
def sigterm_as_ctrl_c() -> Iterator[None]:
    """Within this block SIGTERM runs the same cleanup as Ctrl-C (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _as_interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
