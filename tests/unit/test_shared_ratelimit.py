"""The GCRA limiter, shared through Redis by several workers, and its in-process twin."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from retail_sync.connectors.amazon.plan import AMAZON_PLANS
from retail_sync.connectors.ratelimit import (
    Budgets,
    Limiter,
    LocalGcra,
    RedisGcra,
    budgets_for,
    limiter_for,
    limiter_key,
)
from retail_sync.connectors.redis_support import redis_enabled
from retail_sync.settings import Settings

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


async def test_a_new_rate_keeps_the_calls_already_counted(make_pair: Pair):
    """A slow published plan (1 call/min, burst 3) replaced by the fast one the marketplace
    reports: the calls made under the old plan still count, but nobody waits a minute."""
    a, b = await make_pair(1 / 60, 3)
    await a.acquire()
    await b.acquire()
    await a.set_rate(20.0, 3)  # 2 of 3 used: one call free now, the next after 1/20 s
    assert await b.take_if_free() and not await a.take_if_free()
    started = time.monotonic()
    await a.acquire()
    assert 0.02 <= time.monotonic() - started < 0.5


async def test_occupy_adopts_a_fuller_bucket_for_every_worker(make_pair: Pair):
    a, b = await make_pair(10.0, 5)  # the marketplace says 8 calls are in its bucket
    await a.occupy(8)
    assert not await b.take_if_free()  # 8 > burst - 1: wait until it drained to 4
    started = time.monotonic()
    await b.acquire()
    assert 0.3 <= time.monotonic() - started < 0.8
    await a.occupy(0)  # an emptier bucket never gives calls back
    assert not await a.take_if_free()


async def test_budgets_follow_reports_and_count(redis_url: str, redis_prefix: str):
    """Two workers' Budgets of one channel on Redis: a rate one learns binds the other."""
    plans = {"getOrderItems": (1 / 60, 2)}
    one = Budgets("amazon", plans, redis_url=redis_url, app_id=redis_prefix)
    two = Budgets("amazon", plans, redis_url=redis_url, app_id=redis_prefix)
    try:
        await one.acquire("getOrderItems")
        await one.reported_rate("getOrderItems", 10.0)  # burst stays the plan's
        assert await two.take_if_free("getOrderItems")
        assert not await two.take_if_free("getOrderItems")
        await two.throttled("getOrderItems", 0.3)
        started = time.monotonic()
        await one.acquire("getOrderItems")
        assert time.monotonic() - started >= 0.25
        await one.acquire("unplanned")  # no plan: not limited, still counted
        assert one.stats()["unplanned"] == {"calls": 1, "throttled": 0, "waited_s": 0.0}
        assert two.stats()["getOrderItems"]["throttled"] == 1
        assert one.stats()["getOrderItems"]["waited_s"] >= 0.25
        assert one.shared("getOrderItems") and not one.shared("unplanned")
    finally:
        await one.aclose()
        await two.aclose()


def test_budgets_for_applies_settings_and_is_one_per_channel():
    settings = Settings(redis_url="none", app_id="rl-test",
                        rate_limits={"amazon:getOrders": (2.0, 4), "walmart:orders": (1.0, 1)})
    budgets = budgets_for(settings, "amazon", AMAZON_PLANS)
    assert budgets.plans["getOrders"] == (2.0, 4)
    assert budgets.plans["getOrderItems"] == AMAZON_PLANS["getOrderItems"]
    assert budgets_for(settings, "amazon", AMAZON_PLANS) is budgets  # poller and outbound share
    assert isinstance(budgets.limiter("getOrders"), LocalGcra)
    with pytest.raises(ValueError, match="channel:operation"):
        Settings(rate_limits={"getOrders": (1.0, 1)})
    with pytest.raises(ValueError, match="rate must be"):
        Settings(rate_limits={"amazon:getOrders": (0, 1)})


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
    with caplog.at_level(logging.WARNING, logger="retail_sync.connectors.ratelimit"):
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


async def test_rate_limit_metrics_are_exported():
    from prometheus_client import CollectorRegistry, generate_latest

    from retail_sync.metrics import RateLimitCollector

    budgets = Budgets("walmart", {"inventory": (1000.0, 5)})
    await budgets.acquire("inventory")
    await budgets.throttled("inventory", 0.001)
    registry = CollectorRegistry()
    registry.register(RateLimitCollector(lambda: [budgets]))
    text = generate_latest(registry).decode()
    labels = '{channel="walmart",operation="inventory"}'
    assert f"retail_sync_ratelimit_calls_total{labels} 1.0" in text
    assert f"retail_sync_ratelimit_throttled_total{labels} 1.0" in text
    assert f"retail_sync_ratelimit_shared{labels} 0.0" in text  # in-process: not shared
    assert f"retail_sync_ratelimit_wait_seconds_total{labels}" in text


# --- a 429 costs at most one plan interval (issue 12 item 4) ---------------------------------


def _next_free(limiter: LocalGcra, now: list[float], until: float, step: float = 0.5) -> float:
    """Walk the fake clock until a call is allowed; returns that moment (or ``until``)."""
    while now[0] < until and limiter.try_acquire() > 0:
        now[0] += step
    return now[0]


async def test_a_429_on_amazons_get_orders_costs_one_plan_interval():
    """getOrders: published 1/60 s, burst 20; Amazon's header turns it into 90 % and burst 19
    (what connectors.amazon.client adopts). A 429 at t=10 s: the next call at 70 s and the one after it a
    budget interval later. Before, the penalty was counted in the override's burst and the
    override lapsed after 60 s: the next call came at ~130 s (the issue saw 10, 130, 323 s)."""
    now = [0.0]
    limiter = LocalGcra(1 / 60, 20, override_ttl_s=60, clock=lambda: now[0])
    await limiter.set_rate(0.9 / 60, 19)
    assert limiter.try_acquire() == 0
    now[0] = 10.0
    await limiter.penalise(60.0)  # Amazon said 429; its bucket is empty
    first = _next_free(limiter, now, 1000)
    assert first == pytest.approx(70.0)
    second = _next_free(limiter, now, 1000)
    assert second == pytest.approx(70.0 + 60 / 0.9, abs=0.5)


async def test_the_refused_call_does_not_push_the_next_one_past_the_plan_interval():
    """Our budget spent (the 429'd call took a slot, the next one 67 s on at 90 % of the plan):
    Amazon's bucket is empty, one token 60 s later, and that is when the next call goes out."""
    now = [0.0]
    limiter = LocalGcra(1 / 60, 20, override_ttl_s=60, clock=lambda: now[0])
    await limiter.set_rate(0.9 / 60, 19)
    while limiter.try_acquire() == 0:  # the burst, the last call of it refused
        pass
    await limiter.penalise(60.0)
    assert _next_free(limiter, now, 1000) == pytest.approx(60.0)


async def test_an_override_lapsing_during_the_block_gives_one_call_then_the_plan():
    """The reported plan lapses while a 429 blocks: at the block's end one call, then the
    published plan's interval (the bucket counts as full then, whichever budget is in force),
    never a burst into an empty marketplace bucket."""
    now = [0.0]
    limiter = LocalGcra(1 / 60, 20, override_ttl_s=60, clock=lambda: now[0])
    await limiter.set_rate(0.9 / 60, 19)  # holds 200 s (3 calls of its rate)
    now[0] = 190.0
    await limiter.penalise(60.0)
    first = _next_free(limiter, now, 1000)
    assert first == pytest.approx(250.0)
    assert limiter.budget() == (1 / 60, 20)  # lapsed meanwhile
    assert _next_free(limiter, now, 1000) == pytest.approx(310.0)


async def test_a_lapsing_override_keeps_the_calls_counted():
    """A slow override lapses back to the published plan: the calls it counted stay counted
    (before, its TAT was read with the plan's interval and burst: a different number of calls)."""
    now = [0.0]
    limiter = LocalGcra(1.0, 5, override_ttl_s=10, clock=lambda: now[0])
    await limiter.set_rate(0.25, 5)  # holds 12 s (3 calls of its rate)
    for _ in range(5):
        assert limiter.try_acquire() == 0
    now[0] = 12.5  # lapsed; 12.5 s at 0.25/s drained 3.125 of the 5 calls: 1.875 still count
    assert [limiter.try_acquire() for _ in range(3)] == [0, 0, 0]  # up to 4.875 (burst 5)
    assert limiter.try_acquire() > 0


async def test_a_429_blocks_every_worker_then_one_call_then_one_interval(make_pair: Pair):
    """Redis and local: a penalty longer than the reported plan's life. The first call comes when
    the penalty ends, the second one (published) interval later, not at once."""
    a, b = await make_pair(1.0, 20, override_ttl_s=1.0)
    await a.set_rate(0.9, 19)  # lapses after 3.3 s, during the 4 s block
    await a.acquire()
    started = time.monotonic()
    await b.penalise(4.0)
    await a.acquire()
    first = time.monotonic() - started
    await b.acquire()
    second = time.monotonic() - started
    assert 3.9 <= first < 4.5, first
    assert second - first >= 0.9, (first, second)


@pytest.mark.parametrize("refused", [True, False])
async def test_a_pause_keeps_counted_calls_counted_a_429_forgets_them(refused: bool) -> None:
    """A 429 (refused) means the refused call, and any counted beyond it, never reached the
    marketplace: the bucket is full at the block's end, no fuller. A success that left the
    marketplace's bucket empty (Walmart's token count 0) is no such news: the calls counted
    ahead of it are on their way and each will take a token, so they stay counted (forgetting
    them let a paced Walmart push earn 429s)."""
    now = [1024.0]  # binary fractions throughout: exact arithmetic
    limiter = LocalGcra(8.0, 5, clock=lambda: now[0])  # interval 0.125 s, tolerance 0.5 s
    for _ in range(5):  # five calls in flight: TAT 0.625 s ahead
        assert limiter.try_acquire() == 0
    await limiter.penalise(0.0625, refused=refused)
    now[0] += 0.0625
    wait = limiter.try_acquire()
    if refused:
        assert wait == 0  # one call at the block's end, then one per interval
        assert limiter.try_acquire() == 0.125
    else:
        assert wait == 0.0625  # the five counted calls still hold the bucket
