"""Ingest: raw channel deliveries -> canonical order events, mapped inside the order agent.

There is no ingest agent: the order agent (agents/orders.py) reads orders-raw itself, whose key
(``channel:marketplace order id``) is already the order key, and calls ``ingest_one`` for each
raw delivery. It maps with the channel's mapper (or the channel's ``topic_events`` hook, e.g.
Shopify's ``refunds/create``); when the event's ``order_key`` equals the record's key the order
agent applies the event on the spot (same partition: the order-state changelog partition is the
raw record's, both topics having the same partition count and key -> partition). A delivery
keyed otherwise (``channel:delivery:<id>`` when the body had no order id, or any event whose
order key differs from the record's key) is sent on to order-events keyed by its order key, as
before, and applied when it arrives there.

A delivery that cannot be mapped becomes a sync-exception record with the reason and the delivery
as it was read (the ``RawOrderMessage``, whose ``body`` is the verbatim body). Keeping the whole
message (not the bare body) makes a ``mapping`` exception replayable: ``retail-sync exceptions
replay`` / ``POST /exceptions/replay`` put it back on orders-raw, and it is mapped again under the
rules then in force (ARCHITECTURE §5f.4). The validation rules come from this worker's settings.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import orjson

from retail_sync.agents.deps import AgentDeps
from retail_sync.agents.exceptions import record_exception
from retail_sync.agents.guard import Record, guard, topic_name
from retail_sync.streams.errors import MappingError
from retail_sync.streams.events import OrderReceived, ReturnRequested
from retail_sync.streams.models import ExceptionKind, Order, RawOrderMessage
from retail_sync.streams.validation import OrderRules, use_rules


def to_event(raw: RawOrderMessage, mappers: Mapping[str, Callable[[Any], Order]],
             topic_events: Mapping[str, Mapping[str, Callable[[Any, Any], Any]]] | None = None,
             ) -> OrderReceived | ReturnRequested:
    """Map one raw delivery; raises MappingError with a reason when it cannot. A delivery whose
    topic its channel's webhook hooks turn into an event of their own (``topic_events``, by
    channel; e.g. Shopify's ``refunds/create`` becomes ReturnRequested, a refund made on the
    marketplace) is mapped by that hook instead of the order mapper."""
    mapper = mappers.get(raw.channel)
    if mapper is None:
        raise MappingError(f"no mapper for channel {raw.channel!r}")
    try:
        payload = orjson.loads(raw.body)
    except orjson.JSONDecodeError as exc:
        raise MappingError(f"body is not JSON: {exc}") from exc
    special = (topic_events or {}).get(raw.channel, {}).get(raw.topic)
    if special is not None:
        event: OrderReceived | ReturnRequested = special(payload, raw.received_at)
        return event
    order = mapper(payload)
    return OrderReceived(
        order_key=order.order_key, order=order, delivery_id=raw.delivery_id,
        received_at=raw.received_at,
    )


def topic_events(channels: Mapping[str, Any]) -> dict[str, Mapping[str, Callable[[Any, Any], Any]]]:
    """Each push channel's own deliveries by topic (its plugin's ``inbound.topic_events``)."""
    return {name: plugin.inbound.topic_events for name, plugin in channels.items()
            if plugin.inbound is not None and plugin.inbound.topic_events}


async def ingest_one(ctx: AgentDeps, key: str | None,
                     raw: RawOrderMessage) -> OrderReceived | ReturnRequested | None:
    """Map one raw delivery read from orders-raw under ``key``. Returns the event when it belongs
    to ``key`` (the caller, the order agent, applies it now: it owns this key's partition); None
    when there is nothing to apply here: the delivery could not be mapped (the exception record
    is written) or its event belongs to another key (sent on to order-events under its order
    key, applied when read there)."""
    event = await _mapped(ctx, key, raw)
    if event is None:  # not mapped: the exception record is written
        return None
    if isinstance(event, OrderReceived):
        ctx.metrics.orders_ingested.labels(channel=raw.channel).inc()
    if event.order_key != key:  # another key's partition: the old path, through order-events
        await ctx.topics.order_events.send(key=event.order_key, value=event)
        return None
    return event


@guard(lambda ctx, key, raw: Record(payload=raw.model_dump_json(), channel=raw.channel,
                                    source_topic=topic_name(ctx.topics.raw_orders),
                                    source_key=key))
async def _mapped(ctx: AgentDeps, key: str | None,
                  raw: RawOrderMessage) -> OrderReceived | ReturnRequested | None:
    """The delivery as an order event, or None: a ``mapping`` exception record for a delivery
    that cannot be mapped, an ``internal`` one (the guard's) for a bug."""
    try:
        with use_rules(OrderRules.from_settings(ctx.settings)):
            return to_event(raw, {name: c.mapper for name, c in ctx.channels.items()},
                            topic_events(ctx.channels))
    except MappingError as exc:
        await record_exception(
            ctx, kind=ExceptionKind.MAPPING, exc=exc, payload=raw.model_dump_json(), channel=raw.channel,
            source_topic=ctx.topics.raw_orders.get_topic_name(), source_key=key,
        )
        return None
