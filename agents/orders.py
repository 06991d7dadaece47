"""Order agent: the single writer of the order-state table.

Reads order-events keyed by order_key, applies the lifecycle (agents.lifecycle), writes the state
and the id index, and sends ERP requests. Latency from receipt to ERP confirmation is observed
here, once per order.
"""

from __future__ import annotations

from typing import Any

from agents.exceptions import record_exception
from agents.lifecycle import Outcome, apply
from retail_sync.context import Context
from streams.models import ExceptionKind, OrderEvent, OrderState, utcnow


def register(ctx: Context) -> None:
    @ctx.app.agent(ctx.topics.order_events, name=f"{ctx.settings.app_id}.orders")
    async def orders(stream: Any) -> None:
        await warm_routing_metadata(ctx)
        async for key, event in stream.items():
            try:
                await handle(ctx, key, event)
            except Exception as exc:  # noqa: BLE001 - keep the agent alive, keep the record
                await record_exception(
                    ctx, kind=ExceptionKind.INTERNAL, exc=exc, payload=event.model_dump_json(),
                    order_key=key, source_topic=ctx.topics.order_events.get_topic_name(),
                )


async def warm_routing_metadata(ctx: Context) -> None:
    """Tables keyed apart from their stream (``use_partitioner``) and HTTP key routing hash with
    the producer's topic metadata, which aiokafka loads only for topics it has produced to; load
    it for the changelogs before the first write or lookup."""
    producer = ctx.app.producer._ensure_producer()  # type: ignore[attr-defined]
    for table in (ctx.tables.orders, ctx.tables.index):
        await producer.partitions_for(table.changelog_topic.get_topic_name())


async def handle(ctx: Context, key: str, event: OrderEvent) -> None:
    table = ctx.tables.orders
    outcome = apply(table.get(key), event, utcnow())
    if outcome.changed and outcome.state is not None:
        table[key] = outcome.state
        _index(ctx, outcome.state)
        _observe(ctx, outcome)
    for request in outcome.erp_requests:
        await ctx.topics.erp_requests.send(key=request.order_key, value=request)


def _index(ctx: Context, state: OrderState) -> None:
    ids = [state.correlation.marketplace_order_id, state.correlation.marketplace_order_name,
           state.correlation.erp_sales_order, state.order_key]
    index = ctx.tables.index
    for external_id in filter(None, ids):
        keys = index.get(external_id) or []
        if state.order_key not in keys:
            index[external_id] = [*keys, state.order_key]


def _observe(ctx: Context, outcome: Outcome) -> None:
    state = outcome.state
    assert state is not None
    ctx.metrics.orders_by_status.labels(channel=state.channel, status=state.status.value).inc()
    if outcome.first_confirmation and state.erp_confirmed_at is not None:
        seconds = (state.erp_confirmed_at - state.received_at).total_seconds()
        ctx.metrics.order_to_erp_seconds.labels(channel=state.channel).observe(max(0.0, seconds))
