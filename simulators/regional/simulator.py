"""A regional marketplace that delivers orders as periodic CSV batch files (a file drop).

Every ``write_batch`` writes one file ``orders_<YYYYMMDDHHMMSS>_<seq>.csv`` into the drop directory,
atomically (written as ``<name>.tmp`` and renamed), so a reader never sees half a file and the
names sort in arrival order. One row per order line; the rows of an order share ``order_ref``::

    order_ref,order_date,status,sku,qty,unit_price,currency,buyer_email,line_no

What makes it "regional" (and what the connector and mapper must cope with):

* status codes are inconsistent: the same state is spelled differently across orders and files
  (``NEW``/``new``/``N``/``OPEN`` pending, ``PAID``/``P`` accepted, ``SHIPPED``/``SHP`` shipped,
  ``CXL``/``CANCELLED`` cancelled) and, at ``unknown_rate``, codes nobody documented (``HOLD?``, ``X9``);
* ``order_date`` is either ISO with an offset (``2026-11-27 10:15:00+01:00``) or day-first local
  time in Europe/Berlin without an offset (``27/11/2026 10:15``);
* some files use a decimal comma in ``unit_price`` (``12,50``);
* at ``malformed_rate`` an order has a row with a missing or non-numeric ``qty``.

Deterministic from ``seed``; ``good_refs`` / ``bad_refs`` say which orders should map and which not.

Stock: the marketplace keeps a ``Listings`` (``listings``). Every generated order is a sale on it
first; a sale it refuses (``listing_mode`` "refuse") is not written and ``orders_refused`` counts
it. Orders buy from ``config.skus`` (default ``SKUS``), 1 to ``config.max_quantity`` units a line.

The outbox: our engine writes files into ``outbox_dir``, atomically, in the drop files' dialect
(comma-separated, UTF-8, a header row), and ``process_outbox`` (also run before every batch)
applies them in name order, then moves each to ``outbox/processed/`` so it is applied once:

* ``inventory_<stamp>.csv``: ``sku,quantity`` rows set the listings' absolute quantities;
* ``cancellations_<stamp>.csv``: ``order_id,line_id,sku,quantity,reason`` rows cancel, as the
  seller, ``quantity`` units of the order's line (``line_no``) in all: a total, not an increment,
  so a repeated row changes nothing. ``line_id`` ``*`` cancels every line of the order. An order
  whose units are all cancelled becomes ``cancelled``.
* ``shipments_<stamp>.csv``: ``shipment_id,order_id,line_id,sku,quantity,carrier,tracking_number,
  shipped_at`` rows ship ``quantity`` more units of the line (``carrier`` as this marketplace spells
  it, ``CARRIERS``; ``shipped_at`` ISO 8601 with an offset). A row whose ``shipment_id`` and line
  were applied before changes nothing; more units than are left to ship (ordered, not cancelled,
  not shipped) is rejected. An order with every unit shipped becomes ``shipped``.
* ``refunds_<stamp>.csv``: ``refund_id,order_id,line_id,sku,quantity,amount,currency,reason`` rows:
  ``amount`` is the refund's total (the same on each of its rows: the buyer gets it once per
  ``refund_id``), each row names a line and the units coming back (``line_id`` ``*`` with
  ``quantity`` 0: money only). A ``refund_id`` already applied changes nothing for the lines it
  had; refunds beyond the order's value, another currency, or more units than the line had are
  rejected.

Buyer cancellations: ``cancel_by_buyer(order_ref)`` cancels an order nothing of which shipped; the
next ``write_batch`` re-sends its rows with a cancelled status code (``CXL`` / ``CANCELLED``), as
this marketplace reports changes: the same order again in a later file (with its original
``order_date``: the format has no update time).

Rows that cannot be applied are listed in the file's ``OutboxResult.rejected`` (row number, reason),
never raised; the rest of the file is applied. ``cancellations``, ``shipments`` and ``refunds``
list what was applied.
"""

from __future__ import annotations

import csv
import io
import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from retail_sync.simulators.listings import Listings

COLUMNS = ("order_ref", "order_date", "status", "sku", "qty", "unit_price", "currency",
           "buyer_email", "line_no")
SPELLINGS: dict[str, tuple[str, ...]] = {
    "pending": ("NEW", "new", "N", "OPEN"),
    "accepted": ("PAID", "P"),
    "shipped": ("SHIPPED", "SHP"),
    "cancelled": ("CXL", "CANCELLED"),
}
UNKNOWN_CODES = ("HOLD?", "X9")
BERLIN = ZoneInfo("Europe/Berlin")
SKUS = tuple(f"RG-{n:04d}" for n in range(1, 41))
INVENTORY_COLUMNS = ("sku", "quantity")
CANCEL_COLUMNS = ("order_id", "line_id", "sku", "quantity", "reason")
SHIPMENT_COLUMNS = ("shipment_id", "order_id", "line_id", "sku", "quantity", "carrier",
                    "tracking_number", "shipped_at")
REFUND_COLUMNS = ("refund_id", "order_id", "line_id", "sku", "quantity", "amount", "currency", "reason")
OUTBOX_COLUMNS = {"inventory": INVENTORY_COLUMNS, "cancellations": CANCEL_COLUMNS,
                  "shipments": SHIPMENT_COLUMNS, "refunds": REFUND_COLUMNS}
CARRIERS = ("DHL Paket", "Deutsche Post", "DPD", "Hermes", "GLS", "UPS", "FedEx", "USPS", "Sonstige")
WHOLE_ORDER = "*"


@dataclass
class RegionalSimConfig:
    """What the generator does; change it at runtime with ``configure``."""

    skus: list[str] | None = None  # what buyers order; None: SKUS
    max_quantity: int = 4  # units per line, 1..max_quantity
    listing_mode: str = "refuse"  # "refuse" | "allow": an order beyond a listing's quantity
    statuses: list[str] | None = None  # canonical statuses new orders start in; None: any

    def updated(self, changes: dict[str, Any]) -> RegionalSimConfig:
        unknown = set(changes) - {f.name for f in fields(self)}
        if unknown:
            raise ValueError(f"unknown config fields: {sorted(unknown)}")
        new = RegionalSimConfig(**{**asdict(self), **changes})
        if new.listing_mode not in ("refuse", "allow"):
            raise ValueError(f"listing_mode must be 'refuse' or 'allow', got {new.listing_mode!r}")
        if int(new.max_quantity) < 1:
            raise ValueError("max_quantity must be >= 1")
        if new.skus is not None and (not new.skus or not all(isinstance(k, str) and k for k in new.skus)):
            raise ValueError("skus must be a non-empty list of SKUs (or None)")
        return new


@dataclass
class OutboxResult:
    """What one outbox file did: rows applied, rows rejected (``{"row", "reason", "values"}``)."""

    file: str
    kind: str  # "inventory" | "cancellations" | "shipments" | "refunds"
    applied: int = 0
    rejected: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class RegionalOrder:
    status: str
    lines: dict[str, list[Any]]  # line_no -> [sku, quantity, cancelled units]
    rows: list[tuple[Any, ...]] = field(default_factory=list)  # as written in its batch file
    shipped: dict[str, int] = field(default_factory=dict)  # line_no -> units shipped

    def state(self) -> str:
        """The canonical status (``pending`` ... ``cancelled``) of whatever code it carries."""
        return next((canonical for canonical, codes in SPELLINGS.items()
                     if self.status == canonical or self.status in codes), self.status)  # fmt: skip

    def left_to_ship(self, line_id: str) -> int:
        _sku, ordered, cancelled = self.lines[line_id]
        left: int = ordered - cancelled - self.shipped.get(line_id, 0)
        return left

    def value(self) -> Decimal:
        """What the buyer paid: unit price x quantity of every readable row."""
        total = Decimal(0)
        for row in self.rows:
            if str(row[4]).isdigit():
                total += Decimal(str(row[5]).replace(",", ".")) * int(row[4])
        return total


class RegionalSimulator:
    """Writes CSV batch files into ``drop_dir`` as the regional marketplace would, and applies the
    files our engine writes into ``outbox_dir``."""

    def __init__(self, drop_dir: Path, seed: int = 0, *, start: datetime | None = None,
                 outbox_dir: Path | None = None, config: RegionalSimConfig | None = None) -> None:
        self.drop_dir = Path(drop_dir)
        self.drop_dir.mkdir(parents=True, exist_ok=True)
        self.outbox_dir = Path(outbox_dir) if outbox_dir is not None else None
        self.config = RegionalSimConfig().updated(asdict(config)) if config else RegionalSimConfig()
        self.listings = Listings(mode="allow" if self.config.listing_mode == "allow" else "refuse")
        self.orders: dict[str, RegionalOrder] = {}
        self.cancellations: list[dict[str, Any]] = []  # {order_id, line_id, sku, quantity, reason, at}
        self.shipments: list[dict[str, Any]] = []  # one per applied row, see _apply_shipment
        self.refunds: list[dict[str, Any]] = []  # one per refund_id, see _apply_refund
        self.buyer_cancellations: list[str] = []  # order refs, in order
        self._resend: list[str] = []  # orders the next batch re-sends (buyer cancellations)
        self.outbox_results: list[OutboxResult] = []
        self.rng = random.Random(seed)
        self.seed = seed
        existing = sorted(self.drop_dir.glob("orders_*.csv"))
        self.seq = len(existing)
        self.clock = start or datetime(2026, 11, 27, 9, 0, tzinfo=UTC)
        if existing:  # a new simulator on an old drop dir keeps names in arrival order
            stamp = existing[-1].name.split("_")[1]
            self.clock = max(self.clock, datetime.strptime(stamp, "%Y%m%d%H%M%S").replace(tzinfo=UTC))
        self.next_ref = 1
        self.good_refs: list[str] = []
        self.bad_refs: list[str] = []
        self.files: list[Path] = []
        self.counts: Counter[str] = Counter()

    def configure(self, changes: dict[str, Any]) -> None:
        """Apply ``changes`` to ``config`` (ValueError if unknown or invalid)."""
        self.config = self.config.updated(changes)
        self.listings.mode = "allow" if self.config.listing_mode == "allow" else "refuse"

    def write_batch(self, n_orders: int, unknown_rate: float = 0.0,
                    malformed_rate: float = 0.0) -> Path:
        """Write one batch file of up to ``n_orders`` orders and return its path (the outbox is
        processed first; orders the listings refuse are left out and counted)."""
        if self.outbox_dir is not None:
            self.process_outbox()
        self.seq += 1
        self.clock += timedelta(minutes=15)
        decimal_comma = self.rng.random() < 0.5
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(COLUMNS)
        for ref in self._resend:
            code = self.rng.choice(SPELLINGS["cancelled"])
            writer.writerows((*row[:2], code, *row[3:]) for row in self.orders[ref].rows)
            self.counts["rows"] += len(self.orders[ref].rows)
        self._resend.clear()
        for _ in range(n_orders):
            ref = f"RG{self.seed:02d}{self.next_ref:06d}"
            self.next_ref += 1
            bad = False
            if self.rng.random() < unknown_rate:
                status, bad = self.rng.choice(UNKNOWN_CODES), True
                self.counts["unknown_codes"] += 1
            else:
                status = self.rng.choice(SPELLINGS[self.rng.choice(
                    tuple(self.config.statuses or SPELLINGS))])
            malformed_line = None
            n_lines = self.rng.randint(1, 3)
            if self.rng.random() < malformed_rate and not bad:
                malformed_line, bad = self.rng.randrange(n_lines), True
                self.counts["malformed_rows"] += 1
            placed = self.clock - timedelta(minutes=self.rng.randint(1, 600))
            date = self._date(placed)
            email = f"buyer{self.rng.randint(1, 999)}@example.de"
            rows = []
            for line in range(n_lines):
                qty: str = str(self.rng.randint(1, self.config.max_quantity))
                if line == malformed_line:
                    qty = self.rng.choice(("", "abc"))
                price = str(Decimal(self.rng.randint(199, 9999)) / 100)
                if decimal_comma:
                    price = price.replace(".", ",")
                rows.append((ref, date, status, self.rng.choice(self.config.skus or SKUS), qty, price,
                             "EUR", email, line + 1))
            if not self._sell(ref, status, rows):
                continue
            writer.writerows(rows)
            self.counts["rows"] += len(rows)
            (self.bad_refs if bad else self.good_refs).append(ref)
            self.counts["orders"] += 1
        name = f"orders_{self.clock.strftime('%Y%m%d%H%M%S')}_{self.seq:04d}.csv"
        path = self.drop_dir / name
        tmp = path.with_name(name + ".tmp")
        tmp.write_text(buf.getvalue(), encoding="utf-8")
        tmp.replace(path)
        self.files.append(path)
        self.counts["files"] += 1
        return path

    def _sell(self, ref: str, status: str, rows: list[tuple[Any, ...]]) -> bool:
        """The order's sale on the listings (lines with a readable quantity); False if refused."""
        lines: dict[str, list[Any]] = {str(r[8]): [str(r[3]), int(r[4]), 0] for r in rows
                                       if str(r[4]).isdigit()}  # fmt: skip
        if not self.listings.sell([(str(sku), int(qty)) for sku, qty, _ in lines.values()]):
            self.counts["orders_refused"] += 1
            return False
        self.orders[ref] = RegionalOrder(status, lines, list(rows))
        return True

    def cancel_by_buyer(self, order_ref: str) -> bool:
        """The buyer cancels ``order_ref``; the next batch re-sends it with a cancelled code. False
        if it is cancelled already; KeyError if unknown, ValueError once anything shipped."""
        order = self.orders[order_ref]
        if order.state() == "cancelled":
            return False
        if order.shipped or order.state() == "shipped":
            raise ValueError(f"order {order_ref} has shipped; a buyer can only cancel an unshipped order")
        order.status = "cancelled"
        self.buyer_cancellations.append(order_ref)
        self._resend.append(order_ref)
        return True

    def _date(self, instant: datetime) -> str:
        local = instant.astimezone(BERLIN)
        if self.rng.random() < 0.5:
            return local.isoformat(sep=" ", timespec="seconds")  # 2026-11-27 10:15:00+01:00
        return local.strftime("%d/%m/%Y %H:%M")  # naive, Europe/Berlin

    def stats(self) -> dict[str, Any]:
        return {"files": self.counts["files"], "orders": self.counts["orders"],
                "rows": self.counts["rows"], "good_orders": len(self.good_refs),
                "bad_orders": len(self.bad_refs), "unknown_codes": self.counts["unknown_codes"],
                "malformed_rows": self.counts["malformed_rows"],
                "orders_refused": self.counts["orders_refused"],
                "outbox_files": len(self.outbox_results), "cancellations": len(self.cancellations),
                "shipments": len(self.shipments), "refunds": len(self.refunds),
                "buyer_cancellations": len(self.buyer_cancellations)}

    # --- the outbox: files our engine writes -------------------------------------------------

    def process_outbox(self) -> list[OutboxResult]:
        """Apply every pending outbox file, oldest name first; each moves to ``processed/``."""
        if self.outbox_dir is None or not self.outbox_dir.is_dir():
            return []
        done = self.outbox_dir / "processed"
        results = []
        for path in sorted(self.outbox_dir.glob("*.csv"), key=lambda p: (p.name.split("_", 1)[-1], p.name)):
            kind = path.name.split("_", 1)[0]
            if kind not in OUTBOX_COLUMNS or not path.is_file():
                continue
            result = OutboxResult(path.name, kind)
            self._apply_file(path, result)
            done.mkdir(exist_ok=True)
            path.replace(done / path.name)
            results.append(result)
        self.outbox_results += results
        return results

    def _apply_file(self, path: Path, result: OutboxResult) -> None:
        try:
            rows = read_outbox(path, OUTBOX_COLUMNS[result.kind])
        except ValueError as exc:
            result.rejected.append({"row": 0, "reason": str(exc), "values": {}})
            return
        apply = {"inventory": self._apply_inventory, "cancellations": self._apply_cancellation,
                 "shipments": self._apply_shipment, "refunds": self._apply_refund}[result.kind]
        for number, row in enumerate(rows, start=1):
            try:
                apply(row, path.name)
                result.applied += 1
            except ValueError as exc:
                result.rejected.append({"row": number, "reason": str(exc), "values": row})

    def _apply_inventory(self, row: dict[str, str], _file: str) -> None:
        sku = (row.get("sku") or "").strip()
        if not sku:
            raise ValueError("sku is empty")
        self.listings.set(sku, _count(row.get("quantity"), "quantity", minimum=0))

    def _apply_cancellation(self, row: dict[str, str], file: str) -> None:
        ref, line_id = (row.get("order_id") or "").strip(), (row.get("line_id") or "").strip()
        order = self.orders.get(ref)
        if order is None:
            raise ValueError(f"unknown order_id {ref!r}")
        reason = (row.get("reason") or "").strip() or "NoInventory"
        if line_id == WHOLE_ORDER:
            for number, (_sku, ordered, _done) in order.lines.items():
                self._cancel(ref, number, ordered, reason, file)
            return
        line = order.lines.get(line_id)
        if line is None:
            raise ValueError(f"order {ref} has no line {line_id!r}")
        sku = (row.get("sku") or "").strip()
        if sku and sku != line[0]:
            raise ValueError(f"line {line_id} of order {ref} is {line[0]}, not {sku}")
        self._cancel(ref, line_id, _count(row.get("quantity"), "quantity", minimum=1), reason, file)

    def _cancel(self, ref: str, line_id: str, units: int, reason: str, file: str) -> None:
        order = self.orders[ref]
        line = order.lines[line_id]
        new = min(line[1], max(line[2], units)) - line[2]
        if new <= 0:
            return
        line[2] += new
        self.listings.seller_cancelled(line[0], new)
        self.cancellations.append({"order_id": ref, "line_id": line_id, "sku": line[0], "quantity": new,
                                   "reason": reason, "at": datetime.now(UTC).isoformat(), "file": file})
        if all(done >= qty for _sku, qty, done in order.lines.values()):
            order.status = "cancelled"


    def _order_line(self, row: dict[str, str]) -> tuple[str, RegionalOrder, str]:
        """(ref, order, line_id) a row names; ValueError if unknown or the SKU disagrees."""
        ref, line_id = (row.get("order_id") or "").strip(), (row.get("line_id") or "").strip()
        order = self.orders.get(ref)
        if order is None:
            raise ValueError(f"unknown order_id {ref!r}")
        if line_id == WHOLE_ORDER:
            return ref, order, line_id
        line = order.lines.get(line_id)
        if line is None:
            raise ValueError(f"order {ref} has no line {line_id!r}")
        sku = (row.get("sku") or "").strip()
        if sku and sku != line[0]:
            raise ValueError(f"line {line_id} of order {ref} is {line[0]}, not {sku}")
        return ref, order, line_id

    def _apply_shipment(self, row: dict[str, str], file: str) -> None:
        shipment_id = (row.get("shipment_id") or "").strip()
        if not shipment_id:
            raise ValueError("shipment_id is empty")
        ref, order, line_id = self._order_line(row)
        if line_id == WHOLE_ORDER:
            raise ValueError("a shipment row names one line, not '*'")
        units = _count(row.get("quantity"), "quantity", minimum=1)
        carrier, tracking = (row.get("carrier") or "").strip(), (row.get("tracking_number") or "").strip()
        if carrier not in CARRIERS:
            raise ValueError(f"carrier {carrier!r} is not one of {', '.join(CARRIERS)}")
        if not tracking:
            raise ValueError("tracking_number is empty")
        shipped_at = _instant(row.get("shipped_at"), "shipped_at")
        if any(s["shipment_id"] == shipment_id and s["order_id"] == ref and s["line_id"] == line_id
               for s in self.shipments):  # fmt: skip
            return  # applied before
        if order.state() == "cancelled" or units > order.left_to_ship(line_id):
            raise ValueError(f"order {ref} line {line_id}: {units} unit(s) to ship, "
                             f"{order.left_to_ship(line_id)} left to ship ({order.status})")
        order.shipped[line_id] = order.shipped.get(line_id, 0) + units
        self.shipments.append({"shipment_id": shipment_id, "order_id": ref, "line_id": line_id,
                               "sku": order.lines[line_id][0], "quantity": units, "carrier": carrier,
                               "tracking_number": tracking, "shipped_at": shipped_at, "file": file})
        if all(order.left_to_ship(n) <= 0 for n in order.lines):
            order.status = "shipped"

    def _apply_refund(self, row: dict[str, str], file: str) -> None:
        refund_id, currency = (row.get("refund_id") or "").strip(), (row.get("currency") or "").strip()
        if not refund_id:
            raise ValueError("refund_id is empty")
        ref, order, line_id = self._order_line(row)
        units = _count(row.get("quantity"), "quantity", minimum=0 if line_id == WHOLE_ORDER else 1)
        if line_id != WHOLE_ORDER and units > order.lines[line_id][1]:
            raise ValueError(f"order {ref} line {line_id} had {order.lines[line_id][1]} unit(s), not {units}")
        amount = _amount(row.get("amount"))
        paid_in = {str(r[6]) for r in order.rows}
        if paid_in != {currency}:
            raise ValueError(f"order {ref} is in {', '.join(sorted(paid_in))}, the refund in {currency!r}")
        refund = next((r for r in self.refunds if r["refund_id"] == refund_id), None)
        if refund is None:
            earlier = sum((Decimal(r["amount"]) for r in self.refunds if r["order_id"] == ref), Decimal(0))
            if earlier + amount > order.value():
                raise ValueError(f"refunds of order {ref} would exceed its value {order.value()} "
                                 f"({earlier} refunded already)")  # fmt: skip
            refund = {"refund_id": refund_id, "order_id": ref, "amount": str(amount), "currency": currency,
                      "reason": (row.get("reason") or "").strip(), "lines": [], "file": file}
            self.refunds.append(refund)
        elif refund["order_id"] != ref or Decimal(refund["amount"]) != amount:
            raise ValueError(f"refund {refund_id} was {refund['amount']} for order {refund['order_id']}")
        if line_id != WHOLE_ORDER and line_id not in {ln["line_id"] for ln in refund["lines"]}:
            refund["lines"].append({"line_id": line_id, "sku": order.lines[line_id][0], "quantity": units})


def _instant(text: str | None, name: str) -> str:
    value = (text or "").strip()
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(f"{name} must be an ISO 8601 time, got {text!r}") from None
    if moment.tzinfo is None:
        raise ValueError(f"{name} needs an offset, got {text!r}")
    return moment.astimezone(UTC).isoformat()


def _amount(text: str | None) -> Decimal:
    value = (text or "").strip().replace(",", ".")
    try:
        amount = Decimal(value)
    except InvalidOperation:
        raise ValueError(f"amount must be a decimal number, got {text!r}") from None
    if not amount.is_finite() or amount < 0:
        raise ValueError(f"amount must be >= 0, got {text!r}")
    return amount


def _count(text: str | None, name: str, *, minimum: int) -> int:
    value = (text or "").strip()
    if not value.isdigit() or int(value) < minimum:
        raise ValueError(f"{name} must be a whole number >= {minimum}, got {text!r}")
    return int(value)


def read_outbox(path: Path, columns: Sequence[str]) -> list[dict[str, str]]:
    """The rows of an outbox file (comma or semicolon separated); ValueError if unreadable."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"cannot read {path.name}: {exc}") from None
    lines = text.splitlines()
    if not lines:
        raise ValueError(f"{path.name} is empty")
    delimiter = ";" if lines[0].count(";") > lines[0].count(",") else ","
    try:
        reader = csv.DictReader(lines, delimiter=delimiter, strict=True)
        missing = [c for c in columns if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"{path.name}: header {reader.fieldnames} lacks {', '.join(missing)}")
        return [{str(k): (v or "") for k, v in row.items() if k is not None} for row in reader]
    except csv.Error as exc:
        raise ValueError(f"{path.name} is not valid CSV: {exc}") from None
