"""The one guard every agent puts around the handling of one message: a bug (any Exception) in
it must neither kill the agent nor lose the message, so it becomes an ``internal`` sync-exception
record (counted in ``retail_sync_sync_exceptions_total``, replayable from the exceptions view)
and the agent goes on with the next message.

    @guard(lambda ctx, command: Record(payload=command.model_dump_json(),
                                       order_key=command.order_key,
                                       source_topic=topic_name(ctx.topics.wms_requests)))
    async def handle_one(ctx: AgentDeps, command: WmsCommand) -> None:
        ...

The guarded function takes the agent's deps first; ``describe`` is called with the same
arguments after a failure and says what the record names: the message (payload, keys) and the
topic it was read from. A guarded call returns what the function returned, or None when it
failed."""

from __future__ import annotations

import asyncio
import functools
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, Concatenate, ParamSpec, TypedDict, TypeVar

from retail_sync.agents.deps import AgentDeps
from retail_sync.agents.exceptions import record_exception
from retail_sync.streams.models import ExceptionKind

P = ParamSpec("P")
R = TypeVar("R")
log = logging.getLogger(__name__)

#: the status a worker exits with when a message's or batch's handling failed after the per-record
#: guard (EX_SOFTWARE): ``finished_or_exit``
EXIT_UNFINISHED = 70


class Record(TypedDict, total=False):
    """What an exception record says about the message (see ``record_exception``)."""

    payload: str | bytes | None
    channel: str | None
    order_key: str | None
    source_key: str | None
    source_topic: str | None


def topic_name(topic: Any) -> str:
    """A Faust topic's name."""
    return str(topic.get_topic_name())


def guard(
    describe: Callable[Concatenate[AgentDeps, P], Record],
) -> Callable[[Callable[Concatenate[AgentDeps, P], Awaitable[R]]],
              Callable[Concatenate[AgentDeps, P], Awaitable[R | None]]]:
    def decorate(
        handle: Callable[Concatenate[AgentDeps, P], Awaitable[R]],
    ) -> Callable[Concatenate[AgentDeps, P], Awaitable[R | None]]:
        @functools.wraps(handle)
        async def guarded(ctx: AgentDeps, /, *args: P.args, **kwargs: P.kwargs) -> R | None:
            try:
                return await handle(ctx, *args, **kwargs)
            except Exception as exc:  # noqa: BLE001 - keep the agent alive, keep the record
                await record_exception(ctx, kind=ExceptionKind.INTERNAL, exc=exc,
                                       **describe(ctx, *args, **kwargs))
                return None

        return guarded

    return decorate


@asynccontextmanager
async def finished_or_exit(what: str) -> AsyncIterator[None]:
    """Around an agent's handling of one message or batch: the guarded handling of each record,
    then what is not guarded per record, the batch's table writes and sends (``Outbox.flush``).
    If that raises, Faust would still acknowledge the input (a stream acks a record in its
    iteration's ``finally``, ``take_events`` a whole batch in its own), and the effects never
    sent would be lost: a backlog of big orders lost 54 of 60 that way to a record over the
    producer's size (tests/integration/test_big_orders.py). The worker exits at once instead,
    with ``EXIT_UNFINISHED``, before anything is acknowledged: its supervisor (compose
    ``restart:``, Kubernetes) starts it again and the input is read again from the last commit,
    where every handler is idempotent. A failure that repeats repeats the exit: loud (the
    restarts, the lag alert), never silent. Cancellation (the worker stopping) passes through."""
    try:
        yield
    except asyncio.CancelledError:
        raise
    except Exception:
        log.critical("%s failed after its records were handled: exiting (status %d) so that "
                     "they are read again, not acknowledged unfinished", what, EXIT_UNFINISHED,
                     exc_info=True)
        for handler in logging.getLogger().handlers:
            handler.flush()
        os._exit(EXIT_UNFINISHED)

