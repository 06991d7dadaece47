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
"""

from __future__ import annotations

import csv
import io
import random
from collections import Counter
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

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


class RegionalSimulator:
    """Writes CSV batch files into ``drop_dir`` as the regional marketplace would."""

    def __init__(self, drop_dir: Path, seed: int = 0, *, start: datetime | None = None) -> None:
        self.drop_dir = Path(drop_dir)
        self.drop_dir.mkdir(parents=True, exist_ok=True)
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

    def write_batch(self, n_orders: int, unknown_rate: float = 0.0,
                    malformed_rate: float = 0.0) -> Path:
        """Write one batch file of ``n_orders`` orders and return its path."""
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
            for line in range(n_lines):
                qty: str = str(self.rng.randint(1, 4))
                if line == malformed_line:
                    qty = self.rng.choice(("", "abc"))
                price = str(Decimal(self.rng.randint(199, 9999)) / 100)
                if decimal_comma:
                    price = price.replace(".", ",")
                writer.writerow((ref, date, status, self.rng.choice(SKUS), qty, price, "EUR",
                                 email, line + 1))
                self.counts["rows"] += 1
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

    def _date(self, instant: datetime) -> str:
        local = instant.astimezone(BERLIN)
        if self.rng.random() < 0.5:
            return local.isoformat(sep=" ", timespec="seconds")  # 2026-11-27 10:15:00+01:00
        return local.strftime("%d/%m/%Y %H:%M")  # naive, Europe/Berlin

    def stats(self) -> dict[str, Any]:
        return {"files": self.counts["files"], "orders": self.counts["orders"],
                "rows": self.counts["rows"], "good_orders": len(self.good_refs),
                "bad_orders": len(self.bad_refs), "unknown_codes": self.counts["unknown_codes"],
                "malformed_rows": self.counts["malformed_rows"]}
