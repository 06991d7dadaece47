"""Poller: asks polled channels (APIs, batch files) for new orders and puts them on orders-raw.

The leader's timer sends a PollTick per polled channel to poll-ticks (keyed by channel). Each
channel has its own poller agent (``<app>.poller-<channel>``, every one reads poll-ticks and
keeps its own channel's ticks), so a channel that waits for its rate limit (Amazon's getOrders:
one call a minute) never delays another one. A poll is single flight: the agent runs two actors,
one polls while the other drops the ticks that arrive meanwhile (and ticks older than
``STALE_TICKS`` poll intervals, e.g. queued while the worker was down), so ticks never queue up
behind a slow poll. The polling actor (single writer of the channel's entry in poll-cursors; the
table and poll-ticks are both keyed by channel) polls from the stored cursor, writes every
order to orders-raw and waits for the broker's acknowledgements, lets the source acknowledge
(Walmart-style), and only then stores the new cursor. A crash in between polls the same orders
again; they are the same order keys, so nothing is duplicated downstream and nothing is skipped.

A throttled or failing channel skips its ticks until the pause it was given has passed (its own
rate limit is respected by the connector, which may also sleep in its limiter). That sleep, or
any other wait of a poll, is cancelled as soon as the worker stops or a rebalance starts (checked
every ``STOP_CHECK_S``): the cursor is not moved, the next tick (here or on the partition's new
owner) polls again from it, and Faust's shutdown, which waits for every event in progress, is
not held up by a limiter sleep.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

from retail_sync.agents.deps import AgentDeps
from retail_sync.agents.exceptions import record_exception
from retail_sync.connectors.contracts import OrderSource, PolledOrder
from retail_sync.connectors.errors import PermanentError, RetryableError
from retail_sync.streams.commands import PollTick
from retail_sync.streams.models import ExceptionKind, RawOrderMessage, order_key, utcnow

log = logging.getLogger(__name__)

STOP_CHECK_S = 0.25  # how often a running poll looks whether the worker is stopping
STALE_TICKS = 3  # a tick older than this many poll intervals (at least 10 s) is dropped


def register(ctx: AgentDeps) -> None:
    sources: dict[str, OrderSource] = {}
    for name, plugin in ctx.channels.items():
        source = plugin.source(ctx.settings) if plugin.source else None
        if source is not None:
            sources[name] = source
    if not sources:
        return

    @ctx.app.timer(ctx.settings.poll_interval_s, on_leader=True)  # type: ignore[untyped-decorator]  # Faust: @no_type_check
    async def tick() -> None:
        for channel in sources:
            await ctx.topics.poll_ticks.send(
                key=channel, value=PollTick(channel=channel, requested_at=utcnow()))

    for source in sources.values():
        _register_channel(ctx, ChannelPoller(ctx, source))

    @ctx.app.on_before_shutdown.connect  # type: ignore[arg-type]  # mode: its SignalHandlerT accepts no handler
    async def _close(sender: Any, **kwargs: Any) -> None:
        for source in sources.values():
            await source.close()


def _register_channel(ctx: AgentDeps, channel_poller: ChannelPoller) -> None:
    async def poller(stream: Any) -> None:
        async for command in stream:
            if command.channel == channel_poller.channel:
                await channel_poller.on_tick(command)

    # two actors: one polls, the other drops the ticks that arrive meanwhile
    ctx.app.agent(ctx.topics.poll_ticks, concurrency=2,
                  name=f"{ctx.settings.app_id}.poller-{channel_poller.channel}")(poller)


class SingleFlight:
    """One poll at a time for the ticks of ``name`` (a polled channel or a change feed): a tick
    that arrives while a poll runs, one older than ``STALE_TICKS`` intervals, or one during a
    throttle pause is dropped (counted in retail_sync_polls_total as skipped_busy,
    skipped_stale); the running poll is cancelled when the worker stops or rebalances. The
    agent reading the ticks runs two actors (``concurrency=2``) so that the idle one drains the
    ticks while the other polls: they never queue in poll-ticks behind a slow poll."""

    def __init__(self, ctx: AgentDeps, name: str, poll: Callable[[], Awaitable[float | None]],
                 interval_s: float) -> None:
        self.ctx, self.channel, self.poll = ctx, name, poll
        self.busy = False
        self.resume_at = 0.0
        self.stale_after = timedelta(seconds=max(10.0, STALE_TICKS * interval_s))

    def _skip(self, command: PollTick) -> str | None:
        """Why this tick is not polled (None: poll now)."""
        if self.busy:
            return "skipped_busy"
        if utcnow() - command.requested_at > self.stale_after:
            return "skipped_stale"
        if time.monotonic() < self.resume_at:
            return "skipped_paused"
        if _stopping(self.ctx.app):
            return "skipped_stopping"
        return None

    async def on_tick(self, command: PollTick) -> None:
        skip = self._skip(command)
        if skip is not None:
            if skip != "skipped_paused":  # a paused channel skips every tick: not worth a count
                self.ctx.metrics.polls.labels(channel=self.channel, outcome=skip).inc()
            return
        self.busy = True  # no await since the check: the other actor cannot get in between
        try:
            pause = await self._run(self.poll())
        finally:
            self.busy = False
        if pause:
            self.resume_at = time.monotonic() + pause

    async def _run(self, poll: Awaitable[float | None]) -> float | None:
        """Run one poll as a task (it inherits the tick's event context, so its table write
        goes to the tick's partition); cancel it when the worker stops or rebalances."""
        task = asyncio.ensure_future(poll)
        try:
            while True:
                done, _ = await asyncio.wait({task}, timeout=STOP_CHECK_S)
                if done:
                    return task.result()
                if _stopping(self.ctx.app) or getattr(self.ctx.app, "rebalancing", False):
                    break
        except asyncio.CancelledError:
            task.cancel()
            raise
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        self.ctx.metrics.polls.labels(channel=self.channel, outcome="cancelled").inc()
        log.warning("poll of %s cancelled (worker stopping or rebalancing); the cursor is unchanged",
                 self.channel)
        return None


class ChannelPoller(SingleFlight):
    """One channel's polls: single flight, paused after a throttle, cancelled on stop."""

    def __init__(self, ctx: AgentDeps, source: OrderSource) -> None:
        super().__init__(ctx, source.channel, lambda: poll_once(ctx, source),
                         ctx.settings.poll_interval_s)
        self.source = source


def _stopping(app: Any) -> bool:
    return bool(getattr(app, "should_stop", False))


async def poll_once(ctx: AgentDeps, source: OrderSource) -> float | None:
    """One poll of one channel; returns seconds to wait before the next one when throttled."""
    channel = source.channel
    state = dict(ctx.tables.cursors.get(channel) or {})
    try:
        result = await source.poll(state.get("cursor"))
        await _persist(ctx, channel, result.orders)
        await source.after_persist(result.orders)
    except RetryableError as exc:
        ctx.metrics.polls.labels(channel=channel, outcome="retry").inc()
        log.warning("poll of %s postponed: %s", channel, exc)
        return exc.retry_after
    except PermanentError as exc:
        ctx.metrics.polls.labels(channel=channel, outcome="permanent").inc()
        await record_exception(ctx, kind=ExceptionKind.POLL, exc=exc, payload=exc.body,
                               channel=channel, source_key=channel)
        return ctx.settings.poll_interval_s * 10
    ctx.metrics.polls.labels(channel=channel, outcome="ok").inc()
    state.update(
        cursor=result.cursor or state.get("cursor"), polled_at=utcnow().isoformat(),
        orders=int(state.get("orders", 0)) + len(result.orders),
    )
    ctx.tables.cursors[channel] = state
    return result.pause_s


async def _persist(ctx: AgentDeps, channel: str, orders: Any) -> None:
    """Write every polled order and wait until the broker has them all."""
    pending = [await ctx.topics.raw_orders.send(key=order_key(channel, o.marketplace_order_id),
                                                value=_raw(channel, o))
               for o in orders]
    await asyncio.gather(*pending)


def _raw(channel: str, order: PolledOrder) -> RawOrderMessage:
    return RawOrderMessage(channel=channel, topic="poll", delivery_id=order.delivery_id,
                           received_at=utcnow(), body=order.body)
