"""What applying one event to an order gives: the new state and the commands it sends.

Shared by ``streams.rules.lifecycle`` and ``streams.rules.aftersale`` (which each import it;
neither imports the other's callers)."""

from __future__ import annotations

from dataclasses import dataclass, field

from retail_sync.streams.commands import (
    ChannelCommand,
    CommitStock,
    ErpCommand,
    ReleaseStock,
    ReserveStock,
    WmsCommand,
)
from retail_sync.streams.state import OrderState

StockCommand = ReserveStock | ReleaseStock | CommitStock


@dataclass
class Outcome:
    state: OrderState | None
    erp_requests: list[ErpCommand] = field(default_factory=list)
    stock_commands: list[StockCommand] = field(default_factory=list)
    marketplace_commands: list[ChannelCommand] = field(default_factory=list)
    wms_commands: list[WmsCommand] = field(default_factory=list)
    changed: bool = False
    first_confirmation: bool = False
    first_refund_posted: bool = False
    decided: bool = False  # the stock decision was taken by this event
    problem: str | None = None  # drift to report as a sync exception; the state is kept as is


def merge(first: Outcome, second: Outcome) -> Outcome:
    """Two steps of one event as one outcome (the state of the second, commands of both)."""
    return Outcome(
        state=second.state, changed=first.changed or second.changed,
        erp_requests=[*first.erp_requests, *second.erp_requests],
        stock_commands=[*first.stock_commands, *second.stock_commands],
        marketplace_commands=[*first.marketplace_commands, *second.marketplace_commands],
        wms_commands=[*first.wms_commands, *second.wms_commands],
        first_confirmation=first.first_confirmation or second.first_confirmation,
        decided=first.decided or second.decided,
        problem=second.problem or first.problem)
