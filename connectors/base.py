"""Contracts between the engine and the systems it talks to. One module per system implements them."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from streams.models import Order


@dataclass(frozen=True, slots=True)
class ErpPostResult:
    """What the ERP said about a sales-order post."""

    erp_sales_order: str  # the ERP's document number, e.g. SAL-ORD-2026-00001
    created: bool  # False when the ERP answered with an order it already had (idempotent repeat)


class ErpConnector(Protocol):
    """An ERP that accepts sales orders, idempotently on the marketplace order reference."""

    async def create_sales_order(self, order_key: str, order: Order) -> ErpPostResult:
        """Create (or find) the sales order for ``order_key``.

        Raises RetryableError / RateLimitedError for transient failures and PermanentError when
        the ERP refuses the document.
        """
        ...

    async def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class PolledOrder:
    """One order read from a channel that we poll, as the channel's mapper expects it."""

    marketplace_order_id: str
    body: str  # JSON text handed to the channel's mapper by the ingest agent
    delivery_id: str  # identifies this version of the order, e.g. "<id>@<last update>"


@dataclass(frozen=True, slots=True)
class PollResult:
    orders: Sequence[PolledOrder]
    cursor: str | None  # where the next poll starts; None keeps the previous cursor
    pause_s: float | None = None  # the channel asked us to wait (throttled part-way)


class OrderSource(Protocol):
    """A channel that delivers orders when asked (polling API, batch files).

    ``poll`` must be restartable from ``cursor``: the poller stores the returned cursor only after
    every polled order is on Kafka, so after a crash the same orders come again (and are
    deduplicated by order key downstream) but none is skipped.
    """

    channel: str

    async def poll(self, cursor: str | None) -> PollResult: ...

    async def after_persist(self, orders: Sequence[PolledOrder]) -> None:
        """Called once the orders are on Kafka (e.g. Walmart-style acknowledgement)."""
        ...

    async def close(self) -> None: ...


@dataclass(frozen=True)
class ChannelPlugin:
    """Everything the engine needs to know about one marketplace.

    ``mapper`` turns the parsed JSON of a delivery into a canonical Order (raising MappingError);
    ``source`` builds the poller's OrderSource from Settings, or is None for push-only channels
    (webhooks). A new marketplace is one connector module, one mapper and one of these.
    """

    channel: str
    mapper: Callable[[Any], Order]
    source: Callable[[Any], OrderSource | None] | None = None
    description: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
