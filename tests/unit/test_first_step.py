"""``retail_sync.first_step``: a coroutine's first step at once, its rest as a task (the record
hand-over in ``faust_fixes._drain_messages``)."""

from __future__ import annotations

import asyncio

import pytest

from retail_sync.first_step import Rest, first_step


async def test_a_coroutine_that_does_not_wait_is_done_in_its_first_step() -> None:
    done: list[str] = []

    async def hand_over() -> None:
        queue: asyncio.Queue[str] = asyncio.Queue(maxsize=1)
        queue.put_nowait("record")
        done.append(await queue.get())  # an item is there: no wait

    assert first_step(hand_over()) is None
    assert done == ["record"]


async def test_the_rest_of_a_coroutine_that_waits_goes_on_as_a_task() -> None:
    queue: asyncio.Queue[str] = asyncio.Queue(maxsize=1)
    queue.put_nowait("first")
    steps: list[str] = []

    async def hand_over() -> str:
        steps.append("before")
        await queue.put("second")  # full: waits for room
        steps.append("after")
        return "handed over"

    rest = first_step(hand_over())
    assert isinstance(rest, Rest) and steps == ["before"]
    task = asyncio.ensure_future(rest)
    await asyncio.sleep(0.01)
    assert not task.done()  # still waiting for room
    assert queue.get_nowait() == "first"
    assert await asyncio.wait_for(task, 1) == "handed over"
    assert steps == ["before", "after"] and queue.get_nowait() == "second"


async def test_cancelling_the_rest_cancels_the_coroutine_where_it_waits() -> None:
    """As a suspension beating a hand-over blocked on a full queue: the put is withdrawn."""
    queue: asyncio.Queue[str] = asyncio.Queue(maxsize=1)
    queue.put_nowait("first")
    seen: list[str] = []

    async def hand_over() -> None:
        try:
            await queue.put("second")
        except asyncio.CancelledError:
            seen.append("cancelled at its wait")
            raise

    rest = first_step(hand_over())
    assert rest is not None
    task = asyncio.ensure_future(rest)
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert seen == ["cancelled at its wait"]
    assert queue.get_nowait() == "first"
    await asyncio.sleep(0.01)
    assert queue.empty()  # the withdrawn put never lands


async def test_errors_come_out_where_they_happen() -> None:
    async def fails_at_once() -> None:
        raise ValueError("bad record")

    with pytest.raises(ValueError, match="bad record"):
        first_step(fails_at_once())

    async def fails_after_a_wait() -> None:
        await asyncio.sleep(0)
        raise KeyError("later")

    rest = first_step(fails_after_a_wait())
    assert rest is not None
    with pytest.raises(KeyError, match="later"):
        await asyncio.ensure_future(rest)
