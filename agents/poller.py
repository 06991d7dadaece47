"""Poller: asks polled channels (APIs, batch files) for new orders and puts them on orders-raw.

The leader's timer sends a PollTick per polled channel to poll-ticks (keyed by channel); the
poller agent, single writer of the poll-cursors table, polls from the stored cursor, writes every
order to orders-raw and waits for the broker's acknowledgements, lets the source acknowledge
(Walmart-style), and only then stores the new cursor. A crash in between polls the same orders
again; they are the same order keys, so nothing is duplicated downstream and nothing is skipped.
A throttled or failing channel skips its tick (its own rate limit is respected by the connector);
other channels are not delayed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from agents.exceptions import record_exception
from connectors.base import OrderSource, PolledOrder
from connectors.errors import PermanentError, RetryableError
from retail_sync.context import Context
from streams.models import ExceptionKind, PollTick, RawOrderMessage, order_key, utcnow

log = logging.getLogger(__name__)


def register(ctx: Context) -> None:
    sources: dict[str, OrderSource] = {}
    for name, plugin in ctx.channels.items():
        source = plugin.source(ctx.settings) if plugin.source else None
        if source is not None:
            sources[name] = source
    if not sources:
        return
    resume_at: dict[str, float] = {}

    @ctx.app.timer(ctx.settings.poll_interval_s, on_leader=True)
    async def tick() -> None:
        for channel in sources:
            await ctx.topics.poll_ticks.send(
                key=channel, value=PollTick(channel=channel, requested_at=utcnow()))

    @ctx.app.agent(ctx.topics.poll_ticks, name=f"{ctx.settings.app_id}.poller")
    async def poller(stream: Any) -> None:
        async for command in stream:
            source = sources.get(command.channel)
            if source is None or time.monotonic() < resume_at.get(command.channel, 0.0):
                continue
            pause = await poll_once(ctx, source)
            if pause:
                resume_at[command.channel] = time.monotonic() + pause

    @ctx.app.on_before_shutdown.connect  # type: ignore[misc]
    async def _close(sender: Any, **kwargs: Any) -> None:
        for source in sources.values():
            await source.close()


async def poll_once(ctx: Context, source: OrderSource) -> float | None:
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


async def _persist(ctx: Context, channel: str, orders: Any) -> None:
    """Write every polled order and wait until the broker has them all."""
    pending = [await ctx.topics.raw_orders.send(key=order_key(channel, o.marketplace_order_id),
                                                value=_raw(channel, o))
               for o in orders]
    await asyncio.gather(*pending)


def _raw(channel: str, order: PolledOrder) -> RawOrderMessage:
    return RawOrderMessage(channel=channel, topic="poll", delivery_id=order.delivery_id,
                           received_at=utcnow(), body=order.body)
