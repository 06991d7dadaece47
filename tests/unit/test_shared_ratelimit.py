"""The GCRA limiter, shared through Redis by several workers, and its in-process twin."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from connectors.ratelimit import Limiter, LocalGcra, RedisGcra, limiter_for, limiter_key
from connectors.redis_support import redis_enabled

Pair = Callable[..., Awaitable[tuple[Limiter, Limiter]]]


@pytest.fixture(params=["redis", "local"])
async def make_pair(request, redis_url: str, redis_prefix: str) -> AsyncIterator[Pair]:
    """Two limiters on one budget, like two workers: two Redis clients on one key, or (local)
    the same in-process limiter used by two tasks."""
    made: list[RedisGcra] = []

    async def make(rate: float, burst: int, **options) -> tuple[Limiter, Limiter]:
        if request.param == "local":
            one = LocalGcra(rate, burst, **options)
            return one, one
        key = f"{redis_prefix}:rl:shop:orders"
        pair = (RedisGcra(redis_url, key, rate, burst, **options),
                RedisGcra(redis_url, key, rate, burst, **options))
        made.extend(pair)
        return pair

    yield make
    for limiter in made:
        await limiter.aclose()


async def _calls(limiter: Limiter, until: float, stamps: list[float]) -> None:
    while time.monotonic() < until:
        await limiter.acquire()
        stamps.append(time.monotonic())


async def test_two_workers_never_exceed_rate_times_window_plus_burst(make_pair: Pair):
    rate, burst = 40.0, 5
    a, b = await make_pair(rate, burst)
    start = time.monotonic()
    stamps: list[float] = []
    until = start + 0.6
    await asyncio.gather(_calls(a, until, stamps), _calls(a, until, stamps),
                         _calls(b, until, stamps), _calls(b, until, stamps))
    stamps.sort()
    slack = 0.01  # timestamps are taken after the call returns
    for i in range(len(stamps)):
        for j in range(i, len(stamps)):
            window = stamps[j] - stamps[i]
            assert j - i + 1 <= rate * (window + slack) + burst, (i, j, window)
    elapsed = stamps[-1] - start
    assert len(stamps) <= rate * elapsed + burst + 1
    assert len(stamps) >= rate * elapsed * 0.6  # waits, but not much longer than needed


async def test_penalise_delays_every_worker(make_pair: Pair):
    a, b = await make_pair(100.0, 10)
    await a.acquire()
    await a.penalise(0.3)
    start = time.monotonic()
    await asyncio.gather(a.acquire(), b.acquire())
    assert time.monotonic() - start >= 0.28
    # the penalty lifts: afterwards calls flow at the configured rate again
    start = time.monotonic()
    for _ in range(3):
        await b.acquire()
    assert time.monotonic() - start < 0.15


async def test_set_rate_is_followed_by_every_worker_and_lifts_after_ttl(make_pair: Pair):
    a, b = await make_pair(200.0, 1, override_ttl_s=0.5)
    await a.set_rate(10.0, 1)
    start = time.monotonic()
    for _ in range(4):  # 1 at once, then 3 at 10/s
        await b.acquire()
    assert time.monotonic() - start >= 0.27
    await asyncio.sleep(max(0.0, start + 0.65 - time.monotonic()))  # TTL gone, last slot used
    start = time.monotonic()
    for _ in range(10):  # back to 200/s
        await b.acquire()
    assert time.monotonic() - start < 0.15


async def test_invalid_budgets_are_rejected(make_pair: Pair):
    a, _ = await make_pair(10.0, 1)
    with pytest.raises(ValueError, match="rate"):
        await a.set_rate(0, 1)
    with pytest.raises(ValueError, match="rate"):
        LocalGcra(1.0, 0)


def test_local_gcra_with_a_fake_clock():
    now = [0.0]
    limiter = LocalGcra(2.0, 3, override_ttl_s=10, clock=lambda: now[0])
    assert [limiter.try_acquire() for _ in range(3)] == [0, 0, 0]
    assert limiter.try_acquire() == pytest.approx(0.5)
    now[0] = 0.5
    assert limiter.try_acquire() == 0
    now[0] = 100
    assert [limiter.try_acquire() for _ in range(3)] == [0, 0, 0]  # the burst, never more
    assert limiter.try_acquire() > 0


async def test_unreachable_redis_falls_back_without_raising(closed_redis_url: str, caplog):
    limiter = limiter_for(closed_redis_url, "rs:rl:test:shop:orders", 100.0, 2)
    assert isinstance(limiter, RedisGcra)
    with caplog.at_level(logging.WARNING, logger="connectors.ratelimit"):
        start = time.monotonic()
        for _ in range(3):
            await limiter.acquire()  # 2 at once, then 1 at 100/s through the local limiter
        await limiter.penalise(0.05)
        await limiter.set_rate(50.0, 1)
        await limiter.acquire()
        assert time.monotonic() - start < 1.0
    assert sum("Redis unavailable" in r.getMessage() for r in caplog.records) == 1
    await limiter.aclose()


async def test_redis_is_tried_again_after_an_outage(closed_redis_url, redis_url, redis_prefix):
    key = f"{redis_prefix}:rl:shop:orders"
    limiter = RedisGcra(closed_redis_url, key, 100.0, 5, retry_redis_after_s=0.0)
    await limiter.acquire()  # fails over to the local limiter
    assert limiter._degraded
    await limiter.aclose()
    limiter.url = redis_url  # "Redis comes back"
    await limiter.acquire()
    assert not limiter._degraded
    client = limiter._redis()
    assert await client.exists(key) == 1
    await limiter.aclose()


def test_factory_and_key():
    assert limiter_key("retail-sync", "amazon", "orders") == "rs:rl:retail-sync:amazon:orders"
    for disabled in (None, "", "  ", "none", "None", "off"):
        assert not redis_enabled(disabled)
        assert isinstance(limiter_for(disabled, "k", 1.0, 1), LocalGcra)
    assert isinstance(limiter_for("redis://127.0.0.1:6379/0", "k", 1.0, 1), RedisGcra)
    assert isinstance(limiter_for(None, "k", 1.0, 1), Limiter)
