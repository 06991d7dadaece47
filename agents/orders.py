"""Order agent: the single writer of the order-state table.

Reads orders-raw and order-events, both keyed by order_key, through one topic handle with both
names (``order_input``): one agent, so one actor per partition writes the table. A raw delivery is
mapped here (agents/ingest.py ``ingest_one``: mapping, validation, mapping exception records) and
its event applied at once; a delivery whose event belongs to another key goes on to order-events
and is applied when read there. The two topics have the same partition count and key ->
partition, and Faust's assignor gives co-subscribed topics with the same partition count to the
same worker partition by partition, so partition N of both is this actor's, and a table write
goes to changelog partition N (the current event's). Applies the lifecycle
(streams.rules.lifecycle), writes the state (its store indexes the order by the other ids it is
known by, tables/rocks.py) and sends ERP requests. Latency from receipt to ERP confirmation is
observed here, once per order.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import faust
from faust.types import AppT, EventT, Message

from retail_sync.agents import ingest
from retail_sync.agents.deps import AgentDeps, order_policies
from retail_sync.agents.exceptions import record_exception
from retail_sync.agents.guard import Record, finished_or_exit, guard, topic_name
from retail_sync.agents.outbox import Outbox, in_event, misplaced
from retail_sync.agents.take import take_batches
from retail_sync.streams.commands import ExpireOrder
from retail_sync.streams.events import (
    BackorderReleased,
    ErpReturnPosted,
    OrderEvent,
    OrderEvents,
    OrderReceived,
)
from retail_sync.streams.models import ExceptionKind, OrderStatus, RawOrderMessage, utcnow
from retail_sync.streams.rules.lifecycle import apply
from retail_sync.streams.rules.outcome import Outcome
from retail_sync.streams.rules.policies import OrderPolicies
from retail_sync.streams.state import OrderState
from retail_sync.streams.topics import RecordingTopic


def register(ctx: AgentDeps) -> None:
    from retail_sync.tables import retention

    retention.register(ctx)  # this worker's sweep: closed orders past their age leave the table

    policies = order_policies(ctx.settings)  # read once: the settings are frozen

    @ctx.app.agent(order_input(ctx), name=f"{ctx.settings.app_id}.orders")
    async def orders(stream: Any) -> None:
        await warm_routing_metadata(ctx)
        async for events in take_batches(stream, ctx.settings.batch_max,
                                         ctx.settings.batch_within_s,
                                         ctx.settings.batch_within_max_s):
            async with finished_or_exit("the order agent's batch"):
                await handle_batch(ctx, events, policies)


async def handle_batch(ctx: AgentDeps, events: list[EventT[Any]], policies: OrderPolicies) -> None:
    """One batch of the agent's input, event by event in arrival order (each in its own event
    context: Faust's RocksDB store reads and a table write goes to the changelog partition of
    the *current* event); what they send goes out grouped at the end (agents/outbox.py)."""
    outbox = Outbox(ctx.topics, ctx.settings.partitions)
    raw = ctx.topics.raw_orders.get_topic_name()
    with outbox.collecting():  # the changelog records go out as one record batch per partition
        for event in events:
            message = event.message
            with in_event(event):
                key = event.key if isinstance(event.key, str | None) else None  # raw str keys
                try:
                    await handle_input(ctx, key, event.value, policies, outbox=outbox,
                                       partition=message.partition)
                finally:
                    if message.topic == raw:  # out of the intake's hand (agents/intake.py)
                        ctx.intake.handled(message.partition, message.offset)
    await outbox.flush()


async def handle_input(ctx: AgentDeps, key: str | None, value: Any,
                       policies: OrderPolicies | None = None, *, outbox: Outbox | None = None,
                       partition: int | None = None) -> None:
    """One record of the agent's input: a raw delivery (orders-raw) is mapped first and applied
    if its event belongs to ``key``; an order event (order-events) is applied; a batch of them
    (``OrderEvents``) is applied event by event (each to its own order, which must be on the
    record's ``partition``)."""
    if isinstance(value, OrderEvents):
        for item in value.events:
            if await misplaced(ctx, item.order_key, item, partition, ctx.topics.order_events):
                continue
            await handle_guarded(ctx, item.order_key, item, policies, outbox)
        return
    event: OrderEvent | None = value if not isinstance(value, RawOrderMessage) else (
        await ingest.ingest_one(ctx, key, value))
    if event is None:  # an exception record, or sent on to its own key's partition
        return
    assert key is not None  # an order event, or an event ingest_one found keyed ``key``
    await handle_guarded(ctx, key, event, policies, outbox)


class _ByTopicSchema(faust.Schema[str, Any]):
    """Decodes each record with its own topic's codec (one topic handle, two value types)."""

    def __init__(self, codecs: Mapping[str, str], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.codecs = dict(codecs)

    def loads_value(self, app: AppT, message: Message, *, loads: Any = None,
                    serializer: Any = None) -> Any:
        return super().loads_value(app, message, loads=loads,
                                   serializer=serializer or self.codecs[message.topic])


class _InputTopic(RecordingTopic):
    async def on_value_decode_error(self, exc: Exception, message: Message) -> None:
        # the exception record names the codec of the record's own topic
        self.value_serializer = self.schema.codecs[message.topic]  # type: ignore[attr-defined]
        await super().on_value_decode_error(exc, message)


def order_input(ctx: AgentDeps) -> faust.TopicT:
    """orders-raw and order-events as one topic handle (the order agent's input): each record
    decoded with its topic's codec, an undecodable one recorded like any topic's."""
    raw, events = ctx.topics.raw_orders, ctx.topics.order_events
    # (the ignores: Faust's TopicT does not declare the value_serializer every Topic has)
    codecs = {raw.get_topic_name(): raw.value_serializer,  # type: ignore[attr-defined]
              events.get_topic_name(): events.value_serializer}  # type: ignore[attr-defined]
    topic = _InputTopic(ctx.app, topics=list(codecs), partitions=ctx.settings.partitions,
                        schema=_ByTopicSchema(codecs, key_type=str, key_serializer="raw",
                                              value_serializer=events.value_serializer))  # type: ignore[attr-defined]
    topic.dead_letters = getattr(events, "dead_letters", None)
    return topic


async def warm_routing_metadata(ctx: AgentDeps) -> None:
    """HTTP key routing (``app.table_route``) hashes with the producer's topic metadata, which
    aiokafka loads only for topics it has produced to; load it for the changelogs up front so a
    lookup on a freshly started worker finds it."""
    producer = ctx.app.producer._ensure_producer()  # type: ignore[attr-defined]  # Faust-private
    for table in (ctx.tables.orders, ctx.tables.stock):
        await producer.partitions_for(table.changelog_topic.get_topic_name())


async def handle(ctx: AgentDeps, key: str, event: OrderEvent,
                 policies: OrderPolicies | None = None, outbox: Outbox | None = None) -> None:
    """Apply one event to its order; ``policies``: the agent's (built once), else the settings'.
    What it sends goes to ``outbox`` (a batch's), else out at once."""
    if outbox is not None:
        await _apply(ctx, key, event, policies, outbox)
        return
    own = Outbox(ctx.topics, ctx.settings.partitions, grouped=False)  # outside a batch: at once
    await _apply(ctx, key, event, policies, own)
    await own.flush()


async def _apply(ctx: AgentDeps, key: str, event: OrderEvent, policies: OrderPolicies | None,
                 outbox: Outbox) -> None:
    from retail_sync.tables import retention

    table = outbox.table(ctx.tables.orders)  # a batch's writes are held to its end
    if isinstance(event, ExpireOrder):  # from the retention sweep: this agent owns the key
        table.settle(key)  # retention deletes the key in the table itself
        state = table.get(key)
        if state is not None:
            await retention.expire(ctx, key, event)
        return
    previous = table.get(key)
    if previous is None and isinstance(event, OrderReceived) and retention.too_old_to_take(
            event.order.created_at, utcnow(), retention.retention(ctx.settings)):
        await record_exception(  # a copy of a retired order: never a second ERP order
            ctx, kind=ExceptionKind.STATE_CONFLICT, payload=event.model_dump_json(),
            exc=f"order {key} was created {event.order.created_at.isoformat()}, more than the "
                f"retention age ({ctx.settings.order_retention_days:g} days) ago, and is not in "
                "the order table: it was retired (GET /orders/{key} shows the archive) or is "
                "older than anything taken; not taken as a new order",
            order_key=key, channel=event.order.channel,
            source_topic=ctx.topics.order_events.get_topic_name())
        return
    channel = previous.channel if previous else getattr(getattr(event, "order", None), "channel", "")
    policies = policies or order_policies(ctx.settings)
    outcome = apply(previous, event, utcnow(), policies.stock_for(channel),
                    policies.edit_for(channel))
    if outcome.problem is not None:
        await record_exception(
            ctx, kind=ExceptionKind.STATE_CONFLICT, exc=outcome.problem,
            payload=event.model_dump_json(), order_key=key,
            channel=previous.channel if previous else None,
            source_topic=ctx.topics.order_events.get_topic_name(),
        )
        await ctx.audit_refused_later(ctx, key, previous, event, outcome.problem,
                                      outcome.state)
    if outcome.state is not None and outcome.changed:
        table.set(key, outcome.state)  # the store indexes it by its ids in the same write
        _observe(ctx, outcome, event, previous)
        if outcome.state.status is OrderStatus.STOCK_PENDING:
            current = faust.current_event()  # the intake takes no more while too many wait
            ctx.intake.waiting(key, None if current is None else current.message.partition)
        else:
            ctx.intake.answered(key)
    for command in outcome.stock_commands:
        outbox.add(ctx.topics.stock_events, command.sku, command)
    for request in outcome.erp_requests:
        outbox.add(ctx.topics.erp_requests, request.order_key, request)
    for channel_command in outcome.marketplace_commands:
        outbox.add(ctx.topics.commands_for(channel_command.channel), channel_command.order_key,
                    channel_command)
    for wms_command in outcome.wms_commands:
        outbox.add(ctx.topics.wms_requests, wms_command.order_key, wms_command)


handle_guarded = guard(lambda ctx, key, event, policies=None, outbox=None: Record(
    payload=event.model_dump_json(), order_key=key,
    source_topic=topic_name(ctx.topics.order_events)))(handle)


def _observe(ctx: AgentDeps, outcome: Outcome, event: OrderEvent,
             previous: OrderState | None) -> None:
    state = outcome.state
    assert state is not None
    if state.shipments and not (previous is not None and previous.shipments):
        # the order's first shipment (a redelivered event finds it already in ``previous``)
        first = min(s.shipped_at for s in state.shipments.values())
        ctx.metrics.order_to_ship_seconds.labels(channel=state.channel).observe(
            max(0.0, (first - state.order.created_at).total_seconds()))
    if outcome.first_refund_posted and isinstance(event, ErpReturnPosted):
        refund = state.refunds[event.refund_id]
        ctx.metrics.flow_seconds.labels(flow="refund_to_erp", channel=state.channel).observe(
            max(0.0, (event.at - refund.requested_at).total_seconds()))
    if isinstance(event, BackorderReleased) and event.release_id in state.backorders:
        ctx.metrics.backorder_wait_seconds.labels(channel=state.channel).observe(event.waited_s)
    ctx.metrics.orders_by_status.labels(channel=state.channel, status=state.status.value).inc()
    if outcome.decided and state.stock_decision is not None:
        ctx.metrics.stock_decisions.labels(channel=state.channel,
                                           decision=state.stock_decision).inc()
    if outcome.first_confirmation and state.erp_confirmed_at is not None:
        seconds = (state.erp_confirmed_at - state.received_at).total_seconds()
        ctx.metrics.order_to_erp_seconds.labels(channel=state.channel).observe(max(0.0, seconds))
        ctx.metrics.flow_seconds.labels(flow="order_to_erp", channel=state.channel).observe(
            max(0.0, seconds))
