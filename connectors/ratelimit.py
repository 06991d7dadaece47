"""Client-side rate limits for outbound calls: wait for a slot instead of earning a 429.

``LocalGcra`` / ``RedisGcra`` are the GCRA limiter in this process or shared by every worker
through Redis (a Lua script per step, so the check and the update are atomic), and ``Budgets``
holds one of them per operation of an external system, starting from the plans the marketplaces
publish and following what their answers say.

Long module: the GCRA limiter in this process and in Redis (its Lua scripts) and the Budgets
holding them are one mechanism, each step's script next to its Python twin; the per-system plans
are in each connector's plan.py.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

from retail_sync.connectors.redis_support import (
    DEFAULT_MAX_CONNECTIONS,
    DEFAULT_POOL_TIMEOUT_S,
    REDIS_ERRORS,
    make_client,
    redis_enabled,
)

# --- shared budgets (issue 6) ---------------------------------------------------------------
#
# GCRA ("generic cell rate algorithm"): one number per key, the theoretical arrival time (TAT)
# of the next call. With ``interval = 1/rate`` and ``tolerance = (burst - 1) * interval`` a call
# at ``now`` is allowed when ``TAT - tolerance <= now`` and then moves ``TAT`` to
# ``max(TAT, now) + interval``; otherwise the caller sleeps ``TAT - tolerance - now``. In any
# window of W seconds at most ``rate * W + burst`` calls get through.
#
# The marketplace's own signals: ``penalise(s)`` (a 429 with Retry-After) blocks every call
# until ``now + s`` and counts the bucket as full at that moment (so one call goes out then, the
# next one interval later), whatever budget is in force by then; ``set_rate(rate, burst)`` (e.g.
# x-amzn-RateLimit-Limit) overrides the configured budget for ``override_ttl(...)`` seconds (at
# least ``override_ttl_s`` and at least OVERRIDE_INTERVALS calls of the new rate, so a plan
# reported once a minute does not lapse between two calls), after which it lifts back unless set
# again. Whenever the budget in force changes (override set, override lapsed) the calls counted
# so far stay counted: TAT is kept together with the interval it was computed with and is
# rescaled to the new one (else a slow plan's TAT, minutes ahead, would block a fast one, and a
# lapsed override would turn its TAT into a different number of calls).

log = logging.getLogger(__name__)


def limiter_key(app_id: str, channel: str, operation: str) -> str:
    """The Redis key of one marketplace operation's budget, e.g. ``rs:rl:retail-sync:amazon:orders``."""
    return f"rs:rl:{app_id}:{channel}:{operation}"


#: An override holds for at least this many calls of its own rate (see ``override_ttl``).
OVERRIDE_INTERVALS = 3.0


def override_ttl(base_s: float, rate: float) -> float:
    """How long a reported plan of ``rate`` calls/s holds: ``base_s``, or longer for a slow plan
    (getOrders, one call a minute, would otherwise lapse between two calls and flip the budget
    back and forth)."""
    return max(base_s, OVERRIDE_INTERVALS / rate)


def _check_budget(rate: float, burst: int) -> None:
    if rate <= 0 or burst < 1:
        raise ValueError("rate must be > 0 and burst >= 1")


@runtime_checkable
class Limiter(Protocol):
    """An outbound budget; ``acquire`` waits (sleeps) until a call is allowed."""

    async def acquire(self) -> None: ...

    async def penalise(self, retry_after_s: float, refused: bool = True) -> None: ...

    async def set_rate(self, rate: float, burst: int) -> None: ...

    async def occupy(self, level: float) -> None: ...

    async def take_if_free(self) -> bool: ...


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
        self._tat_interval = 1.0 / self.rate  # the interval _tat was computed with
        self._blocked_until = float("-inf")  # a 429: no call before this, bucket full then

    def budget(self) -> tuple[float, int]:
        """The budget in force: an unexpired ``set_rate`` override, else the configured one."""
        if self._override is not None:
            rate, burst, expires = self._override
            if self.clock() < expires:
                return rate, burst
            self._override = None
        return self.rate, self.burst

    def _state(self) -> tuple[float, float, float]:
        """``now``, interval and tolerance of the budget in force, with ``_tat`` rescaled to it
        (the number of calls counted stays the same when the budget changed)."""
        rate, burst = self.budget()
        interval = 1.0 / rate
        now = self.clock()
        if interval != self._tat_interval:
            level = max(0.0, self._tat - now) / self._tat_interval
            self._tat, self._tat_interval = now + level * interval, interval
        return now, interval, (burst - 1) * interval

    def try_acquire(self) -> float:
        """Take a slot and return 0, or return the seconds to wait before trying again."""
        now, interval, tolerance = self._state()
        tat = max(self._tat, now, self._blocked_until + tolerance)
        wait = tat - tolerance - now
        if wait > 0:
            return wait
        self._tat = tat + interval
        return 0.0

    async def acquire(self) -> None:
        # No await between the check and the update, so concurrent tasks cannot both take the
        # last slot; each waiter sleeps what it was told, then checks again. The sleep is a
        # plain asyncio.sleep: cancelling the caller (a worker shutting down) ends it at once.
        while (wait := self.try_acquire()) > 0:
            await asyncio.sleep(wait)

    async def penalise(self, retry_after_s: float, refused: bool = True) -> None:
        """No call before ``now + retry_after_s``; then the bucket counts as full (one call at
        that moment, the next one interval later), in whatever budget is in force then.

        ``refused`` (a 429): the calls counted beyond are forgotten (the refused call did not
        happen for the marketplace). Not refused (a success that left the marketplace's bucket
        empty, e.g. Walmart's token count 0): calls already counted stay counted, since they
        may be on their way to the marketplace and will each take a token when they land."""
        if retry_after_s <= 0:
            return
        now, _, tolerance = self._state()
        self._blocked_until = max(self._blocked_until, now + retry_after_s)
        full_at_end = now + retry_after_s + tolerance
        self._tat = min(self._tat, full_at_end) if refused else max(self._tat, full_at_end)

    async def set_rate(self, rate: float, burst: int) -> None:
        """Adopt ``rate``/``burst`` for ``override_ttl(override_ttl_s, rate)``. The calls already
        counted stay counted (TAT is rescaled to the new interval)."""
        _check_budget(rate, burst)
        self._state()  # TAT in the interval of the budget in force until now
        now = self.clock()
        self._override = (float(rate), int(burst), now + override_ttl(self.override_ttl_s, rate))
        self._state()

    async def occupy(self, level: float) -> None:
        """The marketplace says its bucket holds ``level`` calls (e.g. Shopify's call-limit
        header): no fewer are counted from now on."""
        if level <= 0:
            return
        now, interval, _ = self._state()
        self._tat = max(self._tat, now + level * interval)

    async def take_if_free(self) -> bool:
        """Take a slot if one is free now; never waits."""
        return self.try_acquire() == 0


# KEYS[1] = "TAT:interval" (µs; TAT and the interval it was computed with, so a change of budget
# keeps the calls counted: TAT is rescaled to the interval in force), KEYS[2] = override hash
# {rate, burst}, KEYS[3] = blocked until (µs, a 429); ARGV = configured rate, burst. Time comes
# from the Redis server, so workers on different hosts agree on it.
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
local tat = now
local raw = redis.call('GET', KEYS[1])
if raw then
  local sep = string.find(raw, ':', 1, true)
  if sep then
    local stored = tonumber(string.sub(raw, 1, sep - 1)) or now
    local per = tonumber(string.sub(raw, sep + 1)) or interval
    if stored > now and per > 0 then tat = now + (stored - now) * interval / per end
  else
    tat = tonumber(raw) or now
  end
end
if tat < now then tat = now end
local blocked = tonumber(redis.call('GET', KEYS[3]) or '0')
local function save(new_tat)
  redis.call('SET', KEYS[1], string.format('%.0f:%.6f', new_tat, interval),
             'PX', math.ceil((new_tat - now) / 1000) + 1000)
end
"""

_ACQUIRE_LUA = _GCRA_PRELUDE + """
if blocked + tolerance > tat then tat = blocked + tolerance end
local wait = tat - tolerance - now
if wait > 0 then
  return {0, math.ceil(wait)}
end
save(tat + interval)
return {1, 0}
"""

# ARGV[3] = retry-after in µs: no call is allowed before now + retry-after, and the bucket is
# full then (kept an hour past it; by then any plan's bucket has drained); ARGV[4] = '1' for a
# refused call (429: not fuller than full, the calls counted beyond are forgotten), '0' for a
# success that emptied the marketplace's bucket (the calls counted stay counted).
_PENALISE_LUA = _GCRA_PRELUDE + """
local until_us = now + tonumber(ARGV[3])
if ARGV[4] == '1' then
  if tat > until_us + tolerance then save(until_us + tolerance) end
elseif tat < until_us + tolerance then
  save(until_us + tolerance)
end
if until_us > blocked then
  redis.call('SET', KEYS[3], string.format('%.0f', until_us),
             'PX', math.ceil(tonumber(ARGV[3]) / 1000) + 3600000)
end
return 1
"""


# ARGV[3] = the marketplace's bucket level in calls: TAT is at least now + level * interval.
_OCCUPY_LUA = _GCRA_PRELUDE + """
local new_tat = now + tonumber(ARGV[3]) * interval
if new_tat > tat then save(new_tat) end
return 1
"""


# ARGV[3], ARGV[4] = the new rate and burst, ARGV[5] = how long they hold (ms). The calls
# counted so far stay counted: TAT is stored with its interval and rescaled when read.
_SET_RATE_LUA = _GCRA_PRELUDE + """
if tat > now then save(tat) end
redis.call('HSET', KEYS[2], 'rate', ARGV[3], 'burst', ARGV[4])
redis.call('PEXPIRE', KEYS[2], tonumber(ARGV[5]))
return 1
"""


class RedisGcra:
    """GCRA shared by every worker through one Redis key, run atomically by a Lua script.

    If Redis fails, the call goes through the in-process ``fallback`` limiter (with a warning,
    once per outage) and Redis is tried again after ``retry_redis_after_s``. ``penalise`` and
    ``set_rate`` are mirrored into the fallback so it follows the marketplace's signals too.
    Its client's pool is bounded (``max_connections``) and a call waits up to ``pool_timeout_s``
    for a free connection rather than failing over to the in-process limiter.
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
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        pool_timeout_s: float = DEFAULT_POOL_TIMEOUT_S,
    ):
        _check_budget(rate, burst)
        self.url, self.key = url, key
        self.max_connections, self.pool_timeout_s = max_connections, pool_timeout_s
        self.rate, self.burst = float(rate), int(burst)
        self.override_ttl_s = override_ttl_s
        self.retry_redis_after_s = retry_redis_after_s
        self.timeout_s = timeout_s
        self.fallback = LocalGcra(rate, burst, override_ttl_s=override_ttl_s)
        self._client = client
        self._own_client = client is None
        self._acquire_script: Any = None
        self._penalise_script: Any = None
        self._occupy_script: Any = None
        self._set_rate_script: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._down_until = 0.0
        self._degraded = False

    @property
    def keys(self) -> list[str]:
        return [self.key, f"{self.key}:cfg", f"{self.key}:blocked"]

    def _redis(self) -> Any:
        loop = asyncio.get_running_loop()
        if self._own_client and self._client is not None and self._loop is not loop:
            self._client = self._acquire_script = None  # made on another (finished) event loop
        if self._client is None:
            self._client = make_client(self.url, self.timeout_s,
                                       max_connections=self.max_connections,
                                       pool_timeout_s=self.pool_timeout_s)
            self._loop = loop
        if self._acquire_script is None:
            self._acquire_script = self._client.register_script(_ACQUIRE_LUA)
            self._penalise_script = self._client.register_script(_PENALISE_LUA)
            self._occupy_script = self._client.register_script(_OCCUPY_LUA)
            self._set_rate_script = self._client.register_script(_SET_RATE_LUA)
        return self._client

    @property
    def shared(self) -> bool:
        """True while the budget is kept in Redis (False: degraded to the in-process one)."""
        return not self._degraded

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

    async def take_if_free(self) -> bool:
        if not self._use_redis():
            return await self.fallback.take_if_free()
        try:
            self._redis()
            allowed, _ = await self._acquire_script(keys=self.keys, args=[repr(self.rate), self.burst])
        except REDIS_ERRORS as exc:
            self._failed("acquire", exc)
            return await self.fallback.take_if_free()
        self._recovered()
        return int(allowed) == 1

    async def occupy(self, level: float) -> None:
        await self.fallback.occupy(level)
        if level <= 0 or not self._use_redis():
            return
        try:
            self._redis()
            await self._occupy_script(keys=self.keys, args=[repr(self.rate), self.burst, repr(float(level))])
        except REDIS_ERRORS as exc:
            self._failed("occupy", exc)
        else:
            self._recovered()

    async def penalise(self, retry_after_s: float, refused: bool = True) -> None:
        await self.fallback.penalise(retry_after_s, refused)
        if retry_after_s <= 0 or not self._use_redis():
            return
        try:
            self._redis()
            await self._penalise_script(
                keys=self.keys,
                args=[repr(self.rate), self.burst, int(retry_after_s * 1_000_000),
                      1 if refused else 0])
        except REDIS_ERRORS as exc:
            self._failed("penalise", exc)
        else:
            self._recovered()

    async def set_rate(self, rate: float, burst: int) -> None:
        await self.fallback.set_rate(rate, burst)  # validates
        if not self._use_redis():
            return
        try:
            self._redis()
            await self._set_rate_script(keys=self.keys, args=[
                repr(self.rate), self.burst, repr(float(rate)), int(burst),
                max(1, int(override_ttl(self.override_ttl_s, rate) * 1000))])
        except REDIS_ERRORS as exc:
            self._failed("set_rate", exc)
        else:
            self._recovered()

    async def aclose(self) -> None:
        if self._client is not None and self._own_client:
            await self._client.aclose()
        self._client = self._acquire_script = self._penalise_script = None
        self._occupy_script = self._set_rate_script = None


def limiter_for(
    redis_url: str | None,
    key: str,
    rate: float,
    burst: int,
    **options: Any,
) -> LocalGcra | RedisGcra:
    """A Redis-shared limiter when ``redis_url`` is set (not empty/"none"), else an in-process
    one. ``options``: ``override_ttl_s`` for both; ``retry_redis_after_s``, ``client``,
    ``timeout_s``, ``max_connections`` and ``pool_timeout_s`` for the Redis one only."""
    if redis_enabled(redis_url):
        assert redis_url is not None
        return RedisGcra(redis_url, key, rate, burst, **options)
    local_options = {k: v for k, v in options.items() if k in ("override_ttl_s", "clock")}
    return LocalGcra(rate, burst, **local_options)


# --- budgets of one external system -----------------------------------------------------------
#
# What each marketplace publishes (requests per second, burst) is its plugin's ``plans``
# (connectors/<system>/plan.py). Our client-side budget starts there; the marketplace's own
# signals then move it (Amazon's x-amzn-RateLimit-Limit, Shopify's call-limit header, Walmart's
# token count, any 429's Retry-After). ``RETAIL_SYNC_RATE_LIMITS`` overrides any of them per
# "channel:operation".

Plan = tuple[float, int]

class Budgets:
    """The client-side budgets of one external system: one limiter per operation, created on
    first use from ``plans`` (operation -> rate per second, burst) and shared by every worker
    through Redis when ``redis_url`` is set. An operation without a plan is not limited.

    Connectors call ``acquire`` before each request and report what the answer said:
    ``throttled`` (a 429, with its Retry-After), ``reported_rate`` (the plan the marketplace says
    applies) and ``reported_level`` (how full its bucket is). Counts per operation (calls,
    throttles, seconds waited) are exported as metrics (``RateLimitCollector``)."""

    def __init__(self, channel: str, plans: dict[str, Plan], *, redis_url: str | None = None,
                 app_id: str = "retail-sync", **options: Any) -> None:
        self.channel, self.app_id, self.redis_url = channel, app_id, redis_url
        self.plans = dict(plans)
        self.options = options
        self._limiters: dict[str, LocalGcra | RedisGcra] = {}
        self._reported: dict[str, tuple[float, int, float]] = {}  # op -> rate, burst, when
        self.calls: dict[str, int] = {}
        self.throttles: dict[str, int] = {}
        self.waited_s: dict[str, float] = {}

    def limiter(self, operation: str) -> LocalGcra | RedisGcra | None:
        found = self._limiters.get(operation)
        if found is None and operation in self.plans:
            rate, burst = self.plans[operation]
            found = self._limiters[operation] = limiter_for(
                self.redis_url, limiter_key(self.app_id, self.channel, operation), rate, burst,
                **self.options)
        return found

    def shared(self, operation: str) -> bool:
        found = self._limiters.get(operation)
        return isinstance(found, RedisGcra) and found.shared

    async def acquire(self, operation: str) -> None:
        """Wait until ``operation`` may be called (sleeps; never raises)."""
        self.calls[operation] = self.calls.get(operation, 0) + 1
        limiter = self.limiter(operation)
        if limiter is None:
            return
        started = time.monotonic()
        await limiter.acquire()
        waited = time.monotonic() - started
        if waited > 0.0005:
            self.waited_s[operation] = self.waited_s.get(operation, 0.0) + waited

    async def take_if_free(self, operation: str) -> bool:
        """Take a slot only if one is free now (for "feed now, or single calls instead")."""
        limiter = self.limiter(operation)
        if limiter is None:
            return True
        if await limiter.take_if_free():
            self.calls[operation] = self.calls.get(operation, 0) + 1
            return True
        return False

    async def throttled(self, operation: str, retry_after_s: float | None) -> None:
        """The marketplace answered 429: nobody calls ``operation`` for ``retry_after_s``; when
        it did not say, one call interval of the plan (the published one, or the budget in
        force if that is faster): a 429 costs at most one plan interval."""
        self.throttles[operation] = self.throttles.get(operation, 0) + 1
        limiter = self.limiter(operation)
        if limiter is None:
            return
        if retry_after_s is None or retry_after_s <= 0:
            local = limiter if isinstance(limiter, LocalGcra) else limiter.fallback
            retry_after_s = 1.0 / max(self.plans[operation][0], local.budget()[0])
        await limiter.penalise(min(retry_after_s, 3600.0))

    async def pause(self, operation: str, seconds: float) -> None:
        """The marketplace says ``operation`` has no calls left for ``seconds`` (e.g. Walmart's
        token count at 0 until its replenish time): nobody calls it before then."""
        limiter = self.limiter(operation)
        if limiter is not None and seconds > 0:
            await limiter.penalise(min(seconds, 3600.0), refused=False)

    async def reported_rate(self, operation: str, rate: float, burst: int | None = None) -> None:
        """The marketplace says ``rate`` per second applies (burst: the plan's unless given).
        Adopted for ``override_ttl(override_ttl_s, rate)``; repeated reports of the same plan
        cost no Redis call until half of that has passed."""
        limiter = self.limiter(operation)
        if limiter is None or rate <= 0:
            return
        burst = burst or self.plans[operation][1]
        now = time.monotonic()
        last = self._reported.get(operation)
        ttl = override_ttl(limiter.override_ttl_s, rate)
        if last is not None and last[:2] == (rate, burst) and now - last[2] < ttl / 2:
            return
        if last is None and (rate, burst) == self.plans[operation]:
            self._reported[operation] = (rate, burst, now)
            return  # what we started with: nothing to override
        self._reported[operation] = (rate, burst, now)
        await limiter.set_rate(rate, burst)

    async def reported_level(self, operation: str, level: float) -> None:
        """The marketplace says its bucket for ``operation`` holds ``level`` calls now."""
        limiter = self.limiter(operation)
        if limiter is not None:
            await limiter.occupy(level)

    def stats(self) -> dict[str, dict[str, float]]:
        ops = sorted(set(self.calls) | set(self.throttles) | set(self.waited_s))
        return {op: {"calls": self.calls.get(op, 0), "throttled": self.throttles.get(op, 0),
                     "waited_s": round(self.waited_s.get(op, 0.0), 3)} for op in ops}

    async def aclose(self) -> None:
        for limiter in self._limiters.values():
            if isinstance(limiter, RedisGcra):
                await limiter.aclose()


_BUDGETS: dict[tuple[str, str, str | None, tuple[tuple[str, Plan], ...]], Budgets] = {}


def budgets_for(settings: Any, channel: str, plans: dict[str, Plan]) -> Budgets:
    """The process-wide Budgets of ``channel`` (inbound poller and outbound connector of one
    channel share them), with ``settings.rate_limits`` overrides ("channel:operation")."""
    merged = dict(plans)
    for name, plan in (getattr(settings, "rate_limits", None) or {}).items():
        owner, _, operation = name.partition(":")
        if owner == channel and operation:
            merged[operation] = (float(plan[0]), int(plan[1]))
    redis_url = settings.redis_url if redis_enabled(settings.redis_url) else None
    key = (settings.app_id, channel, redis_url, tuple(sorted(merged.items())))
    found = _BUDGETS.get(key)
    if found is None:
        found = _BUDGETS[key] = Budgets(channel, merged, redis_url=redis_url, app_id=settings.app_id,
                                        **redis_pool_options(settings))
    return found


def redis_pool_options(settings: Any) -> dict[str, Any]:
    """The Redis client options of the settings (pool size, pool wait, per-call timeout)."""
    return {"max_connections": getattr(settings, "redis_max_connections", DEFAULT_MAX_CONNECTIONS),
            "pool_timeout_s": getattr(settings, "redis_pool_timeout_s", DEFAULT_POOL_TIMEOUT_S),
            "timeout_s": getattr(settings, "redis_timeout_s", 0.5)}


def all_budgets() -> list[Budgets]:
    return list(_BUDGETS.values())
