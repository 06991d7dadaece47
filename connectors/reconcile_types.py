"""What a marketplace's reconciliation reader hands back (``connectors/<system>/reconcile.py``):
its orders mapped and reduced to what ``retail_sync.reconcile.compare`` compares with the ERP.

Shared by every reader so that none imports the wiring (retail_sync/reconcile.py reads through
the plugins' ``reconcile``)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any, TypeVar

from retail_sync.connectors.retry import on_transient
from retail_sync.streams.errors import DecodeError
from retail_sync.streams.models import Order

JSON = dict[str, Any]
T = TypeVar("T")
Mapper = Callable[[Any], Order]
#: an order's canonical status as its marketplace shows it (see ``marketplace_status``)
StatusOf = Callable[[Order], str]


def marketplace_status(order: Order) -> str:
    """The canonical status of a mapped order whose mapper writes canonical words (Amazon,
    Walmart, regional): cancelled when ``cancelled_at`` is set, else the mapper's word (accepted
    when it has none). A channel whose mapper keeps its own words (Shopify) has its reader pass
    its own ``status``."""
    if order.cancelled_at is not None:
        return "cancelled"
    return order.fulfillment_status or "accepted"


@dataclass(frozen=True)
class MarketplaceOrder:
    """One order as its marketplace shows it, reduced to what is compared."""

    order_key: str
    channel: str
    status: str  # canonical (marketplace_status)
    total: Decimal | None
    currency: str | None = None
    created_at: datetime | None = None
    partially_cancelled: bool = False  # the seller cancelled some units (amounts not compared)
    raw_status: str | None = None

    @classmethod
    def from_order(cls, order: Order, *, partially_cancelled: bool = False,
                   status: StatusOf = marketplace_status) -> MarketplaceOrder:
        return cls(order.order_key, order.channel, status(order), order.total.amount,
                   order.currency, order.created_at, partially_cancelled,
                   order.fulfillment_status)  # fmt: skip

    def as_dict(self) -> JSON:
        return {"status": self.status, "total": _text(self.total), "currency": self.currency,
                "raw_status": self.raw_status, "partially_cancelled": self.partially_cancelled,
                "created_at": self.created_at.isoformat() if self.created_at else None}  # fmt: skip


@dataclass
class ChannelRead:
    orders: list[MarketplaceOrder] = field(default_factory=list)
    unmapped: list[JSON] = field(default_factory=list)
    pending: int = 0  # awaiting payment, no amounts shown (Amazon): not read further


def map_into(read: ChannelRead, channel: str, order_id: str, payload: Any, mapper: Mapper,
             partially_cancelled: bool = False, *,
             status: StatusOf = marketplace_status) -> Order | None:
    """Map one marketplace order into ``read`` (or note why it cannot be). ``partially_cancelled``
    only matters for an order not cancelled as a whole (cancelled ones have no amount compared)."""
    try:
        order = mapper(payload)
    except (DecodeError, ValueError) as exc:
        read.unmapped.append({"channel": channel, "order_id": order_id, "reason": str(exc)})
        return None
    read.orders.append(MarketplaceOrder.from_order(order, partially_cancelled=partially_cancelled,
                                                   status=status))
    return order


#: reading a marketplace for reconciliation: a throttle or a transient failure is waited out
RETRY_ATTEMPTS, RETRY_BASE_S, RETRY_MAX_S = 6, 0.5, 30.0


async def retrying(call: Callable[[], Awaitable[T]]) -> T:
    return await on_transient(call, attempts=RETRY_ATTEMPTS, base_s=RETRY_BASE_S, max_s=RETRY_MAX_S)


def _text(value: Decimal | None) -> str | None:
    return None if value is None else format(value, "f")
