"""Warehouse agent and feed: fulfilment orders out, shipments and returned goods in.

The agent reads wms-requests (keyed by order_key; a command, or a ``WmsBatch`` of one partition's,
carried out order by order side by side, each order's in order, the answers sent together): a
release becomes a fulfilment order in the WMS
(idempotent on its reference: the order key, or ``<order_key>#bo<n>`` for backordered units
released when goods arrived) and a FulfilmentReleased event; a cancellation asks the WMS to stop
the order and its backorder releases and answers FulfilmentCancelled (ok, or "already shipped");
an expected return is announced. The feed (``wms`` ticks, ``wms_poll_interval_s``, agents.feeds)
turns the WMS's events into ShipmentReported and ReturnReceived on order-events. Without a WMS
configured, releases are skipped, cancellations are answered ok and announced returns count as
received, so the order flows still complete (and say so in their timeline).
"""

from __future__ import annotations

import asyncio
import functools
from datetime import datetime
from typing import Any

from retail_sync.agents.deps import AgentDeps
from retail_sync.agents.exceptions import record_exception
from retail_sync.agents.feeds import register_feed
from retail_sync.agents.guard import Record, finished_or_exit, guard, topic_name
from retail_sync.agents.outbox import Outbox
from retail_sync.agents.retry import call_with_retries
from retail_sync.connectors.contracts import WmsConnector, WmsEvent
from retail_sync.connectors.errors import PermanentError, RetryableError
from retail_sync.streams.commands import WmsBatch, WmsCancel, WmsCommand, WmsExpectReturn, WmsRelease
from retail_sync.streams.events import (
    FulfilmentCancelled,
    FulfilmentReleased,
    ReturnReceived,
    ShipmentReported,
)
from retail_sync.streams.models import ExceptionKind, ShipmentRecord, utcnow

FEED = "wms"
WMS_CONCURRENCY = 8  # orders of one record carried out side by side (each order's in order)


def register(ctx: AgentDeps) -> None:
    wms = ctx.wms_factory() if ctx.wms_factory else None

    @ctx.app.agent(ctx.topics.wms_requests, name=f"{ctx.settings.app_id}.warehouse")
    async def warehouse(stream: Any) -> None:
        async for record in stream:
            async with finished_or_exit("the warehouse agent's record"):
                outbox = Outbox(ctx.topics, ctx.settings.partitions)
                commands = record.commands if isinstance(record, WmsBatch) else [record]
                await carry_out_all(ctx, wms, commands, outbox)
                await outbox.flush()  # the answers, grouped per order partition; then the ack

    if wms is None:
        return

    async def handle(result: Any) -> list[Any]:
        sent = []
        for event in result.events:
            record = to_order_event(event)
            if record is not None:
                sent.append(await ctx.topics.order_events.send(key=record.order_key, value=record))
        return sent

    register_feed(ctx, FEED, ctx.settings.wms_poll_interval_s, wms, handle)


async def carry_out_all(ctx: AgentDeps, wms: WmsConnector | None, commands: list[WmsCommand],
                        outbox: Outbox) -> None:
    """One record's commands (a ``WmsBatch`` holds one partition's): each order's in order,
    different orders side by side, at most ``WMS_CONCURRENCY`` at a time."""
    by_order: dict[str, list[WmsCommand]] = {}
    for command in commands:
        by_order.setdefault(command.order_key, []).append(command)
    gate = asyncio.Semaphore(WMS_CONCURRENCY)

    async def one_order(mine: list[WmsCommand]) -> None:
        async with gate:
            for command in mine:
                await carry_out(ctx, wms, command, outbox)

    await asyncio.gather(*(one_order(c) for c in by_order.values()))


@guard(lambda ctx, wms, command, outbox: Record(payload=command.model_dump_json(),
                                          order_key=command.order_key,
                                          source_topic=topic_name(ctx.topics.wms_requests)))
async def carry_out(ctx: AgentDeps, wms: WmsConnector | None, command: WmsCommand,
                    outbox: Outbox) -> None:
    """Carry out one command; its answer goes to ``outbox`` (the record's); a bug becomes a
    record."""
    key, now = command.order_key, utcnow()
    try:
        if isinstance(command, WmsRelease):
            if wms is None:
                return
            shipping = command.shipping.model_dump(mode="json") if command.shipping else None
            details = {i: d.model_dump(mode="json") for i, d in command.line_details.items()}
            reference = await call_with_retries(lambda: wms.create_fulfilment_order(
                key, command.erp_sales_order, command.lines, command.ship_to,
                command.reference, shipping=shipping, line_details=details or None),
                ctx.settings)
            outbox.add(ctx.topics.order_events, key, FulfilmentReleased(
                order_key=key, wms_reference=reference, at=utcnow(), reference=command.reference))
        elif isinstance(command, WmsCancel):
            stopped, detail = True, "no warehouse configured: nothing to stop"
            if wms is not None:
                shipped = []
                for ref in [key, *command.references]:  # the order and its backorder releases
                    if not await call_with_retries(
                            functools.partial(wms.cancel_fulfilment_order, ref), ctx.settings):
                        shipped.append(ref)
                stopped = not shipped
                detail = "fulfilment stopped" if stopped else f"already shipped: {', '.join(shipped)}"
            outbox.add(ctx.topics.order_events, key, FulfilmentCancelled(
                order_key=key, ok=stopped, detail=detail, at=utcnow()))
        elif isinstance(command, WmsExpectReturn):
            if wms is None:
                outbox.add(ctx.topics.order_events, key, ReturnReceived(
                    order_key=key, refund_id=command.refund_id, at=now))
                return
            await call_with_retries(lambda: wms.expect_return(key, command.refund_id,
                                                              command.lines), ctx.settings)
    except (RetryableError, PermanentError) as exc:
        await record_exception(ctx, kind=ExceptionKind.OUTBOUND, exc=f"warehouse: {exc}",
                               payload=command.model_dump_json(), order_key=key,
                               source_topic=ctx.topics.wms_requests.get_topic_name())


def to_order_event(event: WmsEvent) -> ShipmentReported | ReturnReceived | None:
    at = _time(event.at) or utcnow()
    if event.kind == "shipment" and event.shipment is not None:
        s = event.shipment
        lines: dict[str, int] = {}
        for line in s.lines:
            lines[line.line_id] = lines.get(line.line_id, 0) + line.quantity
        return ShipmentReported(order_key=s.order_key, at=at, shipment=ShipmentRecord(
            shipment_id=s.shipment_id, lines=lines, carrier=s.carrier,
            tracking_number=s.tracking_number, shipped_at=_time(s.shipped_at) or at))
    if event.kind == "return_received" and event.return_id and event.order_key:
        return ReturnReceived(order_key=event.order_key, refund_id=event.return_id, at=at)
    return None


def _time(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return value if value.tzinfo else None
