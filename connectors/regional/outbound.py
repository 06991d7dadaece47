"""The regional marketplace as a ChannelOutbound: CSV files written into its outbox folder.

The marketplace reads what we write there (simulators/regional/simulator.py ``process_outbox``), in the
dialect of the batch files it drops for us: comma-separated, UTF-8, a header row.

* ``inventory_<stamp>_<seq>_<rand>.csv``: ``sku,quantity`` (absolute quantities);
* ``cancellations_<stamp>_<seq>_<rand>.csv``: ``order_id,line_id,sku,quantity,reason``, one row per
  line (``line_id`` = the batch file's ``line_no``, our canonical line id), ``quantity`` = the units
  of that line cancelled in all (so writing it again changes nothing); a whole-order cancellation
  adds a ``*`` row, which cancels every line of the order;
* ``shipments_<stamp>_<seq>_<rand>.csv``: ``shipment_id,order_id,line_id,sku,quantity,carrier,
  tracking_number,shipped_at``, one row per shipped line; the marketplace applies a shipment id
  and line once, so writing it again changes nothing. ``carrier`` is the marketplace's spelling
  (``REGIONAL_CARRIERS``: canonical -> its name; an unknown one is ``Sonstige``, "other");
* ``refunds_<stamp>_<seq>_<rand>.csv``: ``refund_id,order_id,line_id,sku,quantity,amount,currency,
  reason``, one row per line coming back, ``amount`` the refund's total on every row (the
  marketplace pays it once per ``refund_id``); a refund without lines is one ``*`` row with
  quantity 0.

Each file is written under a temporary name in the same folder (``<name>.tmp``, which the
marketplace ignores), flushed to disk and renamed, so the marketplace never reads half a file. Names
sort in writing order (UTC time to the microsecond, then a per-process counter) and cannot collide
(a random suffix for other processes). The push is ``applied`` once the file is in the outbox: the
marketplace applies it on its next pickup. OSError -> RetryableError.
"""

from __future__ import annotations

import asyncio
import csv
import io
import itertools
import os
import secrets
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from retail_sync.connectors.contracts import PushReport, QuantityUpdate, Refund, Shipment
from retail_sync.connectors.errors import RetryableError
from retail_sync.connectors.regional.settings import RegionalSettings
from retail_sync.streams.models import LineUnits

CHANNEL = "regional"
INVENTORY_COLUMNS = ("sku", "quantity")
CANCEL_COLUMNS = ("order_id", "line_id", "sku", "quantity", "reason")
SHIPMENT_COLUMNS = ("shipment_id", "order_id", "line_id", "sku", "quantity", "carrier",
                    "tracking_number", "shipped_at")
REFUND_COLUMNS = ("refund_id", "order_id", "line_id", "sku", "quantity", "amount", "currency", "reason")
# canonical carrier (connectors.contracts.Shipment.carrier) -> the regional marketplace's name for it
REGIONAL_CARRIERS: dict[str, str] = {"UPS": "UPS", "USPS": "USPS", "FEDEX": "FedEx", "DHL": "DHL Paket",
                                     "OTHER": "Sonstige"}  # fmt: skip
WHOLE_ORDER = "*"
_sequence = itertools.count(1)


def outbox_name(kind: str, now: datetime | None = None) -> str:
    """``<kind>_<YYYYmmddTHHMMSSffffff>Z_<seq>_<rand>.csv``: unique, in writing order."""
    moment = (now or datetime.now(UTC)).astimezone(UTC)
    return f"{kind}_{moment.strftime('%Y%m%dT%H%M%S%fZ')}_{next(_sequence):06d}_{secrets.token_hex(3)}.csv"


def render_csv(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    writer.writerows(rows)
    return buffer.getvalue()


def regional_carrier(carrier: str) -> str:
    """The regional marketplace's name for a canonical carrier (``Sonstige`` if unknown)."""
    return REGIONAL_CARRIERS.get(carrier.strip().upper(), REGIONAL_CARRIERS["OTHER"])


def write_atomically(folder: Path, name: str, text: str) -> Path:
    """``text`` into ``folder/name`` via a temporary name in the same folder and a rename."""
    folder.mkdir(parents=True, exist_ok=True)
    path, tmp = folder / name, folder / f"{name}.tmp"
    with tmp.open("w", encoding="utf-8", newline="") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    tmp.replace(path)
    return path


class RegionalOutbound:
    channel = CHANNEL

    def __init__(self, outbox_dir: Path) -> None:
        self.outbox_dir = Path(outbox_dir)

    @classmethod
    def from_settings(cls, settings: RegionalSettings) -> RegionalOutbound | None:
        if settings.regional_outbox_dir is None:
            return None
        return cls(Path(settings.regional_outbox_dir))

    async def push_inventory(self, updates: Sequence[QuantityUpdate]) -> PushReport:
        failed = {u.sku: f"quantity must be a whole number >= 0, got {u.quantity!r}"
                  for u in updates if isinstance(u.quantity, bool) or not isinstance(u.quantity, int)
                  or u.quantity < 0}  # fmt: skip
        failed.update({u.sku: "empty SKU" for u in updates if not u.sku.strip()})
        good = [u for u in updates if u.sku not in failed]
        if not good:
            return PushReport(applied=[], failed=failed, mechanism="file")
        name = await self._write("inventory", INVENTORY_COLUMNS, [(u.sku, u.quantity) for u in good])
        return PushReport(applied=[u.sku for u in good], failed=failed, mechanism="file", reference=name)

    async def cancel_lines(self, marketplace_order_id: str, lines: Sequence[LineUnits], *,
                           whole_order: bool, reason: str) -> None:  # fmt: skip
        rows: list[tuple[Any, ...]] = [(marketplace_order_id, ln.line_id, ln.sku, ln.quantity, reason)
                                       for ln in lines]  # fmt: skip
        if whole_order:
            rows.append((marketplace_order_id, WHOLE_ORDER, "", "", reason))
        if rows:
            await self._write("cancellations", CANCEL_COLUMNS, rows)

    async def confirm_shipment(self, marketplace_order_id: str, shipment: Shipment) -> None:
        carrier = regional_carrier(shipment.carrier)
        rows = [(shipment.shipment_id, marketplace_order_id, ln.line_id, ln.sku, ln.quantity, carrier,
                 shipment.tracking_number, shipment.shipped_at) for ln in shipment.lines if ln.quantity > 0]
        if rows:
            await self._write("shipments", SHIPMENT_COLUMNS, rows)

    async def refund(self, marketplace_order_id: str, refund: Refund) -> None:
        head = (refund.refund_id, marketplace_order_id)
        tail = (refund.amount, refund.currency, refund.reason)
        rows = [(*head, ln.line_id, ln.sku, ln.quantity, *tail) for ln in refund.lines if ln.quantity > 0]
        await self._write("refunds", REFUND_COLUMNS, rows or [(*head, WHOLE_ORDER, "", 0, *tail)])

    async def close(self) -> None:
        return None

    async def _write(self, kind: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
        name = outbox_name(kind)
        try:
            await asyncio.to_thread(write_atomically, self.outbox_dir, name, render_csv(columns, rows))
        except OSError as exc:
            raise RetryableError(f"regional outbox {self.outbox_dir}: cannot write {name}: {exc}") from exc
        return name


__all__ = ["REGIONAL_CARRIERS", "RegionalOutbound", "outbox_name", "regional_carrier", "render_csv",
           "write_atomically"]
