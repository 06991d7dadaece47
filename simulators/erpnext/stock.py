"""Pure stock logic of the ERP simulator: Bins, Stock Ledger Entries and the documents moving stock.

ERPNext keeps one ``Bin`` per item and warehouse (``actual_qty`` on hand, ``reserved_qty``
promised to submitted Sales Orders not yet delivered) and writes one ``Stock Ledger Entry`` per
change of ``actual_qty``. Only items with a Bin are stock items; an item with no Bin anywhere is a
non-stock item: orders reserve nothing for it and shipments of it move no stock.

Documents (inserted submitted, ``docstatus`` 1, as Frappe allows; a draft is stored and moves
nothing):

* ``Stock Entry`` "Material Receipt" (rows with ``t_warehouse``) adds to on hand and creates the
  Bin if missing; "Material Issue" (rows with ``s_warehouse``) takes away, never below zero.
* ``Stock Reconciliation`` (rows with ``warehouse`` and ``qty`` >= 0) sets on hand absolutely.
* ``Delivery Note`` (rows with ``warehouse``, ``qty``, optional ``against_sales_order``) ships:
  lowers on hand and, against a submitted Sales Order, what that order reserved on the same Bin.
  A return (``is_return`` 1, negative quantities as ERPNext stores them) puts the goods back on
  hand (a positive ledger entry) and touches no reservation.
* Cancelling or closing a Sales Order frees what it still reserves (``release_sales_order``).
* A submitted Sales Order reserves each line's quantity on its Bin (``submit_sales_order``) and
  counts oversold units: units promised beyond what was available, less the units the seller
  knowingly accepted without stock (``custom_backorder_qty``).

Simplification: ``projected_qty = actual_qty - reserved_qty`` (ERPNext also adds ordered, indented
and planned quantities and subtracts reservations for production; all are zero here).

Every Bin change takes its ``modified`` from one ``FrappeClock``, strictly increasing across the
simulator, so polling Bins by ``modified`` sees a total order. No I/O here.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from retail_sync.simulators.erpnext.docs import (
    DocValidationError,
    _number,
    _required_str,
    frappe_timestamp,
    parse_docstatus,
)

JSON = dict[str, Any]
DEFAULT_WAREHOUSE = "Stores - RSD"
BIN, LEDGER = "Bin", "Stock Ledger Entry"
STOCK_ENTRY, RECONCILIATION, DELIVERY_NOTE = "Stock Entry", "Stock Reconciliation", "Delivery Note"
STOCK_DOCTYPES = (STOCK_ENTRY, RECONCILIATION, DELIVERY_NOTE)
_SERIES = {STOCK_ENTRY: "MAT-STE", RECONCILIATION: "MAT-RECO", DELIVERY_NOTE: "MAT-DN",
           LEDGER: "MAT-SLE"}  # fmt: skip
_CHILD = {STOCK_ENTRY: "Stock Entry Detail", RECONCILIATION: "Stock Reconciliation Item",
          DELIVERY_NOTE: "Delivery Note Item"}  # fmt: skip
_SERVER_FIELDS = {"name", "doctype", "docstatus", "idx", "owner", "creation", "modified",
                  "modified_by", "status", "items"}  # fmt: skip
_ADMIN = "Administrator"


class FrappeClock:
    """Frappe timestamps that strictly increase: a repeat of the last instant moves on by 1 µs."""

    def __init__(self, now: Callable[[], datetime] | None = None) -> None:
        self._now = now or (lambda: datetime.now(UTC))
        self._last: datetime | None = None

    def tick(self) -> datetime:
        now = self._now()
        if self._last is not None and now <= self._last:
            now = self._last + timedelta(microseconds=1)
        self._last = now
        return now

    def stamp(self) -> str:
        return frappe_timestamp(self.tick())


@dataclass
class Bin:
    """One item in one warehouse."""

    name: str
    item_code: str
    warehouse: str
    creation: str
    modified: str
    actual_qty: float = 0.0
    reserved_qty: float = 0.0

    def doc(self) -> JSON:
        return {
            "name": self.name, "doctype": BIN, "item_code": self.item_code,
            "warehouse": self.warehouse, "actual_qty": self.actual_qty,
            "reserved_qty": self.reserved_qty, "ordered_qty": 0.0,
            "projected_qty": self.actual_qty - self.reserved_qty, "stock_uom": "Nos",
            "creation": self.creation, "modified": self.modified, "owner": _ADMIN,
            "modified_by": _ADMIN, "docstatus": 0, "idx": 0,
        }  # fmt: skip


@dataclass(frozen=True)
class _Line:
    """One document row resolved to its Bin and its effect: add, take ("sub") or set on hand."""

    row: str  # the child row's name (voucher_detail_no)
    item_code: str
    warehouse: str
    qty: float
    kind: str
    against: str | None = None  # Delivery Note: the Sales Order it ships

    @property
    def key(self) -> tuple[str, str]:
        return self.item_code, self.warehouse


# --- parsing document rows ---------------------------------------------------------------------


def _rows(body: JSON, doctype: str) -> list[JSON]:
    rows = body.get("items")
    if not isinstance(rows, list) or not rows:
        raise DocValidationError(f"Error: Value missing for {doctype}: Items")
    if not all(isinstance(row, dict) for row in rows):
        raise DocValidationError(f"{doctype}: every item must be an object")
    return rows


def _qty(row: JSON, idx: int, item_code: str, *, allow_zero: bool = False) -> float:
    qty = _number(row.get("qty"), f"Row #{idx}: Quantity")
    if qty < 0 or (qty == 0 and not allow_zero):
        raise DocValidationError(f"Row #{idx}: Quantity for Item {item_code} must be positive")
    if qty != qty.to_integral_value():
        raise DocValidationError(f"Row #{idx}: Quantity of Item {item_code} must be a whole number")
    return float(qty)


def _warehouse(row: JSON, field: str, default: Any, idx: int, label: str) -> str:
    warehouse = row.get(field) or default
    if not isinstance(warehouse, str) or not warehouse.strip():
        raise DocValidationError(f"{label} is mandatory for row {idx}")
    return warehouse


def _parse(
    body: JSON, doctype: str, field: str, default: Any, label: str, kind: str
) -> tuple[list[JSON], list[_Line]]:
    """Normalised child rows and the stock lines they mean."""
    items, lines = [], []
    for idx, row in enumerate(_rows(body, doctype), start=1):
        code = _required_str(row, "item_code", f"Row #{idx} Item Code")
        qty = _qty(row, idx, code, allow_zero=kind == "set")
        warehouse = _warehouse(row, field, default, idx, label)
        against = row.get("against_sales_order") or None
        name = uuid.uuid4().hex[:10]
        items.append({**row, "name": name, "doctype": _CHILD[doctype], "parentfield": "items",
                      "parenttype": doctype, "idx": idx, "item_code": code, "qty": qty,
                      field: warehouse, "uom": row.get("uom", "Nos"), "stock_uom": "Nos",
                      "conversion_factor": 1.0})  # fmt: skip
        lines.append(_Line(name, code, warehouse, qty, kind, against))
    return items, lines


def _stock_entry(body: JSON) -> tuple[list[JSON], list[_Line]]:
    purpose = body.get("stock_entry_type") or body.get("purpose")
    if purpose == "Material Receipt":
        return _parse(body, STOCK_ENTRY, "t_warehouse", body.get("to_warehouse"),
                      "Target warehouse", "add")  # fmt: skip
    if purpose == "Material Issue":
        return _parse(body, STOCK_ENTRY, "s_warehouse", body.get("from_warehouse"),
                      "Source warehouse", "sub")  # fmt: skip
    raise DocValidationError(
        f"Stock Entry Type {purpose!r} is not supported (Material Receipt, Material Issue)"
    )


def _delivery_return(body: JSON) -> tuple[list[JSON], list[_Line]]:
    """A return Delivery Note (``is_return`` 1): negative quantities, as ERPNext stores them,
    that bring the goods back on hand; it frees no reservation (``against_sales_order`` stays on
    the rows as a reference only)."""
    rows = _rows(body, DELIVERY_NOTE)
    flipped = []
    for idx, row in enumerate(rows, start=1):
        qty = _number(row.get("qty"), f"Row #{idx}: Quantity")
        if qty >= 0:
            raise DocValidationError(f"Row #{idx}: Quantity must be negative in a return")
        flipped.append({**row, "qty": float(-qty)})
    items, lines = _parse({**body, "items": flipped}, DELIVERY_NOTE, "warehouse",
                          body.get("set_warehouse"), "Warehouse", "add")  # fmt: skip
    items = [{**item, "qty": -item["qty"]} for item in items]
    return items, [_Line(ln.row, ln.item_code, ln.warehouse, ln.qty, ln.kind) for ln in lines]


def parse_stock_document(doctype: str, body: Any) -> tuple[list[JSON], list[_Line]]:
    """Validate a posted stock document's rows: its child rows and the stock lines they mean."""
    if not isinstance(body, dict):
        raise DocValidationError("Request body must be a JSON object")
    if doctype == STOCK_ENTRY:
        return _stock_entry(body)
    default = body.get("set_warehouse")
    if doctype == RECONCILIATION:
        return _parse(body, doctype, "warehouse", default, "Warehouse", "set")
    if doctype == DELIVERY_NOTE and body.get("is_return"):
        return _delivery_return(body)
    if doctype == DELIVERY_NOTE:
        return _parse(body, doctype, "warehouse", default, "Warehouse", "sub")
    raise DocValidationError(f"{doctype} is not a stock document")


# --- the book ------------------------------------------------------------------------------------


class StockBook:
    """Bins, the ledger, stock documents, reservations per Sales Order and oversold units."""

    def __init__(self, clock: FrappeClock) -> None:
        self.clock = clock
        self.bins: dict[tuple[str, str], Bin] = {}
        self.ledger: list[JSON] = []
        self.documents: dict[str, dict[str, JSON]] = {d: {} for d in STOCK_DOCTYPES}
        self.oversold: dict[str, int] = {}  # item_code -> units
        self._reserved: dict[tuple[str, str, str], float] = {}  # (order, item, warehouse) -> qty
        #: of those, units the seller accepted without stock (backorders): they wait for receipts
        #: and do not make a later order's line oversold
        self._backordered: dict[tuple[str, str, str], float] = {}
        self._submitted_orders: set[str] = set()
        self._series: dict[tuple[str, int], int] = {}

    # --- reading ---------------------------------------------------------------------------

    def is_stock_item(self, item_code: str) -> bool:
        return any(code == item_code for code, _ in self.bins)

    def bin_docs(self) -> list[JSON]:
        """Every Bin, most recently modified first (Frappe's default list order)."""
        return [b.doc() for b in sorted(self.bins.values(), key=lambda b: b.modified, reverse=True)]

    def find(self, doctype: str, name: str) -> JSON | None:
        if doctype == BIN:
            return next((b.doc() for b in self.bins.values() if b.name == name), None)
        if doctype == LEDGER:
            return next((e for e in self.ledger if e["name"] == name), None)
        return self.documents[doctype].get(name)

    def docs(self, doctype: str) -> list[JSON]:
        """A doctype's documents, newest first."""
        if doctype == BIN:
            return self.bin_docs()
        rows = self.ledger if doctype == LEDGER else list(self.documents[doctype].values())
        return list(reversed(rows))

    def oversold_units(self) -> int:
        return sum(self.oversold.values())

    # --- stock documents -------------------------------------------------------------------

    def submit(self, doctype: str, body: Any) -> JSON:
        """Insert a stock document; submitted (``docstatus`` 1) it moves stock. Raises
        DocValidationError (and changes nothing) when a rule is broken."""
        items, lines = parse_stock_document(doctype, body)
        docstatus = parse_docstatus(body)
        if docstatus == 1:
            lines = self._validate(doctype, lines)
        now = self.clock.tick()
        doc = self._document(doctype, body, items, docstatus, now)
        if docstatus == 1:
            self._move(doc, lines)
        self.documents[doctype][doc["name"]] = doc
        return doc

    def _validate(self, doctype: str, lines: list[_Line]) -> list[_Line]:
        """The lines that move stock (a shipped non-stock item moves nothing), after checking
        that no issue or shipment takes more than is on hand and every order is submitted."""
        moving = [
            ln for ln in lines if doctype != DELIVERY_NOTE or self.is_stock_item(ln.item_code)
        ]  # a returned non-stock item comes back to no Bin either
        taken: dict[tuple[str, str], float] = {}
        for line in moving:
            if line.against is not None and line.against not in self._submitted_orders:
                raise DocValidationError(f"Sales Order {line.against} is not a submitted order")
            if line.kind == "sub":
                taken[line.key] = taken.get(line.key, 0.0) + line.qty
        for key, qty in taken.items():
            on_hand = self.bins[key].actual_qty if key in self.bins else 0.0
            if qty > on_hand:
                raise DocValidationError(
                    f"{qty:g} units of Item {key[0]} needed in Warehouse {key[1]} to complete "
                    f"this transaction; {on_hand:g} on hand"
                )
        return moving

    def _document(
        self, doctype: str, body: JSON, items: list[JSON], docstatus: int, now: datetime
    ) -> JSON:
        stamp = frappe_timestamp(now)
        name = self._next_name(doctype, now)
        custom = {k: v for k, v in body.items() if k not in _SERVER_FIELDS}
        doc = {**custom, "name": name, "doctype": doctype, "docstatus": docstatus, "idx": 0,
               "owner": _ADMIN, "modified_by": _ADMIN, "creation": stamp, "modified": stamp,
               "posting_date": now.date().isoformat(), "posting_time": now.strftime("%H:%M:%S.%f"),
               "items": [{**item, "parent": name} for item in items]}  # fmt: skip
        if doctype == DELIVERY_NOTE:
            doc["is_return"] = int(bool(body.get("is_return")))
            doc["status"] = "Draft" if docstatus != 1 else "Return" if doc["is_return"] else "To Bill"
        return doc

    def _next_name(self, doctype: str, now: datetime) -> str:
        """``<prefix>-.YYYY.-.#####`` naming series: a five-digit counter per year."""
        counter = self._series.get((doctype, now.year), 0) + 1
        self._series[doctype, now.year] = counter
        return f"{_SERIES[doctype]}-{now.year}-{counter:05d}"

    def _bin(self, key: tuple[str, str], stamps: dict[tuple[str, str], str]) -> Bin:
        """The Bin ``key`` (created if missing), stamped once per document."""
        if key not in stamps:
            stamps[key] = self.clock.stamp()
        existing = self.bins.get(key)
        if existing is None:
            existing = self.bins[key] = Bin(uuid.uuid4().hex[:10], *key, stamps[key], stamps[key])
        existing.modified = stamps[key]
        return existing

    def _move(self, doc: JSON, lines: list[_Line]) -> None:
        stamps: dict[tuple[str, str], str] = {}
        for line in lines:
            stock = self._bin(line.key, stamps)
            before = stock.actual_qty
            if line.kind == "set":
                stock.actual_qty = line.qty
            else:
                stock.actual_qty += line.qty if line.kind == "add" else -line.qty
            if line.against is not None:
                self._release(line, stock)
            self.ledger.append(self._ledger_entry(doc, line, stock, stock.actual_qty - before))

    def _release(self, line: _Line, stock: Bin) -> None:
        """A shipment against an order frees what that order reserved on this Bin."""
        key = (line.against or "", *line.key)
        released = min(line.qty, self._reserved.get(key, 0.0))
        if released:
            self._reserved[key] -= released
            stock.reserved_qty = max(0.0, stock.reserved_qty - released)
            # what ships first is the part that had stock; then the backordered units
            in_stock = self._reserved[key] + released - self._backordered.get(key, 0.0)
            from_backorder = max(0.0, released - max(0.0, in_stock))
            if from_backorder and key in self._backordered:
                self._backordered[key] = max(0.0, self._backordered[key] - from_backorder)

    def _ledger_entry(self, doc: JSON, line: _Line, stock: Bin, change: float) -> JSON:
        at = datetime.strptime(stock.modified, "%Y-%m-%d %H:%M:%S.%f")  # noqa: DTZ007 - naive UTC
        return {
            "name": self._next_name(LEDGER, at), "doctype": LEDGER, "item_code": line.item_code,
            "warehouse": line.warehouse, "posting_date": at.date().isoformat(),
            "posting_time": at.strftime("%H:%M:%S.%f"), "posting_datetime": stock.modified,
            "voucher_type": doc["doctype"], "voucher_no": doc["name"],
            "voucher_detail_no": line.row, "actual_qty": change,
            "qty_after_transaction": stock.actual_qty, "stock_uom": "Nos",
            "company": doc.get("company"), "is_cancelled": 0,
            "is_adjustment_entry": int(doc["doctype"] == RECONCILIATION), "docstatus": 1,
            "owner": _ADMIN, "modified_by": _ADMIN, "creation": stock.modified,
            "modified": stock.modified,
        }  # fmt: skip

    # --- sales orders ----------------------------------------------------------------------

    def submit_sales_order(self, order: JSON) -> None:
        """Reserve a submitted Sales Order's stock lines (one ``modified`` bump per Bin) and
        count the units it promises beyond availability, less its accepted backorders."""
        if order["name"] in self._submitted_orders:
            return
        self._submitted_orders.add(order["name"])
        stamps: dict[tuple[str, str], str] = {}
        for item in order["items"]:
            key = (item["item_code"], item.get("warehouse") or order.get("set_warehouse"))
            if key not in self.bins:
                continue  # a non-stock item, or none of it in this warehouse: nothing reserved
            stock = self._bin(key, stamps)
            qty = float(item["qty"])
            backordered = sum(v for (_, *k), v in self._backordered.items() if tuple(k) == key)
            available = max(0.0, stock.actual_qty - (stock.reserved_qty - backordered))
            backorder = float(item.get("custom_backorder_qty") or 0)
            accepted = qty - backorder
            oversold = round(max(0.0, accepted - available))
            if oversold:
                self.oversold[key[0]] = self.oversold.get(key[0], 0) + oversold
            stock.reserved_qty += qty
            reserved_key = (order["name"], *key)
            self._reserved[reserved_key] = self._reserved.get(reserved_key, 0.0) + qty
            if backorder:
                self._backordered[reserved_key] = self._backordered.get(reserved_key, 0.0) + backorder

    def release_sales_order(self, name: str) -> None:
        """Cancelling or closing a Sales Order: what it still reserves is freed (one ``modified``
        bump per Bin) and it no longer accepts deliveries."""
        self._submitted_orders.discard(name)
        stamps: dict[tuple[str, str], str] = {}
        for key in [k for k in self._reserved if k[0] == name]:
            remaining = self._reserved.pop(key)
            self._backordered.pop(key, None)
            if remaining and key[1:] in self.bins:
                stock = self._bin((key[1], key[2]), stamps)
                stock.reserved_qty = max(0.0, stock.reserved_qty - remaining)
