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

Rows that cannot be applied are listed in the file's ``OutboxResult.rejected`` (row number, reason),
never raised; the rest of the file is applied. ``cancellations`` lists what was cancelled.
"""

from __future__ import annotations

import csv
import io
import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from simulators.listings import Listings

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
WHOLE_ORDER = "*"


@dataclass
class RegionalSimConfig:
    """What the generator does; change it at runtime with ``configure``."""

    skus: list[str] | None = None  # what buyers order; None: SKUS
    max_quantity: int = 4  # units per line, 1..max_quantity
    listing_mode: str = "refuse"  # "refuse" | "allow": an order beyond a listing's quantity

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
    kind: str  # "inventory" | "cancellations"
    applied: int = 0
    rejected: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class RegionalOrder:
    status: str
    lines: dict[str, list[Any]]  # line_no -> [sku, quantity, cancelled units]


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
        for _ in range(n_orders):
            ref = f"RG{self.seed:02d}{self.next_ref:06d}"
            self.next_ref += 1
            bad = False
            if self.rng.random() < unknown_rate:
                status, bad = self.rng.choice(UNKNOWN_CODES), True
                self.counts["unknown_codes"] += 1
            else:
                status = self.rng.choice(SPELLINGS[self.rng.choice(tuple(SPELLINGS))])
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
        self.orders[ref] = RegionalOrder(status, lines)
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
                "outbox_files": len(self.outbox_results), "cancellations": len(self.cancellations)}

    # --- the outbox: files our engine writes -------------------------------------------------

    def process_outbox(self) -> list[OutboxResult]:
        """Apply every pending outbox file, oldest name first; each moves to ``processed/``."""
        if self.outbox_dir is None or not self.outbox_dir.is_dir():
            return []
        done = self.outbox_dir / "processed"
        results = []
        for path in sorted(self.outbox_dir.glob("*.csv"), key=lambda p: (p.name.split("_", 1)[-1], p.name)):
            kind = path.name.split("_", 1)[0]
            if kind not in ("inventory", "cancellations") or not path.is_file():
                continue
            result = OutboxResult(path.name, kind)
            self._apply_file(path, result)
            done.mkdir(exist_ok=True)
            path.replace(done / path.name)
            results.append(result)
        self.outbox_results += results
        return results

    def _apply_file(self, path: Path, result: OutboxResult) -> None:
        columns = INVENTORY_COLUMNS if result.kind == "inventory" else CANCEL_COLUMNS
        try:
            rows = read_outbox(path, columns)
        except ValueError as exc:
            result.rejected.append({"row": 0, "reason": str(exc), "values": {}})
            return
        apply = self._apply_inventory if result.kind == "inventory" else self._apply_cancellation
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
