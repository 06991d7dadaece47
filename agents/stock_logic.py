"""Available-to-sell and reservations as pure functions: (state, event) -> (state, outputs).

The stock agent owns each SKU (its input topic is keyed by SKU) and calls ``apply``; nothing here
touches Faust, so the rules are tested exhaustively (tests/unit/test_stock_logic.py, hypothesis).

The arithmetic, per SKU:

    erp_available = sum over sellable warehouses of (actual_qty - reserved_qty)    [ERP's view]
    held          = open reservations + committed ones the ERP's position does not show yet
    free          = max(0, erp_available - held - safety_stock)
    offered[c]    = max(0, min(cap_c, floor(free * share_c)) - buffer_c)           [per channel]

A reservation is taken against ``free`` (the whole pool: the allocation rules shape what each
channel *shows*, not what a sale may take). An order line is reserved at most once: its key is
``order_key#line_id``; a released or consumed one is remembered (a bounded tombstone list) so a
replayed reservation stays a no-op. A committed reservation stops counting once the ERP's bin of
the order's warehouse is at least as new as the sales order, because from then on the ERP's
``reserved_qty`` (and, after shipment, its ``actual_qty``) includes it: the hand-over never counts
the units twice and never forgets them.

A SKU with no ERP position is *untracked* (a non-stock item in ERPNext terms): its lines are
accepted without reservation and nothing is offered for it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from retail_sync.settings import ChannelAllocation, Settings
from streams.stock import (
    CommitStock,
    ErpBin,
    ErpStockChanged,
    InventoryPushed,
    InventoryUpdate,
    LineAllocation,
    ReleaseStock,
    Reservation,
    ReserveStock,
    StockEvent,
    StockState,
    Told,
    reservation_key,
)

#: appended to an ERP timestamp: sorts after it and before any later timestamp of the same format
AFTER = "~"


@dataclass(frozen=True)
class StockRules:
    """The settings the arithmetic needs, for one SKU."""

    channels: Sequence[str]  # channels offered stock (those we can push to)
    erp_warehouse: str  # where our sales orders reserve
    safety: int = 0
    allocation: Mapping[str, ChannelAllocation] = field(default_factory=dict)
    warehouses: frozenset[str] = frozenset()  # sellable warehouses; empty: all
    tombstones: int = 512

    @classmethod
    def from_settings(cls, settings: Settings, sku: str, channels: Sequence[str]) -> StockRules:
        warehouses = frozenset(w.strip() for w in settings.erp_stock_warehouses.split(",") if w.strip())
        return cls(channels=tuple(channels), erp_warehouse=settings.erp_warehouse,
                   safety=settings.safety_for(sku), allocation=settings.stock_allocation,
                   warehouses=warehouses, tombstones=settings.stock_tombstones)

    def sellable(self, warehouse: str) -> bool:
        return not self.warehouses or warehouse in self.warehouses


@dataclass
class StockOutcome:
    state: StockState | None
    changed: bool = False
    answer: list[LineAllocation] | None = None  # for a ReserveStock: each line's allocation
    tracked: bool = True
    updates: list[InventoryUpdate] = field(default_factory=list)


# --- the arithmetic ---------------------------------------------------------------------------


def tracked(state: StockState | None) -> bool:
    return bool(state and state.bins)


def on_hand(state: StockState, rules: StockRules) -> int:
    return sum(b.actual_qty for b in state.bins.values() if rules.sellable(b.warehouse))


def erp_available(state: StockState, rules: StockRules) -> int:
    return sum(b.actual_qty - b.reserved_qty for b in state.bins.values()
               if rules.sellable(b.warehouse))


def covered(reservation: Reservation, state: StockState, rules: StockRules) -> bool:
    """Whether the ERP's own position already includes this committed reservation."""
    if reservation.status != "committed" or reservation.erp_created is None:
        return False
    erp_bin = state.bins.get(rules.erp_warehouse)
    if erp_bin is None:  # the ERP holds no stock of it where it reserves: nothing to hand over
        return True
    return erp_bin.modified >= reservation.erp_created


def held(state: StockState) -> int:
    """Units our reservations hold that the ERP does not show yet (covered ones are gone)."""
    return sum(r.quantity for r in state.reservations.values())


def free(state: StockState, rules: StockRules) -> int:
    return max(0, erp_available(state, rules) - held(state) - rules.safety)


def offered_to(channel: str, available: int, rules: StockRules) -> int:
    rule = rules.allocation.get(channel) or ChannelAllocation()
    shown = math.floor(available * rule.share + 1e-9)
    if rule.cap is not None:
        shown = min(shown, rule.cap)
    return max(0, shown - rule.buffer)


def ats(state: StockState, rules: StockRules, channels: Sequence[str] | None = None) -> dict[str, int]:
    available = free(state, rules)
    return {c: offered_to(c, available, rules) for c in (channels or rules.channels)}


# --- applying events ----------------------------------------------------------------------------


def apply(state: StockState | None, event: StockEvent, rules: StockRules,
          now: datetime) -> StockOutcome:
    if isinstance(event, ErpStockChanged):
        outcome = _on_erp(state, event, rules)
        cause, cause_at = "erp", _erp_time(event.modified) or event.observed_at
    elif isinstance(event, ReserveStock):
        outcome = _on_reserve(state, event, rules)
        cause, cause_at = "order", event.requested_at
    elif isinstance(event, ReleaseStock):
        outcome = _on_release(state, event, rules)
        cause, cause_at = "order", event.at
    elif isinstance(event, CommitStock):
        outcome = _on_commit(state, event, rules)
        cause, cause_at = "order", event.at
    elif isinstance(event, InventoryPushed):
        return _on_pushed(state, event)
    else:  # pragma: no cover - the union is closed
        raise TypeError(f"unknown stock event {type(event).__name__}")
    if outcome.changed and outcome.state is not None:
        outcome.state = outcome.state.model_copy(update={"updated_at": now})
        outcome.updates = _updates(outcome.state, rules, cause, cause_at, now)
        if outcome.updates:
            offered = {**outcome.state.offered, **{u.channel: u.quantity for u in outcome.updates}}
            outcome.state = outcome.state.model_copy(update={"offered": offered})
    return outcome


def _erp_time(modified: str) -> datetime | None:
    try:
        return datetime.fromisoformat(modified).replace(tzinfo=UTC)
    except ValueError:
        return None


def _updates(state: StockState, rules: StockRules, cause: str, cause_at: datetime,
             now: datetime) -> list[InventoryUpdate]:
    if not tracked(state):
        return []
    return [
        InventoryUpdate(channel=c, sku=state.sku, quantity=q, cause=cause,  # type: ignore[arg-type]
                        cause_at=cause_at, computed_at=now)
        for c, q in ats(state, rules).items() if state.offered.get(c) != q
    ]


def _retire(state: StockState, keys: Sequence[str], why: str, rules: StockRules) -> StockState:
    """Drop reservations ``keys`` and remember them (bounded: the oldest are forgotten first)."""
    if not keys:
        return state
    reservations = {k: r for k, r in state.reservations.items() if k not in keys}
    tombstones = {**state.tombstones, **dict.fromkeys(keys, why)}
    excess = len(tombstones) - rules.tombstones
    if excess > 0:
        tombstones = dict(list(tombstones.items())[excess:])
    return state.model_copy(update={"reservations": reservations, "tombstones": tombstones})


def _consume_covered(state: StockState, rules: StockRules) -> StockState:
    done = [k for k, r in state.reservations.items() if covered(r, state, rules)]
    return _retire(state, done, "consumed", rules)


def _on_erp(state: StockState | None, event: ErpStockChanged, rules: StockRules) -> StockOutcome:
    if not rules.sellable(event.warehouse) and event.warehouse != rules.erp_warehouse:
        return StockOutcome(state=state)
    state = state or StockState(sku=event.sku)
    known = state.bins.get(event.warehouse)
    if known is not None and event.modified <= known.modified:
        return StockOutcome(state=state)  # a repeat or an older position
    erp_bin = ErpBin(warehouse=event.warehouse, actual_qty=event.actual_qty,
                     reserved_qty=event.reserved_qty, modified=event.modified,
                     observed_at=event.observed_at)
    new = state.model_copy(update={"bins": {**state.bins, event.warehouse: erp_bin}})
    return StockOutcome(state=_consume_covered(new, rules), changed=True)


def _on_reserve(state: StockState | None, event: ReserveStock, rules: StockRules) -> StockOutcome:
    keys = [reservation_key(event.order_key, ln.line_id) for ln in event.lines]
    if not tracked(state) or (state and all(state.tombstones.get(k) == "untracked" for k in keys)):
        return _accept_untracked(state, event, rules)
    assert state is not None
    reservations = dict(state.reservations)
    answer: list[LineAllocation] = []
    available = free(state, rules)
    for line in event.lines:
        key = reservation_key(event.order_key, line.line_id)
        known = reservations.get(key)
        if known is not None:
            answer.append(LineAllocation(line_id=line.line_id, requested=known.requested,
                                         reserved=known.quantity))
            continue
        if key in state.tombstones:  # released, consumed or untracked: a replay, hold nothing
            was_untracked = state.tombstones[key] == "untracked"
            answer.append(LineAllocation(line_id=line.line_id, requested=line.quantity,
                                         reserved=line.quantity if was_untracked else 0))
            continue
        taken = min(line.quantity, available)
        available -= taken
        reservations[key] = Reservation(
            order_key=event.order_key, channel=event.channel, line_id=line.line_id,
            requested=line.quantity, quantity=taken, reserved_at=event.requested_at)
        answer.append(LineAllocation(line_id=line.line_id, requested=line.quantity, reserved=taken))
    changed = reservations != state.reservations
    new = state.model_copy(update={"reservations": reservations}) if changed else state
    return StockOutcome(state=new, changed=changed, answer=answer)


def _accept_untracked(state: StockState | None, event: ReserveStock,
                      rules: StockRules) -> StockOutcome:
    """No ERP position: accept the lines as they are, and remember them (as tombstones) so a
    replay after the SKU becomes tracked does not reserve them then."""
    lines = [LineAllocation(line_id=ln.line_id, requested=ln.quantity, reserved=ln.quantity)
             for ln in event.lines]
    state = state or StockState(sku=event.sku)
    keys = [reservation_key(event.order_key, ln.line_id) for ln in event.lines]
    if all(k in state.tombstones for k in keys):
        return StockOutcome(state=state, answer=lines, tracked=False)
    return StockOutcome(state=_retire(state, keys, "untracked", rules), changed=True,
                        answer=lines, tracked=False)


def _of_order(state: StockState, order_key: str) -> list[str]:
    return [k for k, r in state.reservations.items() if r.order_key == order_key]


def _on_release(state: StockState | None, event: ReleaseStock, rules: StockRules) -> StockOutcome:
    if state is None:
        return StockOutcome(state=None)
    keys = _of_order(state, event.order_key)
    if not keys:
        return StockOutcome(state=state)
    return StockOutcome(state=_retire(state, keys, "released", rules), changed=True)


def _on_commit(state: StockState | None, event: CommitStock, rules: StockRules) -> StockOutcome:
    if state is None:
        return StockOutcome(state=None)
    keys = [k for k in _of_order(state, event.order_key) if state.reservations[k].status == "open"]
    if not keys:
        return StockOutcome(state=state)
    erp_created = event.erp_created
    if erp_created is None:  # no creation time from the ERP: covered by its next change
        erp_bin = state.bins.get(rules.erp_warehouse)
        erp_created = (erp_bin.modified + AFTER) if erp_bin else ""
    reservations = dict(state.reservations)
    for key in keys:
        reservations[key] = reservations[key].model_copy(update={
            "status": "committed", "erp_sales_order": event.erp_sales_order,
            "erp_created": erp_created})
    new = state.model_copy(update={"reservations": reservations})
    return StockOutcome(state=_consume_covered(new, rules), changed=True)


def _on_pushed(state: StockState | None, event: InventoryPushed) -> StockOutcome:
    if state is None:
        return StockOutcome(state=None)
    told = Told(quantity=event.quantity, at=event.pushed_at, ok=event.ok,
                mechanism=event.mechanism, reference=event.reference, error=event.error)
    known = state.told.get(event.channel)
    if known is not None and known.at >= told.at:
        return StockOutcome(state=state)  # the same report again, or an older one
    update: dict[str, object] = {"told": {**state.told, event.channel: told}}
    if not event.ok and state.offered.get(event.channel) == event.quantity:
        # not delivered: forget the offer so the next change sends the channel its quantity again
        update["offered"] = {c: q for c, q in state.offered.items() if c != event.channel}
    return StockOutcome(state=state.model_copy(update=update), changed=True)


def view(state: StockState, rules: StockRules, channels: Sequence[str]) -> dict[str, object]:
    """``GET /inventory/{sku}``: the position, the reservations and every channel's numbers."""
    open_ = [r for r in state.reservations.values() if r.status == "open"]
    committed = [r for r in state.reservations.values() if r.status == "committed"]
    return {
        "sku": state.sku,
        "tracked": tracked(state),
        "on_hand": on_hand(state, rules),
        "erp_reserved": sum(b.reserved_qty for b in state.bins.values() if rules.sellable(b.warehouse)),
        "erp_available": erp_available(state, rules),
        "reserved_open": sum(r.quantity for r in open_),
        "reserved_committed_pending_erp": sum(r.quantity for r in committed),
        "safety_stock": rules.safety,
        "free": free(state, rules),
        "ats": ats(state, rules, channels),
        "offered": dict(state.offered),
        "told": {c: t.model_dump(mode="json") for c, t in state.told.items()},
        "bins": {w: b.model_dump(mode="json") for w, b in state.bins.items()},
        "reservations": [r.model_dump(mode="json") for r in state.reservations.values()],
        "tombstones": len(state.tombstones),
        "updated_at": state.updated_at.isoformat() if state.updated_at else None,
    }
