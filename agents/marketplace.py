"""Marketplace-outbound agent: carries out what the engine must tell a marketplace about an order
(seller cancellations for lack of stock, from the stock decision), through that channel's
ChannelOutbound, with retries for transient errors. Every outcome goes back to the order as a
MarketplaceNotified event (its timeline shows it); a refusal or a channel we cannot write to is
also a sync exception, so nothing is dropped silently.
"""

from __future__ import annotations

import time
from typing import Any

from agents.exceptions import record_exception
from agents.retry import call_with_retries
from connectors.base import CancelLine
from connectors.errors import PermanentError, RetryableError
from retail_sync.context import Context
from streams.models import ExceptionKind, MarketplaceNotified, utcnow
from streams.stock import MarketplaceCancel


def register(ctx: Context) -> None:
    @ctx.app.agent(ctx.topics.channel_commands, name=f"{ctx.settings.app_id}.marketplace-outbound",
                   concurrency=4)
    async def marketplace_outbound(stream: Any) -> None:
        async for command in stream:
            try:
                await carry_out(ctx, command)
            except Exception as exc:  # noqa: BLE001 - keep the agent alive, keep the record
                await record_exception(
                    ctx, kind=ExceptionKind.INTERNAL, exc=exc, payload=command.model_dump_json(),
                    channel=command.channel, order_key=command.order_key,
                    source_topic=ctx.topics.channel_commands.get_topic_name())


async def carry_out(ctx: Context, command: MarketplaceCancel) -> None:
    outbound = ctx.outbound.get(command.channel)
    what = ("the whole order" if command.whole_order else
            ", ".join(f"{ln.quantity} x {ln.sku} (line {ln.line_id})" for ln in command.lines))
    error: str | None = None
    started = time.perf_counter()
    if outbound is None:
        error = f"no outbound configured for {command.channel}: cancel it by hand"
    else:
        lines = [CancelLine(line_id=ln.line_id, sku=ln.sku, quantity=ln.quantity)
                 for ln in command.lines]
        try:
            await call_with_retries(lambda: outbound.cancel_lines(
                command.marketplace_order_id, lines, whole_order=command.whole_order,
                reason=command.reason), ctx.settings)
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
                               source_topic=ctx.topics.channel_commands.get_topic_name())
    await ctx.topics.order_events.send(key=command.order_key, value=MarketplaceNotified(
        order_key=command.order_key, action="cancel", ok=error is None, at=utcnow(),
        detail=f"cancelled {what} ({command.reason})" if error is None else error))
