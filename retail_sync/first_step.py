"""A coroutine's first step run at once, and only the rest of it, if any, run as a task.

Faust hands each fetched record to its streams with ``wait_first(callback(message),
suspend_flow.wait())`` (``retail_sync.faust_fixes._drain_messages``): four tasks (the hand-over,
the suspension, the consumer's stop and crash events) and an ``asyncio.wait`` per record, so that
a rebalance's suspension can cut short a hand-over blocked on a full stream queue. Nearly every
hand-over finishes without blocking (the conductor decodes the record and puts it in a queue with
room), and the tasks cost more than the hand-over: ~8 % of a worker with a standby replica, whose
partner's changelog records come this way one by one (docs/BENCHMARKS.md, session 31).

``first_step(coro)`` runs the coroutine until it first waits: finished, it returns ``None``;
waiting, it returns the rest (``Rest``: an awaitable that goes on from there, for a task), which
the caller races against the suspension as before. The rest gets the future the coroutine waits
on, exactly as a task running it from the start would have, so cancelling that task (the
suspension won) throws ``CancelledError`` in where the coroutine waits.

The first step runs in the caller's task: the hand-over (Faust's conductor) must not use the
current task's identity across the wait (``asyncio.timeout``) and does not.
"""

from __future__ import annotations

from collections.abc import Coroutine, Generator
from typing import Any


class Rest:
    """The rest of a coroutine that waited on ``waiting`` on its first step."""

    __slots__ = ("coro", "waiting")

    def __init__(self, coro: Coroutine[Any, Any, Any], waiting: Any) -> None:
        self.coro, self.waiting = coro, waiting

    def __await__(self) -> Generator[Any, Any, Any]:
        coro, waiting = self.coro, self.waiting
        while True:
            try:
                sent = yield waiting  # the task waits on it (the coroutine's future, or None)
            except GeneratorExit:
                coro.close()
                raise
            except BaseException as exc:  # the task's cancellation (or a thrown error), passed on
                try:
                    waiting = coro.throw(exc)
                except StopIteration as done:
                    return done.value
            else:
                try:
                    waiting = coro.send(sent)
                except StopIteration as done:
                    return done.value


def first_step(coro: Coroutine[Any, Any, Any]) -> Rest | None:
    """Run ``coro`` until it first waits: None when it finished; else its rest. Its exception,
    if it raises before waiting, is raised here."""
    try:
        waiting = coro.send(None)
    except StopIteration:
        return None
    return Rest(coro, waiting)
