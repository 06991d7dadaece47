"""Webhook delivery dedupe shared by every worker through Redis."""

from __future__ import annotations

import asyncio
import logging

import pytest

from retail_sync.connectors.dedupe import DeliveryDeduper, RedisDeduper


@pytest.fixture
async def pair(redis_url: str, redis_prefix: str):
    one = RedisDeduper(redis_url, ttl_s=0.3, prefix=f"{redis_prefix}:wh")
    two = RedisDeduper(redis_url, ttl_s=0.3, prefix=f"{redis_prefix}:wh")
    yield one, two
    await one.aclose()
    await two.aclose()


async def test_first_seen_once_across_workers(pair):
    one, two = pair
    deduper: DeliveryDeduper = one
    assert await deduper.first_seen("d-1") is True
    assert await one.first_seen("d-1") is False
    assert await two.first_seen("d-1") is False
    assert await two.first_seen("d-2") is True


async def test_concurrent_deliveries_only_one_wins(pair):
    one, two = pair
    results = await asyncio.gather(*(w.first_seen("d-race") for w in (one, two) * 5))
    assert results.count(True) == 1


async def test_forget_lets_a_retry_through_on_any_worker(pair):
    one, two = pair
    assert await one.first_seen("d-3") is True
    await one.forget("d-3")
    assert await two.first_seen("d-3") is True
    assert await one.first_seen("d-3") is False


async def test_entries_expire_after_the_ttl(pair):
    one, two = pair
    assert await one.first_seen("d-4") is True
    await asyncio.sleep(0.4)
    assert await two.first_seen("d-4") is True


async def test_unreachable_redis_falls_back_in_process(closed_redis_url: str, caplog):
    deduper = RedisDeduper(closed_redis_url, ttl_s=60, prefix="rs:test:wh")
    with caplog.at_level(logging.WARNING, logger="retail_sync.connectors.dedupe"):
        assert await deduper.first_seen("d-5") is True
        assert await deduper.first_seen("d-5") is False
        await deduper.forget("d-5")
        assert await deduper.first_seen("d-5") is True
    assert sum("Redis unavailable" in r.getMessage() for r in caplog.records) == 1
    await deduper.aclose()


def test_ttl_must_be_positive():
    with pytest.raises(ValueError, match="ttl"):
        RedisDeduper("redis://127.0.0.1:6379/0", ttl_s=0)


async def test_claim_is_pending_until_confirmed_then_done(redis_url: str, redis_prefix: str):
    """Worker one claims a delivery and writes it to Kafka; meanwhile worker two gets the retry
    (pending: 503, the sender retries); after the confirmation the retry is a duplicate."""
    one = RedisDeduper(redis_url, ttl_s=30, prefix=f"{redis_prefix}:claim")
    two = RedisDeduper(redis_url, ttl_s=30, prefix=f"{redis_prefix}:claim")
    try:
        assert await one.claim("d1") == "new"
        assert await two.claim("d1") == "pending"
        await one.confirm("d1")
        assert await two.claim("d1") == "done"
    finally:
        await one.aclose()
        await two.aclose()


async def test_a_claim_never_confirmed_expires_so_the_retry_is_accepted(
        redis_url: str, redis_prefix: str):
    """The worker died between the claim and the broker's ack: nothing may be lost."""
    dead = RedisDeduper(redis_url, ttl_s=30, prefix=f"{redis_prefix}:dead", pending_ttl_s=0.2)
    alive = RedisDeduper(redis_url, ttl_s=30, prefix=f"{redis_prefix}:dead", pending_ttl_s=0.2)
    try:
        assert await dead.claim("d2") == "new"
        assert await alive.claim("d2") == "pending"
        await asyncio.sleep(0.3)
        assert await alive.claim("d2") == "new"
    finally:
        await dead.aclose()
        await alive.aclose()


async def test_a_busy_pool_is_waited_for_not_a_reason_to_fall_back(redis_url: str,
                                                                   redis_prefix: str):
    """400 claims at once through a pool of 4 connections: each waits for a connection; none
    falls back to this process (redis-py's default pool raised MaxConnectionsError past 100)."""
    one = RedisDeduper(redis_url, ttl_s=30, prefix=f"{redis_prefix}:busy", max_connections=4,
                       pool_timeout_s=10)
    two = RedisDeduper(redis_url, ttl_s=30, prefix=f"{redis_prefix}:busy", max_connections=4,
                       pool_timeout_s=10)
    try:
        ids = [f"d{i}" for i in range(200)]
        answers = await asyncio.gather(*(w.claim(i) for i in ids for w in (one, two)))
        assert answers.count("new") == 200  # one claim per id won, across both "workers"
        assert one.fallbacks == {} and two.fallbacks == {}
    finally:
        await one.aclose()
        await two.aclose()


async def test_every_fallback_is_counted_with_its_reason(redis_url: str, redis_prefix: str,
                                                         closed_redis_url: str):
    seen: list[str] = []
    busy = RedisDeduper(redis_url, ttl_s=30, prefix=f"{redis_prefix}:held", max_connections=1,
                        pool_timeout_s=0.2, timeout_s=5, on_fallback=seen.append)
    holder = asyncio.ensure_future(busy._redis().blpop([f"{redis_prefix}:never"], timeout=2))
    await asyncio.sleep(0.1)  # the pool's only connection is now held for 2 s
    try:
        assert await busy.claim("x1") == "new"  # from the in-process fallback
        assert await busy.claim("x1") == "done"
        assert busy.fallbacks == {"pool_exhausted": 2} and seen == ["pool_exhausted"] * 2
    finally:
        await holder
        await busy.aclose()
    down = RedisDeduper(closed_redis_url, ttl_s=30, on_fallback=seen.append)
    try:
        await down.claim("x2")
        await down.confirm("x2")
        assert down.fallbacks == {"connection": 2}
    finally:
        await down.aclose()
