"""Available-to-sell and reservations as pure functions: (state, event) -> (state, outputs).

The stock agent owns each SKU (its input topic is keyed by SKU) and calls ``apply``; nothing here
touches Faust or the settings (the policy comes in as ``StockRules``, built by the agent from an
``AllocationPolicy``), so the rules are tested exhaustively (tests/unit/test_stock_logic.py,
hypothesis).
State is split in two so an event costs about the same whatever the SKU's order volume: a
bounded ``StockState`` per SKU (ERP positions, units held, its open lines up to
``StockRules.inline_lines``, committed reservations awaiting the ERP, what each channel was
offered and told) and one ``Reservation`` record per order line once it leaves ``open`` (or
while open, past the bound), read through ``lines`` (a mapping) and written back as
``StockOutcome.writes``. A line thus costs one changelog record (committed or released), not
two (open, then committed).

After a crash. Both kinds of record live in one table (the line's key is ``SKU|order#line``) and
the agent writes an event's line records before the SKU's record, so their changelog (one
partition per SKU) holds them in that order and whatever survives a SIGKILL is a prefix of it:
the SKU's record never runs ahead of its lines. Events are applied with their stock-events
position (``StockState.seq`` is the last one applied): an event at or below ``seq`` is already
in the record and is only answered again; a line record written after ``seq`` (``stock_seq``)
was written by an event being replayed, and the line is read as it was before (``_AsBefore``:
not there if it was reserved after ``seq``, ``reserved_seq``; else open or committed as the
SKU's record says).

The arithmetic, per SKU:

    erp_available = sum over sellable warehouses of (actual_qty - reserved_qty)    [ERP's view]
    held          = open reservations + committed ones the ERP does not show yet
    free          = max(0, erp_available - held - safety_stock)
    offered[c]    = max(0, min(cap_c, floor(free * share_c)) - buffer_c)           [per channel]

A reservation is taken against ``free`` (the whole pool: the allocation rules shape what each
channel *shows*, not what a sale may take). An order line is reserved at most once: its record
stays after it is released, consumed or accepted untracked, so a replayed reservation is a no-op.
A committed reservation stops counting once the ERP's bin of the order's warehouse is at least as
new as the sales order, because from then on the ERP's ``reserved_qty`` (and, after shipment, its
``actual_qty``) includes it: the hand-over never counts the units twice in a way that lets them
be sold, and never forgets them.

A SKU with no ERP position is *untracked* (a non-stock item in ERPNext terms): its lines are
accepted without reservation and nothing is offered for it.

Long module: one SKU's arithmetic and every stock event's rule, with the crash-replay reading
(``_AsBefore``) they all rely on; split, the invariants they keep together would sit apart.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from retail_sync.streams.commands import CommitStock, InventoryUpdate, ReleaseStock, ReserveStock
from retail_sync.streams.erp_time import EARLIEST, JUST_AFTER
from retail_sync.streams.events import ErpStockChanged, InventoryPushed, LineAllocation, StockEvent
from retail_sync.streams.rules.policies import (
    DEFAULT_INLINE_LINES,
    AllocationPolicy,
    ChannelAllocation,
)
from retail_sync.streams.stock import (
    Backorder,
    BackorderRelease,
    ErpBin,
    OpenLine,
    Pending,
    Reservation,
    StockState,
    Told,
    reservation_key,
)


@dataclass(frozen=True)
class StockRules:
    """The policy the arithmetic applies, for one SKU."""

    channels: Sequence[str]  # channels offered stock (those we can push to)
    erp_warehouse: str  # where our sales orders reserve
    safety: int = 0
    allocation: Mapping[str, ChannelAllocation] = field(default_factory=dict)
    warehouses: frozenset[str] = frozenset()  # sellable warehouses; empty: all
    #: open lines kept inside the SKU's record (``StockState.open``); past that, records
    inline_lines: int = DEFAULT_INLINE_LINES

    @classmethod
    def for_sku(cls, policy: AllocationPolicy, sku: str, channels: Sequence[str]) -> StockRules:
        return cls(channels=tuple(channels), erp_warehouse=policy.erp_warehouse,
                   safety=policy.safety_for(sku), allocation=policy.allocation,
                   warehouses=policy.warehouses, inline_lines=policy.inline_lines)

    def sellable(self, warehouse: str) -> bool:
        return not self.warehouses or warehouse in self.warehouses


@dataclass
class StockOutcome:
    state: StockState | None
    changed: bool = False
    answer: list[LineAllocation] | None = None  # for a ReserveStock: each line's allocation
    tracked: bool = True
    updates: list[InventoryUpdate] = field(default_factory=list)
    writes: dict[str, Reservation] = field(default_factory=dict)  # line records to write
    releases: list[BackorderRelease] = field(default_factory=list)  # backorders goods arrived for


Lines = Mapping[str, Reservation]


class LineLookup(Protocol):
    """What ``view`` reads of the line records: lookup by key (a view runs outside stream
    iteration and looks keys up across partitions; it never iterates them)."""

    def get(self, key: str, default: Reservation | None = None) -> Reservation | None: ...


# --- the arithmetic ---------------------------------------------------------------------------


def tracked(state: StockState | None) -> bool:
    return bool(state and state.bins)


def on_hand(state: StockState, rules: StockRules) -> int:
    return sum(b.actual_qty for b in state.bins.values() if rules.sellable(b.warehouse))


def erp_available(state: StockState, rules: StockRules) -> int:
    return sum(b.actual_qty - b.reserved_qty for b in state.bins.values()
               if rules.sellable(b.warehouse))


def covered(pending: Pending, state: StockState, rules: StockRules) -> bool:
    """Whether the ERP's own position already includes this committed reservation."""
    erp_bin = state.bins.get(rules.erp_warehouse)
    if erp_bin is None:  # the ERP holds no stock of it where it reserves: nothing to hand over
        return True
    return erp_bin.modified >= pending.erp_created


def held(state: StockState) -> int:
    """Units our reservations hold that the ERP does not show yet (covered ones are gone)."""
    return state.held


def free(state: StockState, rules: StockRules) -> int:
    return max(0, erp_available(state, rules) - state.held - rules.safety)


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


def apply(state: StockState | None, event: StockEvent, rules: StockRules, now: datetime,
          lines: Lines | None = None, offset: int | None = None) -> StockOutcome:
    """``lines`` reads the line records (reservation_key -> Reservation); ``offset`` is the
    event's position on stock-events (None: the next after ``state.seq``)."""
    lines = lines if lines is not None else {}
    if state is not None and offset is not None and offset <= state.seq:
        return _already_applied(state, event, lines, offset)
    seq = offset if offset is not None else (state.seq + 1 if state is not None else 1)
    lines = _AsBefore(lines, state)
    if isinstance(event, ErpStockChanged):
        outcome = _on_erp(state, event, rules)
        cause, cause_at = "erp", (event.modified if event.modified != EARLIEST
                                  else event.observed_at)
    elif isinstance(event, ReserveStock):
        outcome = _on_reserve(state, event, rules, lines, seq)
        cause, cause_at = "order", event.requested_at
    elif isinstance(event, ReleaseStock):
        outcome = _on_release(state, event, lines)
        cause, cause_at = "order", event.at
    elif isinstance(event, CommitStock):
        outcome = _on_commit(state, event, rules, lines)
        cause, cause_at = "order", event.at
    elif isinstance(event, InventoryPushed):
        outcome = _on_pushed(state, event)
        cause, cause_at = "", now
    else:  # pragma: no cover - the union is closed
        raise TypeError(f"unknown stock event {type(event).__name__}")
    outcome.writes = {k: r.model_copy(update={"stock_seq": seq}) for k, r in outcome.writes.items()}
    if outcome.state is not None and outcome.state.backorders and \
            isinstance(event, ErpStockChanged | CommitStock | ReleaseStock):
        released, outcome.releases = _release_backorders(outcome.state, rules, seq, now)
        outcome.changed = outcome.changed or bool(outcome.releases)
        outcome.state = released
    if outcome.changed and outcome.state is not None:
        outcome.state = outcome.state.model_copy(update={"seq": seq} if not cause else
                                                 {"seq": seq, "updated_at": now})
        if cause:
            outcome.updates = _updates(outcome.state, rules, cause, cause_at, now)
        if outcome.updates:
            offered = {**outcome.state.offered, **{u.channel: u.quantity for u in outcome.updates}}
            outcome.state = outcome.state.model_copy(update={"offered": offered})
    return outcome


class _AsBefore(Mapping[str, Reservation]):
    """The order lines as they were before the event being applied. An open line the SKU's
    record keeps (``StockState.open``) is read from there. A line record written after the SKU's
    record (``stock_seq > seq``) was written by an event after it (this very one, or one before
    it in a replay) before a crash lost the SKU's record (the changelog keeps a prefix, lines
    first): read it as it was before. A line reserved after the SKU's record (``reserved_seq >
    seq``) was not there; one reserved before it was open (in the SKU's record or in a record of
    its own) or committed (``pending``). Untracked acceptances change no SKU record and stay as
    they are.

    A committed line the SKU's record no longer has in ``pending`` was handed over to the ERP
    (consumed): the hand-over changes only the SKU's record, not the line's (a release of a
    committed line writes ``released``, so nothing else takes a line out of ``pending``)."""

    def __init__(self, lines: Lines | LineLookup, state: StockState | None) -> None:
        self.lines, self.state = lines, state

    # (the ignore: one signature for Mapping.get's overloads)
    def get(self, key: str, default: Reservation | None = None) -> Reservation | None:  # type: ignore[override]
        state = self.state
        record = line_now(state, self.lines, key)
        if record is None or state is None or record.status == "untracked":
            return record if record is not None else default
        if record.stock_seq <= state.seq:
            if record.status == "committed" and key not in state.pending:
                return record.model_copy(update={"status": "consumed"})  # handed over since
            return record
        if key in state.pending:  # committed before this event: let go or consumed by it
            return record.model_copy(update={"status": "committed",
                                             "erp_created": state.pending[key].erp_created})
        if record.status == "open" or record.reserved_seq > state.seq:
            return default  # reserved after the SKU's record: not there before it
        # released or committed (and maybe consumed) since: it was open before
        return record.model_copy(update={"status": "open", "erp_sales_order": None,
                                         "erp_created": None})

    def __getitem__(self, key: str) -> Reservation:
        found = self.get(key)
        if found is None:
            raise KeyError(key)
        return found

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and self.get(key) is not None

    def __iter__(self) -> Iterator[str]:  # the SKU's open lines and the records (a view's
        # lookup has no records to iterate)
        inline = self.state.open if self.state is not None else {}
        records = self.lines if isinstance(self.lines, Mapping) else {}
        return iter({**dict.fromkeys(inline), **dict.fromkeys(records)})

    def __len__(self) -> int:
        return sum(1 for _ in self)


def line_now(state: StockState | None, lines: Lines | LineLookup, key: str) -> Reservation | None:
    """Line ``key`` as it stands: open in the SKU's record ``state``, else its own record."""
    inline = state.open.get(key) if state is not None else None
    return inline.reservation() if inline is not None else lines.get(key)


def read_lines(lines: Lines | LineLookup, state: StockState | None) -> Mapping[str, Reservation]:
    """The line records as the SKU's record ``state`` reads them: a committed line it handed over
    reads ``consumed`` (``_AsBefore``). For views and retention; ``apply`` reads this way too."""
    return _AsBefore(lines, state)


def _already_applied(state: StockState, event: StockEvent, lines: Lines,
                     offset: int) -> StockOutcome:
    """An event the SKU's record already has (replayed after a take-over): nothing changes; a
    reservation is answered again from its line records (which the changelog kept: they come
    before the SKU's record)."""
    if not isinstance(event, ReserveStock):  # releases it made are sent again (idempotent)
        return StockOutcome(state=state, releases=[r for r in state.released if r.seq == offset])
    answer: list[LineAllocation] = []
    records = []
    for line in event.lines:
        record = line_now(state, lines, reservation_key(event.sku, event.order_key, line.line_id))
        records.append(record)
        reserved = 0 if record is None else {"released": 0, "untracked": record.requested}.get(
            record.status, record.quantity)
        answer.append(LineAllocation(line_id=line.line_id, requested=line.quantity,
                                     reserved=reserved))
    untracked = bool(records) and all(r is not None and r.status == "untracked" for r in records)
    return StockOutcome(state=state, answer=answer, tracked=tracked(state) and not untracked)


def _updates(state: StockState, rules: StockRules, cause: str, cause_at: datetime,
             now: datetime) -> list[InventoryUpdate]:
    if not tracked(state):
        return []
    # (the ignore: ``cause`` is InventoryUpdate's "erp" or "order", passed on as a str)
    return [
        InventoryUpdate(channel=c, sku=state.sku, quantity=q, cause=cause,  # type: ignore[arg-type]
                        cause_at=cause_at, computed_at=now)
        for c, q in ats(state, rules).items() if state.offered.get(c) != q
    ]


def _consume_covered(state: StockState, rules: StockRules) -> StockState:
    """Hand every covered committed reservation over to the ERP: it leaves ``pending`` and stops
    counting in ``held``. Its line record stays ``committed`` (read as consumed, ``_AsBefore``):
    one changelog record less per order line than rewriting it."""
    done = [k for k, p in state.pending.items() if covered(p, state, rules)]
    if not done:
        return state
    units = sum(state.pending[k].quantity for k in done)
    pending = {k: p for k, p in state.pending.items() if k not in done}
    return state.model_copy(update={"held": state.held - units, "pending": pending})


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


RECENT = 20


def _on_reserve(state: StockState | None, event: ReserveStock, rules: StockRules,
                lines: Lines, seq: int) -> StockOutcome:
    """Each new line is held against ``free``: kept in the SKU's record while it has room
    (``rules.inline_lines``), else a record of its own (as an untracked acceptance is)."""
    answer: list[LineAllocation] = []
    writes: dict[str, Reservation] = {}
    inline: dict[str, OpenLine] = {}
    added: list[str] = []  # the new lines' keys, in the event's order
    is_tracked = tracked(state)
    known = {ln.line_id: lines.get(reservation_key(event.sku, event.order_key, ln.line_id))
             for ln in event.lines}
    if known and all(r is not None and r.status == "untracked" for r in known.values()):
        is_tracked = False  # accepted untracked before: stays so, even if tracked since
    available = free(state, rules) if state is not None and is_tracked else 0
    room = rules.inline_lines - len(state.open) if state is not None and is_tracked else 0
    taken_total = 0
    for line in event.lines:
        key = reservation_key(event.sku, event.order_key, line.line_id)
        record = known[line.line_id]
        if record is not None:  # a replay: answer what was answered, hold nothing more
            reserved = {"released": 0, "untracked": record.requested}.get(record.status,
                                                                          record.quantity)
            answer.append(LineAllocation(line_id=line.line_id, requested=record.requested,
                                         reserved=reserved))
            continue
        taken = min(line.quantity, available) if is_tracked else line.quantity
        if is_tracked:
            available -= taken
            taken_total += taken
        if room > 0:  # room only for a tracked SKU: an open line, in the SKU's record
            inline[key] = OpenLine(event.order_key, event.channel, line.line_id, line.quantity,
                                   taken, seq, event.requested_at)
            room -= 1
        else:
            writes[key] = Reservation(
                order_key=event.order_key, channel=event.channel, line_id=line.line_id,
                requested=line.quantity, quantity=taken if is_tracked else 0,
                status="open" if is_tracked else "untracked", reserved_at=event.requested_at,
                stock_seq=seq, reserved_seq=seq)
        added.append(key)
        answer.append(LineAllocation(line_id=line.line_id, requested=line.quantity, reserved=taken))
    if not added or not is_tracked or state is None:
        return StockOutcome(state=state, answer=answer, tracked=is_tracked, writes=writes)
    new = state.model_copy(update={
        "held": state.held + taken_total,
        "open_lines": state.open_lines + len(writes) + len(inline),
        "open": {**state.open, **inline} if inline else state.open,
        "recent": [*state.recent, *added][-RECENT:],
    })
    return StockOutcome(state=new, changed=True, answer=answer, writes=writes)


def _closed(state: StockState, keys: Mapping[str, Reservation]) -> dict[str, OpenLine]:
    """The SKU's open lines less ``keys`` (lines that left ``open``)."""
    if not state.open or state.open.keys().isdisjoint(keys):
        return state.open
    kept = dict(state.open)  # a copy, then the few out: far cheaper than filtering every line
    for key in keys:
        kept.pop(key, None)
    return kept


def _on_release(state: StockState | None, event: ReleaseStock, lines: Lines) -> StockOutcome:
    if state is None:
        return StockOutcome(state=None)
    writes: dict[str, Reservation] = {}
    units, opened = 0, 0
    pending = dict(state.pending)
    keys = {reservation_key(event.sku, event.order_key, i) for i in event.line_ids}
    waiting = {k: b for k, b in state.backorders.items() if k not in keys}  # no longer wanted
    for line_id in event.line_ids:
        key = reservation_key(event.sku, event.order_key, line_id)
        record = lines.get(key)
        if record is None or record.status not in ("open", "committed"):
            continue
        if record.status == "open":
            units += record.quantity
            opened += 1
        elif key in pending:
            units += pending.pop(key).quantity
        writes[key] = record.model_copy(update={"status": "released"})
    if not writes and len(waiting) == len(state.backorders):
        return StockOutcome(state=state)
    new = state.model_copy(update={"held": state.held - units, "pending": pending,
                                   "open_lines": state.open_lines - opened, "backorders": waiting,
                                   "open": _closed(state, writes)})
    return StockOutcome(state=new, changed=True, writes=writes)


def _on_commit(state: StockState | None, event: CommitStock, rules: StockRules,
               lines: Lines) -> StockOutcome:
    if state is None:
        return StockOutcome(state=None)
    erp_created = event.erp_created
    if erp_created is None:  # no creation time from the ERP: covered by its next change
        erp_bin = state.bins.get(rules.erp_warehouse)
        erp_created = (erp_bin.modified + JUST_AFTER) if erp_bin else EARLIEST
    writes: dict[str, Reservation] = {}
    pending = dict(state.pending)
    backorders = dict(state.backorders)
    for line_id in event.line_ids:
        key = reservation_key(event.sku, event.order_key, line_id)
        record = lines.get(key)
        if record is None or record.status != "open":
            continue
        writes[key] = record.model_copy(update={
            "status": "committed", "erp_sales_order": event.erp_sales_order,
            "erp_created": erp_created})
        pending[key] = Pending(quantity=record.quantity, erp_created=erp_created)
        units = min(event.backorders.get(line_id, 0), record.requested - record.quantity)
        if units > 0:
            backorders[key] = Backorder(order_key=event.order_key, line_id=line_id, units=units,
                                        erp_created=erp_created, since=event.at)
    if not writes:
        return StockOutcome(state=state)
    new = state.model_copy(update={"pending": pending, "backorders": backorders,
                                   "open_lines": state.open_lines - len(writes),
                                   "open": _closed(state, writes)})
    return StockOutcome(state=_consume_covered(new, rules), changed=True, writes=writes)


#: releases kept in the SKU's record, to send again when the event that made them is replayed
#: (the events between the last committed offset and ``seq``: a few seconds' worth); never fewer
#: than every release of the last event
RELEASE_LOG = 32


def _release_backorders(state: StockState, rules: StockRules, seq: int,
                        now: datetime) -> tuple[StockState, list[BackorderRelease]]:
    """Give waiting backorders the goods that arrived for them, oldest first.

    Only backorders the ERP shows (its bin at least as new as their sales order) count: from
    then on its ``reserved_qty`` includes them, so what its bin has for them is
    ``actual - reserved + their units``, less the units our own reservations hold that the ERP
    does not show yet. A line is released whole; the first that does not fit stops the rest
    (first accepted, first served). Safety stock is a buffer for the marketplaces' listings,
    not for orders already sold: it is not kept back here."""
    erp_bin = state.bins.get(rules.erp_warehouse)
    if erp_bin is None:
        return state, []
    shown = sorted(((k, b) for k, b in state.backorders.items()
                    if erp_bin.modified >= b.erp_created),
                   key=lambda kb: (kb[1].erp_created, kb[1].since, kb[0]))
    supply = erp_bin.actual_qty - erp_bin.reserved_qty + sum(b.units for _, b in shown) - state.held
    releases: list[BackorderRelease] = []
    for _key, waiting in shown:
        if waiting.units > supply:
            break
        supply -= waiting.units
        releases.append(BackorderRelease(
            release_id=f"{state.sku}@{seq}", order_key=waiting.order_key,
            line_id=waiting.line_id, units=waiting.units, seq=seq,
            waited_s=max(0.0, (now - waiting.since).total_seconds())))
    if not releases:
        return state, []
    done = {reservation_key(state.sku, r.order_key, r.line_id) for r in releases}
    return state.model_copy(update={
        "backorders": {k: b for k, b in state.backorders.items() if k not in done},
        "released": [*state.released, *releases][-max(RELEASE_LOG, len(releases)):],
    }), releases


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


def view(state: StockState, rules: StockRules, channels: Sequence[str],
         lines: LineLookup | None = None) -> dict[str, object]:
    """``GET /inventory/{sku}``: the position, the reservations and every channel's numbers."""
    read = read_lines(lines or {}, state)
    pending_units = sum(p.quantity for p in state.pending.values())
    recent = [line.model_dump(mode="json", exclude={"stock_seq"})
              for k in reversed(state.recent) if (line := read.get(k)) is not None]
    return {
        "sku": state.sku,
        "tracked": tracked(state),
        "on_hand": on_hand(state, rules),
        "erp_reserved": sum(b.reserved_qty for b in state.bins.values()
                            if rules.sellable(b.warehouse)),
        "erp_available": erp_available(state, rules),
        "reserved_open": state.held - pending_units,
        "open_lines": state.open_lines,
        "open_lines_in_sku_record": len(state.open),
        "reserved_committed_pending_erp": pending_units,
        "safety_stock": rules.safety,
        "free": free(state, rules),
        "ats": ats(state, rules, channels),
        "offered": dict(state.offered),
        "told": {c: t.model_dump(mode="json") for c, t in state.told.items()},
        "bins": {w: b.model_dump(mode="json") for w, b in state.bins.items()},
        "pending_erp": {k: p.model_dump(mode="json") for k, p in state.pending.items()},
        "backordered_units": sum(b.units for b in state.backorders.values()),
        "backorders": [b.model_dump(mode="json") for b in state.backorders.values()],
        "recent_reservations": recent,
        "updated_at": state.updated_at.isoformat() if state.updated_at else None,
    }
