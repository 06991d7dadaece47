"""The regional marketplace's reconciliation reader: the CSV batch files in the drop directory,
every file (ingested or not), the latest file's rows per order; seller cancellations, shipments and
refunds are known from our own files in the outbox (the marketplace does not echo them)."""

from __future__ import annotations

import asyncio
import csv
import dataclasses
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson

from retail_sync.connectors.errors import SyncError
from retail_sync.connectors.reconcile_types import ChannelRead, Mapper, map_into
from retail_sync.connectors.regional.inbound import group_orders, read_rows
from retail_sync.connectors.regional.settings import RegionalSettings


def configured(settings: Any) -> bool:
    return getattr(settings, "regional_drop_dir", None) is not None


async def read_regional(settings: RegionalSettings, mapper: Mapper, since: datetime) -> ChannelRead:
    assert settings.regional_drop_dir is not None
    return await asyncio.to_thread(_read_regional, Path(settings.regional_drop_dir),
                                   settings.regional_outbox_dir, mapper, since)


def _read_regional(drop: Path, outbox: Path | None, mapper: Mapper, since: datetime) -> ChannelRead:
    latest: dict[str, Any] = {}
    files = sorted((p for p in drop.glob("*.csv") if p.is_file()), key=lambda p: p.name) \
        if drop.is_dir() else []
    read = ChannelRead()
    for path in files:
        try:
            rows = read_rows(path)
        except SyncError as exc:
            read.unmapped.append({"channel": "regional", "order_id": path.name, "reason": str(exc)})
            continue
        for polled in group_orders(path.name, rows):  # a later file restates the order
            latest[polled.marketplace_order_id] = polled
    cancelled = _regional_seller_cancellations(outbox)
    shipped, refunded = _regional_outbox_units(outbox, "shipments"), \
        _regional_outbox_units(outbox, "refunds")
    for ref, polled in latest.items():
        order = map_into(read, "regional", ref, orjson.loads(polled.body), mapper, ref in cancelled)
        if order is None or read.orders[-1].status == "cancelled":
            continue
        # the marketplace never restates an order after our shipment and refund files: its view
        # is its order file plus what we told it (as for seller cancellations)
        ordered = sum(line.quantity for line in order.lines)
        status = read.orders[-1].status
        if refunded.get(ref):
            status = "partially_refunded"
        elif shipped.get(ref, 0) >= ordered:
            status = "shipped"
        elif shipped.get(ref):
            status = "partially_shipped"
        read.orders[-1] = dataclasses.replace(read.orders[-1], status=status)
    read.orders = [o for o in read.orders if o.created_at is None or o.created_at >= since]
    return read


def _regional_outbox_units(outbox: Path | None, kind: str) -> dict[str, int]:
    """Order ref -> units named in our ``<kind>_*.csv`` files to the regional marketplace
    (pending and processed); each shipment or refund id counted once."""
    units: dict[str, int] = {}
    seen: set[tuple[str, str, str]] = set()
    if outbox is None:
        return units
    id_column = "shipment_id" if kind == "shipments" else "refund_id"
    for folder in (Path(outbox), Path(outbox) / "processed"):
        for path in sorted(folder.glob(f"{kind}_*.csv")) if folder.is_dir() else ():
            try:
                with path.open(encoding="utf-8-sig", newline="") as handle:
                    for row in csv.DictReader(handle):
                        key = (row.get(id_column, ""), row.get("order_id", ""),
                               row.get("line_id", ""))
                        if key in seen or not row.get("order_id"):
                            continue
                        seen.add(key)
                        qty = int(row.get("quantity") or 0)
                        units[row["order_id"]] = units.get(row["order_id"], 0) + max(qty, 1)
            except (OSError, csv.Error, KeyError, ValueError):
                continue
    return units


def _regional_seller_cancellations(outbox: Path | None) -> set[str]:
    """Order refs named in the cancellation files we gave the regional marketplace (pending and
    processed): it applies them but never restates the order."""
    refs: set[str] = set()
    if outbox is None:
        return refs
    for folder in (Path(outbox), Path(outbox) / "processed"):
        for path in folder.glob("cancellations_*.csv") if folder.is_dir() else ():
            try:
                with path.open(encoding="utf-8-sig", newline="") as handle:
                    refs.update(r["order_id"] for r in csv.DictReader(handle) if r.get("order_id"))
            except (OSError, csv.Error, KeyError):
                continue
    return refs
