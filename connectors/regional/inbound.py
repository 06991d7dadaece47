"""The regional marketplace as an OrderSource: CSV batch files dropped into a directory.

Files are named so that name order is arrival order (``orders_<YYYYMMDDHHMMSS>_<seq>.csv``, written
atomically by the marketplace). The cursor is the name of the last file fully put on Kafka: every
poll reads the next file only (one file per poll keeps a poll small), groups its rows by
``order_ref`` and hands one PolledOrder per order to the poller, whose body is
``{"file": name, "rows": [{..columns.., "_row": n}]}`` (``n`` = 1-based data row, header excluded).
The poller stores the returned cursor only after every order is on Kafka, so a crash re-reads the
same file (same delivery ids, deduplicated by order key downstream) and never skips one.

Status codes and row contents are not judged here: the mapper does that, and rows it cannot map
go to the sync-exception topic with the file, the row and the reason. A file that is not CSV at
all raises PermanentError naming it (the channel then stays on that file until someone acts).
"""

from __future__ import annotations

import asyncio
import csv
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson

from retail_sync.connectors.contracts import PolledOrder, PollResult
from retail_sync.connectors.errors import PermanentError
from retail_sync.connectors.regional.settings import RegionalSettings

CHANNEL = "regional"
REQUIRED_COLUMNS = ("order_ref", "status", "qty")
ROW_KEY = "_row"


class RegionalFileSource:
    channel = CHANNEL

    def __init__(self, drop_dir: Path) -> None:
        self.drop_dir = Path(drop_dir)

    @classmethod
    def from_settings(cls, settings: RegionalSettings) -> RegionalFileSource | None:
        if settings.regional_drop_dir is None:
            return None
        return cls(Path(settings.regional_drop_dir))

    def pending_files(self, cursor: str | None) -> list[Path]:
        """Files not yet ingested, in arrival (= name) order."""
        if not self.drop_dir.is_dir():
            return []
        files = sorted((p for p in self.drop_dir.glob("*.csv") if p.is_file()), key=lambda p: p.name)
        return [p for p in files if cursor is None or p.name > cursor]

    async def poll(self, cursor: str | None) -> PollResult:
        pending = self.pending_files(cursor)
        if not pending:
            return PollResult(orders=[], cursor=None)
        path = pending[0]
        rows = await asyncio.to_thread(read_rows, path)
        return PollResult(orders=group_orders(path.name, rows), cursor=path.name)

    async def after_persist(self, orders: Sequence[PolledOrder]) -> None:
        return None

    async def close(self) -> None:
        return None


def read_rows(path: Path) -> list[dict[str, Any]]:
    """The data rows of one batch file, each with its 1-based row number; PermanentError if not CSV."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise PermanentError(f"regional batch file {path.name} cannot be read: {exc}") from exc
    try:
        reader = csv.DictReader(text.splitlines(), strict=True)
        header = reader.fieldnames or []
        missing = [c for c in REQUIRED_COLUMNS if c not in header]
        if missing:
            raise PermanentError(
                f"regional batch file {path.name} is not an order CSV: header {header!r} lacks "
                f"{', '.join(missing)}", body=text[:4096])
        rows = []
        for number, row in enumerate(reader, start=1):
            clean = {str(k): v for k, v in row.items() if k is not None}
            if None in row:  # more fields than the header names
                clean["_extra"] = row[None]
            clean[ROW_KEY] = number
            rows.append(clean)
    except csv.Error as exc:
        raise PermanentError(f"regional batch file {path.name} is not valid CSV: {exc}",
                             body=text[:4096]) from exc
    return rows


def group_orders(file: str, rows: list[dict[str, Any]]) -> list[PolledOrder]:
    """One PolledOrder per order_ref, in first-row order; a row without a ref stands alone."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        ref = (row.get("order_ref") or "").strip()
        groups.setdefault(ref or f"{file}#row{row[ROW_KEY]}", []).append(row)
    return [
        PolledOrder(marketplace_order_id=ref,
                    body=orjson.dumps({"file": file, "rows": group}).decode(),
                    delivery_id=f"{file}#{ref}")
        for ref, group in groups.items()
    ]
