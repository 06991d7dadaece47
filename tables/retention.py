"""Order retention: closed orders leave the hot tables after ``order_retention_days``.

Rule (``retirable``): an order is closed when its status is shipped, partially refunded,
refunded or cancelled and nothing is on its way (no cancellation waiting for the ERP, every
shipment posted to the ERP and confirmed to the marketplace, every refund's credit note
posted). A closed order whose last change (its timeline's last entry) is older than the
retention age is retired:

1. each worker sweeps the order-state partitions it owns, ``order_retention_sweep_batch``
   records per partition every ``order_retention_sweep_interval_s``, continuing where the last
   sweep stopped (a RocksDB iterator from a cursor key, so a sweep never reads a whole
   partition), and sends ``ExpireOrder`` for each retirable order to order-events, keyed by the
   order: the order agent, the table's single writer, retires it;
2. the order agent checks the rule again on the state it holds, writes the state once to the
   compacted archive topic ``<app>.order-archive`` (key order_key) and waits for the broker's
   acknowledgement, asks the stock agent to drop its line records (those that hold nothing)
   and deletes the state (its index entries go with it, in the same write: tables/rocks.py);
3. ``GET /orders/{key}`` and ``/orders/lookup`` answer a retired order from the archive, marked
   ``"archived": true`` (retail_sync/archive.py reads it).

A duplicate or replay of a retired order cannot become a second ERP order: retirement happens
at least the retention age after the order's last change, so any copy arriving later was
created more than the retention age ago, and the order agent refuses an order it does not hold
whose ``created_at`` is older than the retention age (a state-conflict exception record, not an
order). The limit: the retention age must be longer than any marketplace redelivers or any
poller looks back (Shopify retries webhooks for 48 h; our pollers' lookbacks are hours), and
longer than the clock skew between a marketplace and us.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

from retail_sync.streams.codecs import decode as codec_decode
from retail_sync.streams.commands import ExpireOrder
from retail_sync.streams.models import OrderStatus, utcnow
from retail_sync.streams.state import OrderState
from retail_sync.tables.store_index import table_items as _iterate  # stops at the order index

log = logging.getLogger(__name__)

CLOSED = frozenset({OrderStatus.SHIPPED, OrderStatus.PARTIALLY_REFUNDED, OrderStatus.REFUNDED,
                    OrderStatus.CANCELLED})
FINAL_LINES = frozenset({"consumed", "released", "untracked"})  # line records holding nothing
FAUST_KEY_PREFIX = b"__faust"  # Faust's own records in each partition's RocksDB (offsets)


def retention(settings: Any) -> timedelta:
    return timedelta(days=settings.order_retention_days)


def archive_topic_name(app_id: str) -> str:
    return f"{app_id}.order-archive"


def last_change(state: OrderState) -> datetime:
    return max((t.at for t in state.timeline), default=state.received_at)


def closed(state: OrderState) -> bool:
    """Nothing more will happen to this order unless someone asks (a return, a cancellation)."""
    if state.status not in CLOSED or state.cancel is not None:
        return False
    if any(s.delivery_note is None or s.marketplace_confirmed_at is None
           for s in state.shipments.values()):
        return False
    return all(r.credit_note is not None for r in state.refunds.values())


def retirable(state: OrderState, now: datetime, age: timedelta) -> bool:
    return closed(state) and now - last_change(state) >= age


def too_old_to_take(created_at: datetime, now: datetime, age: timedelta) -> bool:
    """An order this old that the order table does not hold is a copy of a retired one (or
    older than anything we take): it must not become a new order."""
    return now - created_at >= age


# --- the sweep ----------------------------------------------------------------------------------


def scan(items: Iterator[tuple[bytes, bytes]], batch: int, decode: Any, now: datetime,
         age: timedelta) -> tuple[list[str], bytes | None]:
    """Read at most ``batch`` records of one partition, in key order, from where ``items``
    starts: the keys of the retirable orders among them and the key to start the next sweep
    from (None: the partition's end was reached, start again from its beginning)."""
    keys: list[str] = []
    for n, (key, value) in enumerate(items):
        if n >= batch:
            return keys, key
        if key.startswith(FAUST_KEY_PREFIX) or value is None:
            continue
        try:
            state = decode(value)
        except Exception as exc:  # noqa: BLE001 - not an order state: nothing to retire
            log.warning("retention sweep: %r is not an order state (%s)", key, exc)
            continue
        if retirable(state, now, age):
            keys.append(key.decode())
    return keys, None


class Sweeper:
    """One worker's incremental sweep over the order-state partitions it owns."""

    def __init__(self, ctx: Any) -> None:
        self.ctx = ctx
        self.cursors: dict[int, bytes | None] = {}  # partition -> where the next sweep starts
        self.sent = 0

    def owned_partitions(self) -> list[int]:
        source = self.ctx.topics.order_events.get_topic_name()
        try:
            actives = self.ctx.app.assignor.assigned_actives()
        except Exception:  # noqa: BLE001 - not assigned yet
            return []
        return sorted(tp.partition for tp in actives if tp.topic == source)

    def due(self, now: datetime) -> list[str]:
        """Keys of the retirable orders in the next batch of every owned partition."""
        s, table = self.ctx.settings, self.ctx.tables.orders
        store = table.data
        if not hasattr(store, "_db_for_partition"):
            return []  # not RocksDB (unit tests): nothing to sweep
        decode = functools.partial(codec_decode, "rs.order_state")  # versioned (streams.schemas)
        keys: list[str] = []
        for partition in self.owned_partitions():
            db = store._db_for_partition(partition)  # noqa: SLF001 - Faust has no public call
            found, self.cursors[partition] = scan(
                _iterate(db, self.cursors.get(partition)), s.order_retention_sweep_batch,
                decode, now, retention(s))
            keys += found
        return keys

    async def sweep(self) -> int:
        now = utcnow()
        keys = self.due(now)
        for key in keys:
            await self.ctx.topics.order_events.send(key=key, value=ExpireOrder(order_key=key,
                                                                               at=now))
        self.sent += len(keys)
        return len(keys)


# --- the order agent's side ---------------------------------------------------------------------


_archives: dict[str, Any] = {}


def archive_topic(ctx: Any) -> Any:
    name = archive_topic_name(ctx.settings.app_id)
    if name not in _archives:
        _archives[name] = ctx.app.topic(
            name, key_type=str, key_serializer="raw", value_serializer="rs.order_state",
            partitions=ctx.settings.partitions, compacting=True, deleting=False)
    return _archives[name]


async def expire(ctx: Any, key: str, event: ExpireOrder) -> bool:
    """Retire ``key`` if the rule still holds on the state the order agent holds: archive it
    (acknowledged by the broker), then ask the stock agent to forget its lines and delete it
    (its index entries go in the same write, tables/rocks.py). True if it was retired."""
    from retail_sync.streams.commands import ForgetLines

    table = ctx.tables.orders
    state = table.get(key)
    if state is None or not retirable(state, utcnow(), retention(ctx.settings)):
        return False  # already retired (a replayed command), or it changed since the sweep
    archived = await archive_topic(ctx).send(key=key, value=state)
    await archived  # on the broker before the hot copy goes
    by_sku: dict[str, list[str]] = {}
    for line in state.order.lines:
        by_sku.setdefault(line.sku, []).append(line.line_id)
    for sku, line_ids in by_sku.items():
        await ctx.topics.stock_events.send(key=sku, value=ForgetLines(
            sku=sku, order_key=key, line_ids=line_ids, at=event.at))
    del table[key]
    counter = getattr(ctx, "orders_retired", None)
    if counter is not None:
        counter.inc()
    return True


def register(ctx: Any) -> None:
    """The sweep timer of this worker (each worker sweeps the partitions it owns)."""
    from prometheus_client import Counter

    sweeper = Sweeper(ctx)
    ctx.retention_sweeper = sweeper
    ctx.orders_retired = Counter(
        "retail_sync_orders_retired_total", "Closed orders archived and deleted from the hot "
        "tables after the retention age (tables/retention.py).", registry=ctx.metrics.registry)

    @ctx.app.task  # type: ignore[untyped-decorator]  # Faust: @no_type_check
    async def _declare_archive() -> None:
        await archive_topic(ctx).maybe_declare()

    @ctx.app.timer(interval=ctx.settings.order_retention_sweep_interval_s)  # type: ignore[untyped-decorator]  # Faust: @no_type_check
    async def _sweep_closed_orders() -> None:
        try:
            await sweeper.sweep()
        except Exception:  # a sweep is retried at the next interval
            log.exception("order retention sweep failed")
