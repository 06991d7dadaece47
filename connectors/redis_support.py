"""Small helpers shared by the Redis-backed limiter and deduper.

Redis is an optimisation for sharing state between workers, never a hard dependency: callers
catch ``REDIS_ERRORS`` and fall back to an in-process equivalent. Clients are therefore built
with short timeouts and no client-side retries, so an outage costs one fast failure per call.
"""

from __future__ import annotations

import asyncio

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
