"""Polling a system's change feed on the leader's timer, restartably.

Used for the ERP's stock positions (``erp-stock``), the warehouse's events (``wms``) and the
sales orders the ERP changed itself (``erp-orders``). The leader's timer sends a PollTick with
the feed's name to poll-ticks every ``interval``; the feed's agent (the single writer of its
cursor in poll-cursors) polls from the stored cursor, hands the result to ``handle`` (which sends
records and returns the broker's acknowledgements to wait for), waits for them, and only then
stores the new cursor. A crash repeats work, never skips it: every consumer of these records is
idempotent.

Polls are single flight (``agents.poller.SingleFlight``, as for the polled channels): ticks that
arrive while a poll runs (a slow ERP or WMS) and stale ones are dropped, never queued in
poll-ticks to burst out afterwards; a throttled feed skips its ticks until its pause is over.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from retail_sync.agents.deps import AgentDeps
from retail_sync.agents.exceptions import record_exception
from retail_sync.agents.poller import SingleFlight
from retail_sync.connectors.errors import PermanentError, RetryableError
from retail_sync.streams.commands import PollTick
from retail_sync.streams.models import ExceptionKind, utcnow

log = logging.getLogger(__name__)

Handle = Callable[[Any], Awaitable[Sequence[Awaitable[Any]]]]


def register_feed(ctx: AgentDeps, name: str, interval_s: float, feed: Any, handle: Handle) -> None:
    """``feed.poll(cursor)`` returns a result with ``.cursor``; ``handle(result)`` sends it on."""
    flight = SingleFlight(ctx, name, lambda: poll_once(ctx, name, feed, handle, interval_s),
                          interval_s)

    @ctx.app.timer(  # type: ignore[untyped-decorator]  # Faust: @no_type_check
        interval_s, on_leader=True, name=f"{ctx.settings.app_id}.{name}-tick")
    async def tick() -> None:
        await ctx.topics.poll_ticks.send(key=name, value=PollTick(channel=name,
                                                                  requested_at=utcnow()))

    async def poll_agent(stream: Any) -> None:
        async for command in stream:
            if command.channel == name:
                await flight.on_tick(command)

    # two actors: one polls, the other drops the ticks that arrive meanwhile
    ctx.app.agent(ctx.topics.poll_ticks, concurrency=2,
                  name=f"{ctx.settings.app_id}.{name}-feed")(poll_agent)

    @ctx.app.on_before_shutdown.connect  # type: ignore[arg-type]  # mode: its SignalHandlerT accepts no handler
    async def _close(sender: Any, **kwargs: Any) -> None:
        await feed.close()


async def poll_once(ctx: AgentDeps, name: str, feed: Any, handle: Handle,
                    interval_s: float) -> float | None:
    state = dict(ctx.tables.cursors.get(name) or {})
    try:
        result = await feed.poll(state.get("cursor"))
        sent = await handle(result)
        await asyncio.gather(*sent)
    except RetryableError as exc:
        ctx.metrics.polls.labels(channel=name, outcome="retry").inc()
        log.warning("%s feed postponed: %s", name, exc)
        return exc.retry_after
    except PermanentError as exc:
        ctx.metrics.polls.labels(channel=name, outcome="permanent").inc()
        await record_exception(ctx, kind=ExceptionKind.POLL, exc=exc, payload=exc.body,
                               source_key=name)
        return interval_s * 10
    ctx.metrics.polls.labels(channel=name, outcome="ok").inc()
    if result.cursor != state.get("cursor") or not state:
        state.update(cursor=result.cursor or state.get("cursor"), polled_at=utcnow().isoformat(),
                     records=int(state.get("records", 0)) + len(sent))
        ctx.tables.cursors[name] = state
    return None
