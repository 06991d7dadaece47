"""A toy fifth marketplace, added only through the public contract: one ChannelPlugin (its mapper,
settings model, poll source, outbound, rate plan, status table and reconciliation reader) named
by the setting RETAIL_SYNC_CHANNEL_PLUGINS (or an entry point of the group retail_sync.channels).

Its "API" is two JSON-lines files named by its own settings (``ToySettings``, read from the
environment by the engine: RETAIL_SYNC_TOY_FEED_FILE, RETAIL_SYNC_TOY_OUTBOX_FILE): orders are read
from the feed (the cursor is the number of lines already read), and everything the engine tells
the marketplace (quantities, cancellations, shipments, refunds) is appended to the outbox, one
call per line, each paced by the plan's budget ("toy:push"). The engine knows nothing else about it.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from pydantic import Field

from retail_sync.connectors.contracts import (
    PolledOrder,
    PollResult,
    PushReport,
    QuantityUpdate,
    Refund,
    Shipment,
)
from retail_sync.connectors.plugin import ChannelPlugin, ConnectorSettings, ReconcileReader
from retail_sync.connectors.ratelimit import Budgets, Plan, budgets_for
from retail_sync.connectors.reconcile_types import ChannelRead, Mapper, map_into
from retail_sync.streams.errors import MappingError
from retail_sync.streams.models import LineUnits, Money, Order, OrderLine
from retail_sync.streams.status import StatusTable, table

CHANNEL = "toy"
#: the toy marketplace's published limit: 50 calls a second, bursts of 5
PLANS: dict[str, Plan] = {"push": (50.0, 5)}
#: its order statuses (the feed's "status", default NEW)
STATUS_TO_CANONICAL = {"NEW": "accepted", "SENT": "shipped", "VOID": "cancelled"}
TABLE: StatusTable = table(CHANNEL, STATUS_TO_CANONICAL,
                           {canonical: status for status, canonical in STATUS_TO_CANONICAL.items()},
                           {"pending", "partially_shipped", "delivered", "partially_refunded",
                            "refunded", "unfulfillable"})


class ToySettings(ConnectorSettings):
    """The toy marketplace's own settings (RETAIL_SYNC_TOY_*), on top of the shared ones."""

    toy_feed_file: Path | None = Field(None, description="JSON-lines order feed; unset: off.")
    toy_outbox_file: Path | None = Field(None, description="JSON-lines file of our calls.")


class ToyFileSource:
    channel = CHANNEL

    def __init__(self, path: Path) -> None:
        self.path = path
        self.persisted: list[str] = []

    async def poll(self, cursor: str | None) -> PollResult:
        done = int(cursor or 0)
        lines = self.path.read_text().splitlines() if self.path.exists() else []
        new = lines[done:]
        orders = [PolledOrder(marketplace_order_id=str(json.loads(line)["ref"]), body=line,
                              delivery_id=f"line-{done + i}") for i, line in enumerate(new)]
        return PollResult(orders=orders, cursor=str(done + len(new)))

    async def after_persist(self, orders: Sequence[PolledOrder]) -> None:
        self.persisted.extend(o.marketplace_order_id for o in orders)

    async def close(self) -> None:
        return None

    @classmethod
    def from_settings(cls, settings: ToySettings) -> ToyFileSource | None:
        return cls(settings.toy_feed_file) if settings.toy_feed_file else None


class ToyOutbound:
    """Every call one JSON line in the outbox, after a slot of the "push" budget."""

    channel = CHANNEL

    def __init__(self, path: Path, budgets: Budgets) -> None:
        self.path = path
        self.budgets = budgets

    async def _write(self, kind: str, **fields: Any) -> None:
        await self.budgets.acquire("push")
        line = json.dumps({"kind": kind, **fields}, default=str) + "\n"
        await asyncio.to_thread(self._append, line)

    def _append(self, line: str) -> None:
        with self.path.open("a") as handle:
            handle.write(line)

    async def push_inventory(self, updates: Sequence[QuantityUpdate]) -> PushReport:
        await self._write("inventory", quantities={u.sku: u.quantity for u in updates})
        return PushReport(applied=[u.sku for u in updates], mechanism="toy-outbox")

    async def cancel_lines(self, marketplace_order_id: str, lines: Sequence[LineUnits], *,
                           whole_order: bool, reason: str) -> None:
        await self._write("cancel", order=marketplace_order_id, whole_order=whole_order,
                          lines=[line.model_dump(mode="json") for line in lines], reason=reason)

    async def confirm_shipment(self, marketplace_order_id: str, shipment: Shipment) -> None:
        await self._write("shipment", order=marketplace_order_id, shipment=shipment.shipment_id)

    async def refund(self, marketplace_order_id: str, refund: Refund) -> None:
        await self._write("refund", order=marketplace_order_id, refund=refund.refund_id)

    async def close(self) -> None:
        return None

    @classmethod
    def from_settings(cls, settings: ToySettings) -> ToyOutbound | None:
        if settings.toy_outbox_file is None:
            return None
        return cls(settings.toy_outbox_file, budgets_for(settings, CHANNEL, PLANS))


def map_toy(payload: Any) -> Order:
    if not isinstance(payload, dict) or "ref" not in payload:
        raise MappingError("toy order needs a ref")
    price = Money(amount=Decimal(str(payload["price"])), currency="EUR")
    zero = Money(amount=Decimal(0), currency="EUR")
    now = datetime.fromtimestamp(payload.get("ts", 0), UTC)
    try:
        status = TABLE.canonical(payload.get("status", "NEW"))
    except KeyError as exc:
        raise MappingError(str(exc)) from exc
    return Order(
        channel=CHANNEL, marketplace_order_id=str(payload["ref"]), created_at=now, updated_at=now,
        currency="EUR", subtotal=price, shipping=zero, tax_total=zero, discount_total=zero,
        total=price, fulfillment_status=status,
        lines=[OrderLine(line_id="1", sku=payload["sku"], quantity=1, unit_price=price, tax=zero,
                         discount=zero)],
    )


async def read_toy(settings: ToySettings, mapper: Mapper, since: datetime) -> ChannelRead:
    """Reconciliation: the feed as the marketplace shows it (the last line of each order wins)."""
    assert settings.toy_feed_file is not None
    text = await asyncio.to_thread(settings.toy_feed_file.read_text)
    latest = {json.loads(line)["ref"]: json.loads(line) for line in text.splitlines() if line}
    read = ChannelRead()
    for ref, payload in latest.items():
        map_into(read, CHANNEL, str(ref), payload, mapper)
    read.orders = [o for o in read.orders if o.created_at is None or o.created_at >= since]
    return read


plugin = ChannelPlugin(
    CHANNEL, map_toy, ToyFileSource.from_settings, "test-only toy marketplace (JSON-lines files)",
    outbound=ToyOutbound.from_settings,
    settings_model=ToySettings,
    plans=PLANS,
    status=TABLE,
    reconcile=ReconcileReader(read_toy, lambda settings: settings.toy_feed_file is not None),
)
