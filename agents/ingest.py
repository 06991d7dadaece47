"""Ingest agent: raw channel deliveries -> canonical order events.

Reads orders-raw (key channel:marketplace order id), maps with the channel's mapper, and emits
OrderReceived on order-events keyed by order_key. A delivery that cannot be mapped becomes a
sync-exception record with the reason and the delivery as it was read (the ``RawOrderMessage``,
whose ``body`` is the verbatim body); the agent goes on. Keeping the whole message (not the bare
body) makes a ``mapping`` exception replayable: ``retail-sync exceptions replay`` /
``POST /exceptions/replay`` put it back on orders-raw, and it is mapped again under the rules then
in force (ARCHITECTURE §5f.4). The validation rules come from this worker's settings.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import orjson

from retail_sync.agents.exceptions import record_exception
from retail_sync.context import Context
from retail_sync.streams.mappers import shopify
from retail_sync.streams.mappers.shopify import MappingError
from retail_sync.streams.models import ExceptionKind, Order, OrderReceived, RawOrderMessage, ReturnRequested
from retail_sync.streams.validation import OrderRules, use_rules


def to_event(raw: RawOrderMessage,
             mappers: Mapping[str, Callable[[Any], Order]]) -> OrderReceived | ReturnRequested:
    """Map one raw delivery; raises MappingError with a reason when it cannot. Shopify's
    ``refunds/create`` deliveries become ReturnRequested (a refund made on the marketplace)."""
    mapper = mappers.get(raw.channel)
    if mapper is None:
        raise MappingError(f"no mapper for channel {raw.channel!r}")
    try:
        payload = orjson.loads(raw.body)
    except orjson.JSONDecodeError as exc:
        raise MappingError(f"body is not JSON: {exc}") from exc
    if raw.channel == "shopify" and raw.topic == "refunds/create":
        key, refund = shopify.map_refund(payload, raw.received_at)
        return ReturnRequested(order_key=key, refund=refund)
    order = mapper(payload)
    return OrderReceived(
        order_key=order.order_key, order=order, delivery_id=raw.delivery_id,
        received_at=raw.received_at,
    )


def register(ctx: Context) -> None:
    topics = ctx.topics

    @ctx.app.agent(topics.raw_orders, name=f"{ctx.settings.app_id}.ingest")
    async def ingest(stream: Any) -> None:
        async for key, raw in stream.items():
            await ingest_one(ctx, key, raw)


async def ingest_one(ctx: Context, key: str | None, raw: RawOrderMessage) -> None:
    try:
        with use_rules(OrderRules.from_settings(ctx.settings)):
            event = to_event(raw, {name: c.mapper for name, c in ctx.channels.items()})
    except MappingError as exc:
        await record_exception(
            ctx, kind=ExceptionKind.MAPPING, exc=exc, payload=raw.model_dump_json(), channel=raw.channel,
            source_topic=ctx.topics.raw_orders.get_topic_name(), source_key=key,
        )
        return
    except Exception as exc:  # noqa: BLE001 - a bug must not kill the agent or lose the record
        await record_exception(
            ctx, kind=ExceptionKind.INTERNAL, exc=exc, payload=raw.model_dump_json(),
            channel=raw.channel, source_topic=ctx.topics.raw_orders.get_topic_name(),
            source_key=key,
        )
        return
    if isinstance(event, OrderReceived):
        ctx.metrics.orders_ingested.labels(channel=raw.channel).inc()
    await ctx.topics.order_events.send(key=event.order_key, value=event)
