"""An in-process token bucket for outbound calls (one worker). Issue 6 shares budgets across
workers through Redis; the behaviour stays the same: wait for a token instead of earning a 429."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

from connectors.redis_support import REDIS_ERRORS, make_client, redis_enabled


class TokenBucket:
    """``rate`` tokens per second, at most ``burst`` saved up; ``acquire`` waits for one."""

    def __init__(self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic):
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be > 0 and burst >= 1")
        self.rate, self.burst, self.clock = rate, burst, clock
        self.tokens = float(burst)
        self._at = clock()
        self._lock = asyncio.Lock()

    def _refill(self) -> None:
        now = self.clock()
        self.tokens = min(self.burst, self.tokens + (now - self._at) * self.rate)
        self._at = now

    def wait_time(self) -> float:
        """Seconds until a token is available (0 if one is)."""
        self._refill()
        return 0.0 if self.tokens >= 1 else (1 - self.tokens) / self.rate

    async def acquire(self) -> None:
        async with self._lock:
            while (delay := self.wait_time()) > 0:
                await asyncio.sleep(delay)
            self.tokens -= 1


# --- shared budgets (issue 6) ---------------------------------------------------------------
#
# GCRA ("generic cell rate algorithm"): one number per key, the theoretical arrival time (TAT)
# of the next call. With ``interval = 1/rate`` and ``tolerance = (burst - 1) * interval`` a call
# at ``now`` is allowed when ``TAT - tolerance <= now`` and then moves ``TAT`` to
# ``max(TAT, now) + interval``; otherwise the caller sleeps ``TAT - tolerance - now``. In any
# window of W seconds at most ``rate * W + burst`` calls get through.
#
# The marketplace's own signals: ``penalise(s)`` (a 429 with Retry-After) moves TAT so that no
# call is allowed for ``s`` seconds; ``set_rate(rate, burst)`` (e.g. x-amzn-RateLimit-Limit)
# overrides the configured budget for ``override_ttl_s`` seconds, after which it lifts back
# unless set again.

log = logging.getLogger(__name__)


def limiter_key(app_id: str, channel: str, operation: str) -> str:
    """The Redis key of one marketplace operation's budget, e.g. ``rs:rl:retail-sync:amazon:orders``."""
    return f"rs:rl:{app_id}:{channel}:{operation}"


def _check_budget(rate: float, burst: int) -> None:
    if rate <= 0 or burst < 1:
        raise ValueError("rate must be > 0 and burst >= 1")


@runtime_checkable
class Limiter(Protocol):
    """An outbound budget; ``acquire`` waits (sleeps) until a call is allowed."""

    async def acquire(self) -> None: ...

    async def penalise(self, retry_after_s: float) -> None: ...

    async def set_rate(self, rate: float, burst: int) -> None: ...


class LocalGcra:
    """GCRA in this process only (no Redis configured, or Redis unreachable)."""

    def __init__(
        self,
        rate: float,
        burst: int,
        *,
        override_ttl_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ):
        _check_budget(rate, burst)
        self.rate, self.burst = float(rate), int(burst)
        self.override_ttl_s = override_ttl_s
        self.clock = clock
        self._override: tuple[float, int, float] | None = None  # rate, burst, expires at
        self._tat = clock()

    def budget(self) -> tuple[float, int]:
        """The budget in force: an unexpired ``set_rate`` override, else the configured one."""
        if self._override is not None:
            rate, burst, expires = self._override
            if self.clock() < expires:
                return rate, burst
            self._override = None
        return self.rate, self.burst

    def _tolerance(self) -> tuple[float, float]:
        rate, burst = self.budget()
        interval = 1.0 / rate
        return interval, (burst - 1) * interval

    def try_acquire(self) -> float:
        """Take a slot and return 0, or return the seconds to wait before trying again."""
        now = self.clock()
        interval, tolerance = self._tolerance()
        tat = max(self._tat, now)
        wait = tat - tolerance - now
        if wait > 0:
            return wait
        self._tat = tat + interval
        return 0.0

    async def acquire(self) -> None:
        # No await between the check and the update, so concurrent tasks cannot both take the
        # last slot; each waiter sleeps what it was told, then checks again.
        while (wait := self.try_acquire()) > 0:
            await asyncio.sleep(wait)

    async def penalise(self, retry_after_s: float) -> None:
        if retry_after_s <= 0:
            return
        _, tolerance = self._tolerance()
        self._tat = max(self._tat, self.clock() + retry_after_s + tolerance)

    async def set_rate(self, rate: float, burst: int) -> None:
        _check_budget(rate, burst)
        self._override = (float(rate), int(burst), self.clock() + self.override_ttl_s)


# KEYS[1] = TAT (µs), KEYS[2] = override hash {rate, burst}; ARGV = configured rate, burst.
# Returns {1, 0} when allowed, {0, wait_us} otherwise. Time comes from the Redis server, so
# workers on different hosts agree on it.
_GCRA_PRELUDE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local cfg = redis.call('HMGET', KEYS[2], 'rate', 'burst')
if cfg[1] and cfg[2] then
  rate = tonumber(cfg[1])
  burst = tonumber(cfg[2])
end
local interval = 1000000 / rate
local tolerance = (burst - 1) * interval
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
"""

_ACQUIRE_LUA = _GCRA_PRELUDE + """
local wait = tat - tolerance - now
if wait > 0 then
  return {0, math.ceil(wait)}
end
local new_tat = tat + interval
redis.call('SET', KEYS[1], string.format('%.0f', new_tat), 'PX', math.ceil((new_tat - now) / 1000) + 1000)
return {1, 0}
"""

# ARGV[3] = retry-after in µs: no call is allowed before now + retry-after.
_PENALISE_LUA = _GCRA_PRELUDE + """
local new_tat = now + tonumber(ARGV[3]) + tolerance
if new_tat > tat then
  redis.call('SET', KEYS[1], string.format('%.0f', new_tat), 'PX', math.ceil((new_tat - now) / 1000) + 1000)
end
return 1
"""


class RedisGcra:
    """GCRA shared by every worker through one Redis key, run atomically by a Lua script.

    If Redis fails, the call goes through the in-process ``fallback`` limiter (with a warning,
    once per outage) and Redis is tried again after ``retry_redis_after_s``. ``penalise`` and
    ``set_rate`` are mirrored into the fallback so it follows the marketplace's signals too.
    """

    def __init__(
        self,
        url: str,
        key: str,
        rate: float,
        burst: int,
        *,
        override_ttl_s: float = 60.0,
        retry_redis_after_s: float = 5.0,
        client: Any = None,
        timeout_s: float = 0.5,
    ):
        _check_budget(rate, burst)
        self.url, self.key = url, key
        self.rate, self.burst = float(rate), int(burst)
        self.override_ttl_s = override_ttl_s
        self.retry_redis_after_s = retry_redis_after_s
        self.timeout_s = timeout_s
        self.fallback = LocalGcra(rate, burst, override_ttl_s=override_ttl_s)
        self._client = client
        self._own_client = client is None
        self._acquire_script: Any = None
        self._penalise_script: Any = None
        self._down_until = 0.0
        self._degraded = False

    @property
    def keys(self) -> list[str]:
        return [self.key, f"{self.key}:cfg"]

    def _redis(self) -> Any:
        if self._client is None:
            self._client = make_client(self.url, self.timeout_s)
        if self._acquire_script is None:
            self._acquire_script = self._client.register_script(_ACQUIRE_LUA)
            self._penalise_script = self._client.register_script(_PENALISE_LUA)
        return self._client

    def _use_redis(self) -> bool:
        return time.monotonic() >= self._down_until

    def _failed(self, what: str, exc: BaseException) -> None:
        self._down_until = time.monotonic() + self.retry_redis_after_s
        if not self._degraded:
            log.warning("rate limit %s: Redis unavailable for %s (%r); using the in-process "
                        "limiter, retrying Redis in %.0f s", self.key, what, exc,
                        self.retry_redis_after_s)
        self._degraded = True

    def _recovered(self) -> None:
        if self._degraded:
            log.info("rate limit %s: Redis reachable again, budget shared again", self.key)
        self._degraded = False

    async def acquire(self) -> None:
        while True:
            if not self._use_redis():
                await self.fallback.acquire()
                return
            try:
                self._redis()
                allowed, wait_us = await self._acquire_script(
                    keys=self.keys, args=[repr(self.rate), self.burst])
            except REDIS_ERRORS as exc:
                self._failed("acquire", exc)
                await self.fallback.acquire()
                return
            self._recovered()
            if int(allowed) == 1:
                return
            await asyncio.sleep(int(wait_us) / 1_000_000)

    async def penalise(self, retry_after_s: float) -> None:
        await self.fallback.penalise(retry_after_s)
        if retry_after_s <= 0 or not self._use_redis():
            return
        try:
            self._redis()
            await self._penalise_script(
                keys=self.keys,
                args=[repr(self.rate), self.burst, int(retry_after_s * 1_000_000)])
        except REDIS_ERRORS as exc:
            self._failed("penalise", exc)
        else:
            self._recovered()

    async def set_rate(self, rate: float, burst: int) -> None:
        await self.fallback.set_rate(rate, burst)  # validates
        if not self._use_redis():
            return
        try:
            client = self._redis()
            async with client.pipeline(transaction=True) as pipe:
                pipe.hset(self.keys[1], mapping={"rate": repr(float(rate)), "burst": int(burst)})
                pipe.pexpire(self.keys[1], max(1, int(self.override_ttl_s * 1000)))
                await pipe.execute()
        except REDIS_ERRORS as exc:
            self._failed("set_rate", exc)
        else:
            self._recovered()

    async def aclose(self) -> None:
        if self._client is not None and self._own_client:
            await self._client.aclose()
        self._client = self._acquire_script = self._penalise_script = None


def limiter_for(
    redis_url: str | None,
    key: str,
    rate: float,
    burst: int,
    **options: Any,
) -> LocalGcra | RedisGcra:
    """A Redis-shared limiter when ``redis_url`` is set (not empty/"none"), else an in-process
    one. ``options``: ``override_ttl_s`` for both; ``retry_redis_after_s``, ``client`` and
    ``timeout_s`` for the Redis one only."""
    if redis_enabled(redis_url):
        assert redis_url is not None
        return RedisGcra(redis_url, key, rate, burst, **options)
    local_options = {k: v for k, v in options.items() if k in ("override_ttl_s", "clock")}
    return LocalGcra(rate, burst, **local_options)
