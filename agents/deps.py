"""What an agent is given: the composition root (``retail_sync.context.Context``) satisfies these
Protocols, so the import points from the wiring to the agents and never back.

``AgentSettings`` names the settings values the agents read; ``retail_sync.settings.Settings``
has them all. The rules' policies are built from them once, when an agent is registered
(``order_policies``, ``allocation_policy``)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol

import faust

from retail_sync.agents.intake import Intake
from retail_sync.agents.retry import RetrySettings
from retail_sync.connectors.breaker import CircuitBreaker
from retail_sync.streams.rules.policies import (
    AllocationPolicy,
    ChannelAllocation,
    EditPolicy,
    OrderPolicies,
    StockPolicy,
)
from retail_sync.streams.topics import Topics


class AgentSettings(RetrySettings, Protocol):
    """The settings values agents read (a subset of ``retail_sync.settings.Settings``); the
    retry budgets are ``RetrySettings``'."""

    @property
    def app_id(self) -> str: ...
    @property
    def partitions(self) -> int: ...
    @property
    def batch_max(self) -> int: ...
    @property
    def batch_within_s(self) -> float: ...
    @property
    def batch_within_max_s(self) -> float: ...
    @property
    def poll_interval_s(self) -> float: ...
    @property
    def wms_poll_interval_s(self) -> float: ...
    @property
    def erp_stock_poll_interval_s(self) -> float: ...
    @property
    def erp_order_poll_interval_s(self) -> float: ...
    @property
    def erp_concurrency(self) -> int: ...
    @property
    def marketplace_command_concurrency(self) -> int: ...
    @property
    def inventory_push_batch(self) -> int: ...
    @property
    def inventory_push_window_s(self) -> float: ...
    @property
    def order_retention_days(self) -> float: ...
    @property
    def order_total_tolerance_units(self) -> float: ...
    @property
    def erp_warehouse(self) -> str: ...
    @property
    def erp_stock_warehouses(self) -> str: ...
    @property
    def stock_default_policy(self) -> StockPolicy: ...
    @property
    def stock_policy(self) -> Mapping[str, StockPolicy]: ...
    @property
    def order_edit_default_policy(self) -> EditPolicy: ...
    @property
    def order_edit_policy(self) -> Mapping[str, EditPolicy]: ...
    @property
    def stock_safety_stock(self) -> int: ...
    @property
    def stock_safety_by_sku(self) -> Mapping[str, int]: ...
    @property
    def stock_allocation(self) -> Mapping[str, ChannelAllocation]: ...
    @property
    def stock_inline_lines(self) -> int: ...
    @property
    def producer_max_request_bytes(self) -> int: ...


class AgentTables(Protocol):
    @property
    def orders(self) -> Any: ...  # faust.Table: order_key -> OrderState (indexed by other ids)
    @property
    def cursors(self) -> Any: ...  # poller / feed cursors
    @property
    def stock(self) -> Any: ...  # SKU -> StockState, and SKU|order#line -> Reservation


class AgentDeps(Protocol):
    """The app, its topics and tables, the metrics, the settings values, the factories of the
    external systems' connectors and the wiring's hooks (``retail_sync.context.Context`` is one)."""

    @property
    def app(self) -> faust.App: ...
    @property
    def settings(self) -> AgentSettings: ...
    @property
    def topics(self) -> Topics: ...
    @property
    def tables(self) -> AgentTables: ...
    @property
    def metrics(self) -> Any: ...  # retail_sync.metrics.Metrics (the wiring's registry)
    @property
    def erp_factory(self) -> Callable[[], Any]: ...
    @property
    def channels(self) -> Mapping[str, Any]: ...  # channel -> ChannelPlugin
    @property
    def outbound(self) -> Mapping[str, Any]: ...  # channel -> ChannelOutbound
    @property
    def stock_feed_factory(self) -> Callable[[], Any] | None: ...
    @property
    def wms_factory(self) -> Callable[[], Any] | None: ...
    @property
    def erp_order_feed_factory(self) -> Callable[[], Any] | None: ...
    @property
    def audit_refused_later(self) -> Callable[..., Awaitable[None]]:
        """(deps, order_key, previous state, event, problem, new state): the audit record of an
        admin action the order agent refused after it was accepted at the door."""

    def breaker(self, system: str) -> CircuitBreaker: ...

    @property
    def intake(self) -> Intake: ...  # orders waiting for their stock answer (agents/intake.py)


def order_policies(settings: AgentSettings) -> OrderPolicies:
    """Each channel's stock and edit policy, as the order rules take them."""
    return OrderPolicies(stock_default=settings.stock_default_policy,
                         stock=dict(settings.stock_policy),
                         edit_default=settings.order_edit_default_policy,
                         edit=dict(settings.order_edit_policy))


#: what one open order line kept in its SKU's stock record may take, at most (its JSON, key and
#: array, is ~110 bytes with marketplace order ids of today's lengths): the bound of open lines
#: in a SKU's record is lowered so that twice this per line fits in a produce request
INLINE_LINE_BYTES = 250


def allocation_policy(settings: AgentSettings) -> AllocationPolicy:
    """Sellable warehouses, safety stock and allocation, as the stock rules take them."""
    return AllocationPolicy(
        erp_warehouse=settings.erp_warehouse,
        warehouses=AllocationPolicy.parse_warehouses(settings.erp_stock_warehouses),
        safety=settings.stock_safety_stock, safety_by_sku=dict(settings.stock_safety_by_sku),
        allocation=dict(settings.stock_allocation),
        inline_lines=min(settings.stock_inline_lines,
                         settings.producer_max_request_bytes // (2 * INLINE_LINE_BYTES)))

