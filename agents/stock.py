"""Stock agent: the single writer of the stock table (SKU records and their order lines).

Reads stock-events keyed by SKU: the ERP's positions (from the stock feed poller), reservation
requests, releases and commits (from the order agent) and push reports (from the inventory
pusher). Applies the rules of streams.rules.stock, answers reservations to order-events, tells
an order when goods arrived for its backordered units (BackorderReleased, on order-events too),
and sends every channel whose available-to-sell changed an absolute InventoryUpdate (on that
channel's inventory-updates topic, keyed by SKU, so its pusher coalesces per SKU).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import partial
from typing import Any

from faust.streams import current_event
from faust.types import EventT

from retail_sync.agents.deps import AgentDeps, allocation_policy
from retail_sync.agents.exceptions import record_exception
from retail_sync.agents.guard import Record, finished_or_exit, guard, topic_name
from retail_sync.agents.outbox import Outbox, in_event, misplaced, write_in
from retail_sync.agents.take import take_batches
from retail_sync.streams.commands import ForgetLines, ReserveStock, StockBatch
from retail_sync.streams.events import BackorderReleased, StockAnswered, StockEvent
from retail_sync.streams.models import ExceptionKind, utcnow
from retail_sync.streams.rules.policies import AllocationPolicy
from retail_sync.streams.rules.stock import StockRules, apply, read_lines
from retail_sync.streams.stock import (
    BackorderRelease,
    Reservation,
    StockState,
    position,
    reservation_key,
)


def register(ctx: AgentDeps) -> None:
    policy = allocation_policy(ctx.settings)  # read once: the settings are frozen

    @ctx.app.agent(ctx.topics.stock_events, name=f"{ctx.settings.app_id}.stock")
    async def stock(stream: Any) -> None:
        async for events in take_batches(stream, ctx.settings.batch_max,
                                         ctx.settings.batch_within_s,
                                         ctx.settings.batch_within_max_s):
            async with finished_or_exit("the stock agent's batch"):
                await handle_batch(ctx, events, policy)


async def handle_batch(ctx: AgentDeps, events: list[EventT[Any]],
                       policy: AllocationPolicy | None = None) -> None:
    """One batch of stock-events, record by record in arrival order, each in its own event
    context (agents/outbox.py ``in_event``); the answers go out grouped per order partition at
    the end of the batch, the rest in order."""
    outbox = Outbox(ctx.topics, ctx.settings.partitions)
    with outbox.collecting():  # the changelog records go out as one record batch per partition
        for event in events:
            with in_event(event):
                await handle_record(ctx, event.key, event.value, event.message.offset,
                                    event.message.partition, policy, outbox)
    await outbox.flush()


async def handle_record(ctx: AgentDeps, key: Any, value: Any, offset: int,
                        partition: int | None, policy: AllocationPolicy | None,
                        outbox: Outbox) -> None:
    """One stock-events record: an event, applied at its position (``streams.stock.position``),
    or a batch of the order agent's commands, applied item by item, each at its own position and
    only if its SKU is on the record's partition."""
    if not isinstance(value, StockBatch):
        await handle_guarded(ctx, key, value, offset=position(offset), policy=policy,
                             outbox=outbox)
        return
    for index, item in enumerate(value.items):
        if await misplaced(ctx, item.sku, item, partition, ctx.topics.stock_events):
            continue
        await handle_guarded(ctx, item.sku, item, offset=position(offset, index), policy=policy,
                             outbox=outbox)


def rules_for(ctx: AgentDeps, sku: str, policy: AllocationPolicy | None = None) -> StockRules:
    """The stock rules of one SKU: ``policy`` (the agent's, built once), else the settings'."""
    return StockRules.for_sku(policy or allocation_policy(ctx.settings), sku, list(ctx.outbound))


async def handle(ctx: AgentDeps, key: str, event: StockEvent, offset: int | None,
                 policy: AllocationPolicy | None, outbox: Outbox) -> None:
    """Apply one stock event at ``offset`` (its position on stock-events); what it writes and
    sends goes to ``outbox`` (its batch's)."""
    if key != event.sku:  # keyed by something else: it would land in another SKU's partition
        await record_exception(
            ctx, kind=ExceptionKind.STATE_CONFLICT, payload=event.model_dump_json(),
            exc=f"stock event for {event.sku!r} arrived keyed {key!r}", source_key=key,
            source_topic=ctx.topics.stock_events.get_topic_name())
        return
    table = ctx.tables.stock  # the SKU's record and its order lines (keys SKU|order#line)
    writes = outbox.held("stock", lambda: SkuWrites(partial(write_in, table)))
    if isinstance(event, ForgetLines):  # the order was retired (tables/retention.py)
        writes.settle(key)
        forget_lines(table, event)
        return
    state = writes.get(key)
    if state is None:
        stored = table.get(key)
        state = stored.in_positions() if isinstance(stored, StockState) else stored
    out = apply(state, event, rules_for(ctx, key, policy), utcnow(), table, offset=offset)
    writes.apply(key, out.writes, out.state if out.changed else None)
    if out.answer is not None and isinstance(event, ReserveStock):
        short = sum(a.requested - a.reserved for a in out.answer)
        ctx.metrics.stock_reservations.labels(
            channel=event.channel,
            outcome="untracked" if not out.tracked else ("short" if short else "reserved")).inc()
        outbox.add(ctx.topics.order_events, event.order_key, StockAnswered(
            order_key=event.order_key, sku=event.sku, tracked=out.tracked, lines=out.answer,
            at=utcnow()))
    for release in _by_order(key, out.releases):
        outbox.add(ctx.topics.order_events, release.order_key, release)
    for update in out.updates:
        topic = ctx.topics.inventory.get(update.channel)
        if topic is not None:
            outbox.add(topic, update.sku, update)


class SkuWrites:
    """The stock table's writes of one batch: line records at once, each SKU's record held and
    written once (its last value) at the end of the batch.

    The crash reading (``streams.rules.stock``, ``_AsBefore``) reads a line record newer than
    its SKU's record as it was before the events after that record: not there if it was
    reserved after it (``reserved_seq``), else open or committed as the SKU's record says. Before
    an event rewrites a line record written since the SKU's record was last written, the held
    record is written first, so such a record was written by one event after it (a line open
    in its SKU's record gets its first record when it leaves ``open``, so this happens only to
    lines with a record while open, past ``StockRules.inline_lines``). Lines are always written
    before the SKU record that counts them, in one changelog partition (the SKU's), so a crash
    keeps a prefix in which no SKU record runs ahead of its lines.

    ``write(key, value, event)`` writes to the table (in ``event``'s context: the key's own
    partition)."""

    def __init__(self, write: Callable[[str, Any, Any], None]) -> None:
        self.write = write
        self._held: dict[str, tuple[StockState, Any]] = {}
        self._ahead: dict[str, set[str]] = {}  # SKU -> lines written since its record

    def get(self, sku: str) -> StockState | None:
        """The SKU's held record (None: none held; read the table)."""
        held = self._held.get(sku)
        return held[0] if held else None

    def apply(self, sku: str, lines: Mapping[str, Reservation], state: StockState | None) -> None:
        """One event's writes: its line records, then (``state``: changed) the SKU's record."""
        ahead = self._ahead.setdefault(sku, set())
        if not ahead.isdisjoint(lines):
            self.settle(sku)
            ahead = self._ahead.setdefault(sku, set())
        event = current_event()
        for key, record in lines.items():
            self.write(key, record, event)
            ahead.add(key)
        if state is not None:
            self._held[sku] = (state, event)

    def settle(self, sku: str) -> None:
        """Write the SKU's held record now."""
        held = self._held.pop(sku, None)
        if held is not None:
            self.write(sku, held[0], held[1])
        self._ahead.pop(sku, None)

    def flush(self) -> None:
        for sku in list(self._held):
            self.settle(sku)
        self._ahead.clear()


handle_guarded = guard(lambda ctx, key, event, offset, policy, outbox: Record(
    payload=event.model_dump_json(), order_key=getattr(event, "order_key", None), source_key=key,
    source_topic=topic_name(ctx.topics.stock_events)))(handle)


def _by_order(sku: str, releases: list[BackorderRelease]) -> list[BackorderReleased]:
    """One message per order: its lines on this SKU that goods arrived for (one event's
    releases share their id)."""
    grouped: dict[str, list[BackorderRelease]] = {}
    for release in releases:
        grouped.setdefault(release.order_key, []).append(release)
    return [BackorderReleased(order_key=order_key, sku=sku, release_id=group[0].release_id,
                              lines={r.line_id: r.units for r in group},
                              waited_s=max(r.waited_s for r in group), at=utcnow())
            for order_key, group in grouped.items()]


def forget_lines(table: Any, event: ForgetLines) -> int:
    """Delete the retired order's line records on this SKU that hold nothing; a line still
    holding units (open, committed and not handed over) stays, as its SKU's record counts it.
    Read as the SKU's record reads them (a committed line it handed over is consumed). Returns
    how many."""
    from retail_sync.tables.retention import FINAL_LINES

    stored = table.get(event.sku)
    lines = read_lines(table, stored.in_positions() if isinstance(stored, StockState) else None)
    deleted = 0
    for line_id in event.line_ids:
        key = reservation_key(event.sku, event.order_key, line_id)
        record = lines.get(key)
        if record is not None and getattr(record, "status", None) in FINAL_LINES:
            del table[key]
            deleted += 1
    return deleted
