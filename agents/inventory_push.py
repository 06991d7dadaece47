"""Inventory pusher: tells each marketplace the absolute quantity it may sell.

One agent per channel we push to, reading that channel's inventory-updates topic (keyed by SKU)
in batches of up to ``inventory_push_batch`` gathered for at most ``inventory_push_window_s``;
within a batch only the latest quantity per SKU is kept, so a burst of changes becomes one update
with the newest value. A batch goes out in one ``ChannelOutbound.push_inventory`` call (the
marketplace's bulk mechanism where it has one); a slow or unreachable marketplace holds back only
its own agent; the result for every SKU goes back to the stock agent as an InventoryPushed, which
records what the channel was last told. Propagation latency (the change behind the update ->
the marketplace took it) is observed here per channel and cause.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from typing import Any

from retail_sync.agents.deps import AgentDeps
from retail_sync.agents.exceptions import record_exception
from retail_sync.agents.guard import Record, guard, topic_name
from retail_sync.agents.retry import RetryPolicy, call_with_retries
from retail_sync.connectors.contracts import ChannelOutbound, PushReport, QuantityUpdate
from retail_sync.connectors.errors import PermanentError, RetryableError
from retail_sync.streams.commands import InventoryUpdate
from retail_sync.streams.events import InventoryPushed
from retail_sync.streams.models import ExceptionKind, utcnow

log = logging.getLogger(__name__)


def register(ctx: AgentDeps) -> None:
    for channel, topic in ctx.topics.inventory.items():
        _register_channel(ctx, channel, topic)


def _register_channel(ctx: AgentDeps, channel: str, topic: Any) -> None:
    async def inventory_push(stream: Any) -> None:
        async for batch in stream.take(ctx.settings.inventory_push_batch,
                                       within=ctx.settings.inventory_push_window_s):
            await _push_guarded(ctx, batch, channel, topic)

    ctx.app.agent(topic, name=f"{ctx.settings.app_id}.inventory-push.{channel}")(inventory_push)


@guard(lambda ctx, batch, channel, topic: Record(
    channel=channel, payload="[" + ",".join(u.model_dump_json() for u in batch) + "]",
    source_topic=topic_name(topic)))
async def _push_guarded(ctx: AgentDeps, batch: Sequence[InventoryUpdate], channel: str,
                        topic: Any) -> None:
    await push_batch(ctx, batch)


def coalesce(batch: Sequence[InventoryUpdate]) -> dict[str, list[InventoryUpdate]]:
    """Channel -> one update per SKU: the latest quantity, with the oldest cause behind it (the
    propagation latency counts from the first change the marketplace had not seen)."""
    latest: dict[tuple[str, str], InventoryUpdate] = {}
    for update in batch:
        key = (update.channel, update.sku)
        first = latest.get(key)
        if first is not None and first.cause_at < update.cause_at:
            update = update.model_copy(update={"cause": first.cause, "cause_at": first.cause_at})
        latest[key] = update
    by_channel: dict[str, list[InventoryUpdate]] = {}
    for (channel, _), update in latest.items():
        by_channel.setdefault(channel, []).append(update)
    return by_channel


async def push_batch(ctx: AgentDeps, batch: Sequence[InventoryUpdate]) -> None:
    by_channel = coalesce(batch)
    ctx.metrics.inventory_updates_coalesced.inc(len(batch) - sum(map(len, by_channel.values())))
    await asyncio.gather(*(push_channel(ctx, channel, updates)
                           for channel, updates in by_channel.items()))


async def push_channel(ctx: AgentDeps, channel: str, updates: list[InventoryUpdate]) -> None:
    outbound = ctx.outbound.get(channel)
    if outbound is None:
        log.warning("no outbound configured for %s: %d inventory updates dropped", channel,
                    len(updates))
        return
    breaker = ctx.breaker(channel)
    while True:  # the marketplace is unreachable: hold this batch (and, behind it, the topic)
        await breaker.wait_ready()  # open: this agent waits, and newer updates wait in Kafka
        report, error = await _push(ctx, outbound, updates)
        transient = error is not None and not error.startswith("PermanentError")
        if transient:
            breaker.record_failure()
        else:
            breaker.record_success()  # it answered (a refusal is an answer)
        ctx.metrics.circuit_open.labels(system=channel).set(int(breaker.state != "closed"))
        if not transient:
            break
        log.warning("inventory push to %s held until it answers: %s", channel, error)
    now = utcnow()
    outcome = "ok" if error is None and not report.failed else ("failed" if error else "partial")
    ctx.metrics.inventory_pushes.labels(channel=channel, mechanism=report.mechanism or "-",
                                        outcome=outcome).inc()
    applied = set(report.applied)
    for update in updates:
        ok = update.sku in applied
        reason = error or report.failed.get(update.sku) or (None if ok else "not applied")
        if ok:
            ctx.metrics.stock_propagation_seconds.labels(channel=channel, cause=update.cause).observe(
                max(0.0, (now - update.cause_at).total_seconds()))
        await ctx.topics.stock_events.send(key=update.sku, value=InventoryPushed(
            sku=update.sku, channel=channel, quantity=update.quantity, pushed_at=now, ok=ok,
            mechanism=report.mechanism, reference=report.reference, error=reason))
    if report.failed:
        await record_exception(
            ctx, kind=ExceptionKind.OUTBOUND, channel=channel, source_key=channel,
            exc=f"{channel} refused {len(report.failed)} inventory updates: "
                + "; ".join(f"{s}: {r}" for s, r in sorted(report.failed.items())[:20]),
            payload="[" + ",".join(u.model_dump_json() for u in updates) + "]")


async def _push(ctx: AgentDeps, outbound: ChannelOutbound,
                updates: list[InventoryUpdate]) -> tuple[PushReport, str | None]:
    quantities = [QuantityUpdate(sku=u.sku, quantity=u.quantity) for u in updates]
    started = time.perf_counter()
    try:
        report = await call_with_retries(lambda: outbound.push_inventory(quantities), ctx.settings,
                                         policy=RetryPolicy.marketplace(ctx.settings))
        return report, None
    except PermanentError as exc:
        await record_exception(
            ctx, kind=ExceptionKind.OUTBOUND, exc=exc, channel=outbound.channel,
            source_key=outbound.channel,
            payload="[" + ",".join(u.model_dump_json() for u in updates) + "]")
        return PushReport(applied=()), f"{type(exc).__name__}: {exc}"
    except RetryableError as exc:  # held and tried again by the caller: not an exception yet
        return PushReport(applied=()), f"{type(exc).__name__}: {exc}"
    finally:
        ctx.metrics.outbound_request_seconds.labels(
            channel=outbound.channel, action="inventory").observe(time.perf_counter() - started)
