"""The policies the rules apply, as frozen values.

The central settings (``retail_sync.settings``) hold the same fields; the agents build these
values from them once, when they are registered, and hand them to the rules."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

StockPolicy = Literal["cancel", "partial", "backorder"]
EditPolicy = Literal["apply", "exception"]


class ChannelAllocation(BaseModel):
    """How much of a SKU's available-to-sell one channel is offered (see docs/ARCHITECTURE.md).

    offered = max(0, min(cap, floor(free * share)) - buffer); free is on hand minus ERP and open
    reservations minus safety stock."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    share: float = Field(1.0, ge=0, le=1)
    cap: int | None = Field(None, ge=0)
    buffer: int = Field(0, ge=0)


@dataclass(frozen=True)
class OrderPolicies:
    """Per channel: what happens to an order whose lines cannot all be reserved (``stock``) and
    to a marketplace's edit of its lines (``edit``); channels not named get the defaults."""

    stock_default: StockPolicy = "cancel"
    stock: Mapping[str, StockPolicy] = field(default_factory=dict)
    edit_default: EditPolicy = "apply"
    edit: Mapping[str, EditPolicy] = field(default_factory=dict)

    def stock_for(self, channel: str) -> StockPolicy:
        return self.stock.get(channel, self.stock_default)

    def edit_for(self, channel: str) -> EditPolicy:
        return self.edit.get(channel, self.edit_default)


#: open order lines a SKU's stock record keeps inside it (``RETAIL_SYNC_STOCK_INLINE_LINES``)
DEFAULT_INLINE_LINES = 1000


@dataclass(frozen=True)
class AllocationPolicy:
    """Where our sales orders reserve, which warehouses are sellable (empty: all), the safety
    stock (default and per SKU) and each channel's allocation: every SKU's ``StockRules``."""

    erp_warehouse: str
    warehouses: frozenset[str] = frozenset()
    safety: int = 0
    safety_by_sku: Mapping[str, int] = field(default_factory=dict)
    allocation: Mapping[str, ChannelAllocation] = field(default_factory=dict)
    inline_lines: int = DEFAULT_INLINE_LINES  # open lines kept inside a SKU's record

    def safety_for(self, sku: str) -> int:
        return self.safety_by_sku.get(sku, self.safety)

    @staticmethod
    def parse_warehouses(names: str) -> frozenset[str]:
        """``"A, B,"`` -> {"A", "B"}: the comma-separated form the settings keep."""
        return frozenset(w.strip() for w in names.split(",") if w.strip())
