"""Redis commands of concurrent callers sent as pipelines (connectors/redis_batch.py), against a
real Redis: each caller gets its own command's answer or error, nothing waits forever."""

from __future__ import annotations

import asyncio

import pytest
from redis.exceptions import ResponseError

from retail_sync.connectors.redis_batch import Pipeliner
from retail_sync.connectors.redis_support import REDIS_ERRORS, make_client


@pytest.fixture
async def client(redis_url: str):
    client = make_client(redis_url)
    yield client
    await client.aclose()


async def test_concurrent_commands_share_pipelines_and_each_gets_its_answer(client, redis_prefix):
    pipe = Pipeliner(lambda: client)
    keys = [f"{redis_prefix}:k{i}" for i in range(100)]
    created = await asyncio.gather(*(pipe.call("set", k, i, nx=True) for i, k in enumerate(keys)))
    assert created == [True] * 100
    values = await asyncio.gather(*(pipe.call("get", k) for k in reversed(keys)))
    assert values == [str(i).encode() for i in reversed(range(100))]  # each its own, in order
    assert pipe.commands == 200
    assert pipe.pipelines <= 2 * pipe.max_in_flight  # together, not one round trip each


async def test_set_nx_race_in_one_pipeline_has_one_winner(client, redis_prefix):
    pipe = Pipeliner(lambda: client)
    key = f"{redis_prefix}:race"
    won = await asyncio.gather(*(pipe.call("set", key, n, nx=True) for n in range(20)))
    assert won.count(True) == 1 and won.count(None) == 19
    assert await client.get(key) == str(won.index(True)).encode()  # the first sent wins


async def test_a_failing_command_fails_only_its_caller(client, redis_prefix):
    pipe = Pipeliner(lambda: client)
    text, counter = f"{redis_prefix}:text", f"{redis_prefix}:n"
    await client.set(text, "not a number")
    results = await asyncio.gather(pipe.call("incr", counter), pipe.call("incr", text),
                                   pipe.call("incr", counter), return_exceptions=True)
    assert results[0] == 1 and results[2] == 2
    assert isinstance(results[1], ResponseError)
    assert pipe.pipelines == 1


async def test_max_commands_splits_a_burst(client, redis_prefix):
    pipe = Pipeliner(lambda: client, max_in_flight=1, max_commands=10)
    keys = [f"{redis_prefix}:b{i}" for i in range(95)]
    assert await asyncio.gather(*(pipe.call("set", k, 1) for k in keys)) == [True] * 95
    assert pipe.pipelines == 10 and pipe.commands == 95


async def test_unreachable_redis_fails_every_caller_fast(closed_redis_url: str):
    client = make_client(closed_redis_url, timeout_s=0.3)
    pipe = Pipeliner(lambda: client)
    results = await asyncio.wait_for(asyncio.gather(
        *(pipe.call("set", f"k{i}", 1) for i in range(10)), return_exceptions=True), 5)
    assert all(isinstance(r, REDIS_ERRORS) for r in results), results
    await client.aclose()


async def test_a_caller_cancelled_before_the_send_is_left_out(client, redis_prefix):
    pipe = Pipeliner(lambda: client)
    gone, kept = f"{redis_prefix}:gone", f"{redis_prefix}:kept"
    cancelled = asyncio.ensure_future(pipe.call("set", gone, 1))
    await asyncio.sleep(0)  # queued, not yet sent
    cancelled.cancel()
    assert await pipe.call("set", kept, 1) is True
    with pytest.raises(asyncio.CancelledError):
        await cancelled
    assert await client.exists(gone) == 0 and await client.exists(kept) == 1
    assert pipe.commands == 1


async def test_a_command_that_cannot_be_queued_fails_its_batch_not_forever(client):
    pipe = Pipeliner(lambda: client)
    results = await asyncio.wait_for(asyncio.gather(
        pipe.call("no_such_command", "k"), pipe.call("ping"), return_exceptions=True), 5)
    assert all(isinstance(r, AttributeError) for r in results), results
    assert await pipe.call("ping") is True  # the pipeliner goes on


def test_bounds_are_checked():
    with pytest.raises(ValueError, match="must be >= 1"):
        Pipeliner(lambda: None, max_in_flight=0)
