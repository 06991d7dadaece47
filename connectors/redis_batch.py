"""Redis commands awaited at the same moment go to Redis together, as one pipeline (issue 16).

A webhook costs the worker two Redis commands (the dedupe's claim and confirm,
connectors/dedupe.py). Each command on its own is a round trip through redis-py's connection
pool: ~60-90 us of the worker's CPU on this machine, against ~20-35 us per command when the
same commands travel as one pipeline. Under load many webhooks are in flight at once, so their
commands meet: ``Pipeliner.call`` queues a command and awaits its own answer; a sender task
takes what is queued (after one turn of the event loop, so the callers resumed in the same turn
add theirs) and sends it as one non-transactional pipeline on one pooled connection. At most
``max_in_flight`` pipelines are out at once; what comes meanwhile waits for the next, so the
busier the worker, the larger the pipelines. A lone command waits one turn of the loop.

What does not change: each command is the command it was (a pipeline is not a transaction;
Redis runs them in the order sent, one at a time, as it runs commands of separate connections),
each caller gets its own answer or its own command's error (``raise_on_error=False``), and a
pipeline that fails as a whole (Redis down, timeout, no pooled connection) fails every command
in it with that error, which the callers handle as before (connectors/dedupe.py falls back to
this process). A caller cancelled while its command waits is left out of the pipeline; one
cancelled after it was sent just does not hear the answer.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

#: commands in one pipeline at most (more wait for the next one)
MAX_COMMANDS = 256


class Pipeliner:
    """Sends the commands of concurrent callers as pipelines of ``client_of()`` (see the module
    docstring)."""

    def __init__(self, client_of: Callable[[], Any], *, max_in_flight: int = 4,
                 max_commands: int = MAX_COMMANDS) -> None:
        if max_in_flight < 1 or max_commands < 1:
            raise ValueError("max_in_flight and max_commands must be >= 1")
        self._client_of = client_of
        self.max_in_flight, self.max_commands = max_in_flight, max_commands
        self._queue: list[tuple[str, tuple[Any, ...], dict[str, Any], asyncio.Future[Any]]] = []
        self._senders: set[asyncio.Task[None]] = set()
        #: pipelines sent and commands in them (for tests and diagnosis)
        self.pipelines = self.commands = 0

    async def call(self, command: str, *args: Any, **kwargs: Any) -> Any:
        """``client.<command>(*args, **kwargs)``'s answer, sent in a pipeline with the commands
        of the other callers of the moment."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._queue.append((command, args, kwargs, future))
        self._start()
        return await future

    def _start(self) -> None:
        if self._queue and len(self._senders) < self.max_in_flight:
            task = asyncio.get_running_loop().create_task(self._send())
            self._senders.add(task)
            task.add_done_callback(self._sent)

    def _sent(self, task: asyncio.Task[None]) -> None:
        self._senders.discard(task)
        if task.cancelled():  # the loop is closing: the waiting callers are cancelled too
            self._fail_queued(None)
        elif task.exception() is not None:  # a bug: nobody may wait forever
            self._fail_queued(task.exception())
        else:
            self._start()  # what came while the pipelines were out

    def _fail_queued(self, exc: BaseException | None) -> None:
        """Every queued caller gets ``exc`` (None: is cancelled)."""
        queued, self._queue = self._queue, []
        for *_, future in queued:
            if future.done():
                continue
            if exc is None:
                future.cancel()
            else:
                future.set_exception(exc)

    async def _send(self) -> None:
        await asyncio.sleep(0)  # the callers resumed in this turn of the loop add theirs
        batch = [item for item in self._queue[:self.max_commands] if not item[3].done()]
        del self._queue[:self.max_commands]
        if not batch:
            return
        self.pipelines += 1
        self.commands += len(batch)
        try:  # from here every caller of the batch gets an answer or an error, whatever happens
            pipe = self._client_of().pipeline(transaction=False)
            for command, args, kwargs, _ in batch:
                getattr(pipe, command)(*args, **kwargs)
            results = await pipe.execute(raise_on_error=False)
        except asyncio.CancelledError:
            for *_, future in batch:
                future.cancel()
            raise
        except Exception as exc:  # noqa: BLE001 - every caller gets the pipeline's error
            for *_, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        for (*_, future), result in zip(batch, results, strict=True):
            if future.done():
                continue
            if isinstance(result, Exception):
                future.set_exception(result)
            else:
                future.set_result(result)
