"""What agents and views are given: the composition root builds one of these per app.

``Context`` satisfies ``agents.deps.AgentDeps`` (structurally): the agents type their
``register(ctx)`` on that Protocol and never import this module or the settings."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import faust

from retail_sync import audit
from retail_sync.agents.intake import Intake
from retail_sync.connectors.breaker import CircuitBreaker
from retail_sync.connectors.contracts import (
    ChannelOutbound,
    ErpConnector,
    ErpOrderFeed,
    StockFeed,
    WmsConnector,
)
from retail_sync.connectors.dedupe import DeliveryDeduper
from retail_sync.connectors.plugin import ChannelPlugin
from retail_sync.metrics import Metrics
from retail_sync.settings import Settings
from retail_sync.streams.topics import Topics
from retail_sync.tables.orders import CodecTable


@dataclass
class Tables:
    orders: CodecTable  # order_key -> OrderState, indexed by the other ids (tables/store_index.py)
    cursors: faust.Table[str, Any]
    stock: faust.Table[str, Any]  # SKU -> StockState, and SKU|order#line -> Reservation


@dataclass
class Context:
    app: faust.App
    settings: Settings
    topics: Topics
    tables: Tables
    metrics: Metrics
    erp_factory: Callable[[], ErpConnector]
    deduper: DeliveryDeduper
    channels: dict[str, ChannelPlugin]
    outbound: dict[str, ChannelOutbound] = field(default_factory=dict)  # channel -> its writer
    stock_feed_factory: Callable[[], StockFeed | None] | None = None
    wms_factory: Callable[[], WmsConnector | None] | None = None
    erp_order_feed_factory: Callable[[], ErpOrderFeed | None] | None = None
    breakers: dict[str, CircuitBreaker] = field(default_factory=dict)
    #: orders taken in and waiting for their stock answer (agents/intake.py); no limit by default
    intake: Intake = field(default_factory=lambda: Intake(0))
    #: the order agent's note of an admin action it refused after accepting it (audit.py)
    audit_refused_later: Callable[..., Awaitable[None]] = audit.refused_later

    def breaker(self, system: str) -> CircuitBreaker:
        """The circuit breaker of one external system (a channel name, "erp", "wms")."""
        if system not in self.breakers:
            s = self.settings
            self.breakers[system] = CircuitBreaker(
                system, failures=s.breaker_failures, cool_down_s=s.breaker_cool_down_s,
                max_cool_down_s=s.breaker_max_cool_down_s)
            bind = getattr(self.metrics, "bind_breaker", None)  # retail_sync_circuit_open
            if bind is not None:
                bind(self.breakers[system])
        return self.breakers[system]
