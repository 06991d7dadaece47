"""Marketplace-outbound agents: carry out what the engine must tell a marketplace about an order
(seller cancellations, shipment confirmations with the channel's carrier codes, refunds), through
that channel's ChannelOutbound, with retries for transient errors. Every outcome goes back to the
order as a MarketplaceNotified event (its timeline shows it); a refusal or a channel we cannot
write to is also a sync exception, so nothing is dropped silently. Shipment and refund latency
(warehouse shipped / refund requested -> the marketplace took it) is observed here.

One agent per channel we write to, reading that channel's ``channel-commands.<channel>`` topic
(keyed by order_key), as the inventory pushers do: while a marketplace is unreachable its
circuit breaker makes its agent wait, and only that channel's commands wait behind it (in
Kafka); the other channels' agents go on. Commands of a channel with no outbound configured go
to the shared ``channel-commands`` topic, whose fallback agent turns each into a sync exception
("tell it by hand"); a command for a channel that has its own topic found there (written before
the channel had one, or an old exception replayed) is forwarded to that topic.

Concurrency: ``marketplace_command_concurrency`` actors per agent, 1 by default. Faust's
concurrent actors share one stream and take events in turn, so with more than one, two commands
of the same order (a shipment then a refund, a cancel then a ship) can reach the marketplace in
the wrong order; with one, each channel's commands go out in topic-partition order, which keeps
every order's commands in the order the order agent sent them. Isolation between channels comes
from the separate agents, not from actors.
"""

from __future__ import annotations

import time
from typing import Any

from retail_sync.agents.deps import AgentDeps
from retail_sync.agents.exceptions import record_exception
from retail_sync.agents.guard import Record, guard
from retail_sync.agents.retry import RetryPolicy, call_with_retries
from retail_sync.connectors.contracts import Refund, Shipment
from retail_sync.connectors.errors import PermanentError, RetryableError
from retail_sync.streams.commands import (
    ChannelCommand,
    MarketplaceCancel,
    MarketplaceRefund,
    MarketplaceShipment,
)
from retail_sync.streams.events import MarketplaceNotified
from retail_sync.streams.models import ExceptionKind, utcnow


def register(ctx: AgentDeps) -> None:
    for channel, topic in ctx.topics.commands.items():
        _register_channel(ctx, channel, topic)
    _register_fallback(ctx)


def _register_channel(ctx: AgentDeps, channel: str, topic: Any) -> None:
    source = topic.get_topic_name()

    async def marketplace_outbound(stream: Any) -> None:
        async for command in stream:
            await _guarded(ctx, command, source)

    ctx.app.agent(topic, name=f"{ctx.settings.app_id}.marketplace-outbound.{channel}",
                  concurrency=ctx.settings.marketplace_command_concurrency)(marketplace_outbound)


def _register_fallback(ctx: AgentDeps) -> None:
    topic = ctx.topics.channel_commands
    source = topic.get_topic_name()

    async def marketplace_outbound(stream: Any) -> None:
        async for command in stream:
            own = ctx.topics.commands.get(command.channel)
            if own is None:  # no outbound for this channel: an exception record, as always
                await _guarded(ctx, command, source)
                continue
            await _forward(ctx, command, source, own)  # its channel has its own topic now

    ctx.app.agent(topic, name=f"{ctx.settings.app_id}.marketplace-outbound",
                  concurrency=ctx.settings.marketplace_command_concurrency)(marketplace_outbound)


def _record(ctx: AgentDeps, command: ChannelCommand, source_topic: str, *_: Any) -> Record:
    return Record(payload=command.model_dump_json(), channel=command.channel,
                  order_key=command.order_key, source_topic=source_topic)


@guard(_record)
async def _guarded(ctx: AgentDeps, command: ChannelCommand, source_topic: str) -> None:
    await carry_out(ctx, command, source_topic)


@guard(_record)
async def _forward(ctx: AgentDeps, command: ChannelCommand, source_topic: str, own: Any) -> None:
    await own.send(key=command.order_key, value=command)


async def carry_out(ctx: AgentDeps, command: ChannelCommand, source_topic: str | None = None) -> None:
    """Carry out one command; ``source_topic`` (the topic it was read from, by default the one
    its channel's commands go to) is what its exception records name for a replay."""
    source = source_topic or ctx.topics.commands_for(command.channel).get_topic_name()
    breaker = ctx.breaker(command.channel)
    await breaker.wait_ready()  # the channel is down: its commands wait (in Kafka past these)
    if not isinstance(command, MarketplaceCancel):
        error = await carry_out_after_order(ctx, command, source)
    else:
        error = await _cancel(ctx, command, source)
    if error is not None and ("RetryableError" in error or "RateLimitedError" in error):
        breaker.record_failure()
    elif ctx.outbound.get(command.channel) is not None:
        breaker.record_success()
    ctx.metrics.circuit_open.labels(system=command.channel).set(int(breaker.state != "closed"))


async def _cancel(ctx: AgentDeps, command: MarketplaceCancel, source_topic: str) -> str | None:
    outbound = ctx.outbound.get(command.channel)
    what = ("the whole order" if command.whole_order else
            ", ".join(f"{ln.quantity} x {ln.sku} (line {ln.line_id})" for ln in command.lines))
    error: str | None = None
    started = time.perf_counter()
    if outbound is None:
        error = f"no outbound configured for {command.channel}: cancel it by hand"
    else:
        lines = command.lines
        try:
            await call_with_retries(lambda: outbound.cancel_lines(
                command.marketplace_order_id, lines, whole_order=command.whole_order,
                reason=command.reason), ctx.settings, policy=RetryPolicy.marketplace(ctx.settings))
        except (RetryableError, PermanentError) as exc:
            error = f"{type(exc).__name__}: {exc}"
        finally:
            ctx.metrics.outbound_request_seconds.labels(
                channel=command.channel, action="cancel").observe(time.perf_counter() - started)
    ctx.metrics.marketplace_commands.labels(channel=command.channel, action="cancel",
                                            outcome="ok" if error is None else "failed").inc()
    if error is not None:
        await record_exception(ctx, kind=ExceptionKind.OUTBOUND, exc=error,
                               payload=command.model_dump_json(), channel=command.channel,
                               order_key=command.order_key,
                               source_topic=source_topic)
    await ctx.topics.order_events.send(key=command.order_key, value=MarketplaceNotified(
        order_key=command.order_key, action="cancel", ok=error is None, at=utcnow(),
        detail=f"cancelled {what} ({command.reason})" if error is None else error))
    return error


async def carry_out_after_order(ctx: AgentDeps, command: MarketplaceShipment | MarketplaceRefund,
                                source_topic: str) -> str | None:
    outbound = ctx.outbound.get(command.channel)
    action = command.kind
    error: str | None = None
    started = time.perf_counter()
    if isinstance(command, MarketplaceShipment):
        reference = command.shipment.shipment_id
        what = (f"shipment {reference}: {command.shipment.carrier} "
                f"{command.shipment.tracking_number}")
        since = command.shipment.shipped_at
    else:
        reference = command.refund.refund_id
        what = f"refund {reference}: {command.refund.amount} {command.currency}"
        since = command.refund.requested_at
    lines = command.lines
    if outbound is None:
        error = f"no outbound configured for {command.channel}: tell it by hand ({what})"
    else:
        try:
            if isinstance(command, MarketplaceShipment):
                s = command.shipment
                shipment = Shipment(shipment_id=s.shipment_id, order_key=command.order_key,
                                    lines=lines, carrier=s.carrier,
                                    tracking_number=s.tracking_number,
                                    shipped_at=s.shipped_at.isoformat())
                await call_with_retries(lambda: outbound.confirm_shipment(
                    command.marketplace_order_id, shipment), ctx.settings,
                    policy=RetryPolicy.marketplace(ctx.settings))
            else:
                r = command.refund
                refund = Refund(refund_id=r.refund_id, lines=lines, amount=format(r.amount, "f"),
                                currency=command.currency, reason=r.reason, restock=r.restock)
                await call_with_retries(lambda: outbound.refund(
                    command.marketplace_order_id, refund), ctx.settings,
                    policy=RetryPolicy.marketplace(ctx.settings))
        except (RetryableError, PermanentError) as exc:
            error = f"{type(exc).__name__}: {exc}"
        finally:
            ctx.metrics.outbound_request_seconds.labels(
                channel=command.channel, action=action).observe(time.perf_counter() - started)
    ctx.metrics.marketplace_commands.labels(channel=command.channel, action=action,
                                            outcome="ok" if error is None else "failed").inc()
    now = utcnow()
    if error is None:
        flow = "shipment_to_marketplace" if action == "ship" else "refund_to_marketplace"
        ctx.metrics.flow_seconds.labels(flow=flow, channel=command.channel).observe(
            max(0.0, (now - since).total_seconds()))
    else:
        await record_exception(ctx, kind=ExceptionKind.OUTBOUND, exc=error,
                               payload=command.model_dump_json(), channel=command.channel,
                               order_key=command.order_key,
                               source_topic=source_topic)
    await ctx.topics.order_events.send(key=command.order_key, value=MarketplaceNotified(
        order_key=command.order_key, action=action, ok=error is None, at=now,
        reference=reference, detail=what if error is None else error))
    return error
