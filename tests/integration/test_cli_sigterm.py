"""`retail-sync bench` and `demo` killed with SIGTERM take their worker and broker with them.

Their workers run in a session of their own (a signal to the command's process group does not
reach them), and their cleanup is in ``finally`` blocks that Python's default SIGTERM skipped: the
command died at once and its worker kept running, attached to nothing
(retail_sync/interrupt.py). Real commands, real worker and broker processes.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import psutil
import pytest

from retail_sync.broker import free_port
from retail_sync.stack import ROOT

pytestmark = pytest.mark.integration


def _env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RETAIL_SYNC_")}
    env.update({"PYTHONPATH": str(ROOT), "RETAIL_SYNC_WEB_PORT": str(free_port()),
                "RETAIL_SYNC_INGRESS_PORT": str(free_port()), "RETAIL_SYNC_INGRESS_HOST": "127.0.0.1"})
    return env


def _worker_child(proc: subprocess.Popen[bytes], timeout_s: float) -> psutil.Process:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the command exited before it started its worker"
        for child in psutil.Process(proc.pid).children(recursive=True):
            try:
                if "worker" in child.cmdline() and "retail_sync.cli" in child.cmdline():
                    return child
            except psutil.NoSuchProcess:
                continue
        time.sleep(0.2)
    raise AssertionError(f"no worker process within {timeout_s:.0f}s")


def _ready(port: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as resp:
                if resp.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"the worker on port {port} not ready within {timeout_s:.0f}s")


def _sigterm_and_check(proc: subprocess.Popen[bytes], ready_port: int | None = None,
                       settle_s: float = 0.0) -> None:
    worker = _worker_child(proc, 90)
    if ready_port is not None:
        _ready(ready_port, 90)
    time.sleep(settle_s)
    children = psutil.Process(proc.pid).children(recursive=True)  # worker, embedded broker
    assert any(c.pid == worker.pid for c in children)
    try:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)  # the worker's graceful stop is bounded by Stack (30 s, then SIGKILL)
        _, alive = psutil.wait_procs(children, timeout=10)
        assert not alive, f"left running after SIGTERM: {[(p.pid, p.cmdline()) for p in alive]}"
    finally:
        for child in children:  # whatever happened, leave nothing behind
            try:
                child.kill()
            except psutil.NoSuchProcess:
                pass
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def test_sigterm_to_a_soak_bench_stops_its_worker_and_broker(tmp_path: Path) -> None:
    proc = subprocess.Popen(  # noqa: S603 - our own CLI
        [sys.executable, "-m", "retail_sync.cli", "bench", "--only", "soak", "--soak-rate", "2",
         "--soak-orders", "100000"], env=_env(tmp_path), cwd=str(ROOT),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _sigterm_and_check(proc, settle_s=5.0)
    assert proc.returncode == 130  # as for Ctrl-C


def test_sigterm_to_a_starting_demo_stops_its_worker_and_broker(tmp_path: Path) -> None:
    env = _env(tmp_path)
    proc = subprocess.Popen(  # noqa: S603 - our own CLI
        [sys.executable, "-m", "retail_sync.cli", "demo", "--duration", "600", "--rate", "1"],
        env=env, cwd=str(ROOT), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    # as soon as its worker is ready: the demo then loads the opening stock (2 s at least), before
    # its own Ctrl-C/SIGTERM handling of the sending phase (stop sending, drain, summary) begins
    _sigterm_and_check(proc, ready_port=int(env["RETAIL_SYNC_WEB_PORT"]))
    assert proc.returncode == 130
