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

import functools
from collections.abc import Awaitable, Callable
from typing import Any, Concatenate, ParamSpec, TypedDict, TypeVar

from retail_sync.agents.deps import AgentDeps
from retail_sync.agents.exceptions import record_exception
from retail_sync.streams.models import ExceptionKind

P = ParamSpec("P")
R = TypeVar("R")


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
