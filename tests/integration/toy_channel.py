"""A toy fifth marketplace, added only through the public contract (ChannelPlugin + settings).

Its "API" is a JSON-lines file named by TOY_CHANNEL_FILE; the cursor is the number of lines
already read. The engine knows nothing about it beyond RETAIL_SYNC_CHANNEL_PLUGINS.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from retail_sync.connectors.contracts import PolledOrder, PollResult
from retail_sync.connectors.plugin import ChannelPlugin
from retail_sync.connectors.shopify.mapper import MappingError
from retail_sync.streams.models import Money, Order, OrderLine

CHANNEL = "toy"


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


def map_toy(payload: Any) -> Order:
    if not isinstance(payload, dict) or "ref" not in payload:
        raise MappingError("toy order needs a ref")
    price = Money(amount=Decimal(str(payload["price"])), currency="EUR")
    zero = Money(amount=Decimal(0), currency="EUR")
    now = datetime.fromtimestamp(payload.get("ts", 0), UTC)
    return Order(
        channel=CHANNEL, marketplace_order_id=str(payload["ref"]), created_at=now, updated_at=now,
        currency="EUR", subtotal=price, shipping=zero, tax_total=zero, discount_total=zero,
        total=price,
        lines=[OrderLine(line_id="1", sku=payload["sku"], quantity=1, unit_price=price, tax=zero,
                         discount=zero)],
    )


def _source(settings: Any) -> ToyFileSource | None:
    path = os.environ.get("TOY_CHANNEL_FILE")
    return ToyFileSource(Path(path)) if path else None


plugin = ChannelPlugin(CHANNEL, map_toy, _source, "test-only toy marketplace (JSON-lines file)")
