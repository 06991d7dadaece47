"""ERPNext (Frappe REST) implementation of the StockFeed contract: Bins polled by ``modified``.

ERPNext has no stock webhook worth trusting, so integrations poll ``Bin`` (one row per item and
warehouse) ordered by ``modified``::

    GET /api/resource/Bin?fields=[...]&filters=[["Bin","modified",">=",cursor]]
        &order_by=modified asc, name asc&limit_start=0&limit_page_length=500

``>=`` (not ``>``) so a Bin changed in the same instant as the cursor is read again rather than
skipped; the consumer ignores a position not newer than the one it holds. Pages are keyed on the
last row's ``modified`` (``limit_start`` 0), which stays correct when Bins change between two
page reads (an offset would shift and skip one); only a page whose rows all share one instant is
stepped over by ``limit_start``. Rows already returned in this poll are not returned twice.

Quantities come as JSON floats and become whole units (half up); ``modified`` becomes an aware
datetime (``frappe_time``: the site's timezone is UTC), the order of the ERP's positions as a
value, while the cursor stays Frappe's own text. Errors map as for Sales Orders
(``connectors.erpnext.frappe.error_for_status``): 429 RateLimitedError, 5xx and network RetryableError,
other 4xx PermanentError; a row without item_code, warehouse or modified is a DecodeError.
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any

from pydantic import ValidationError

from retail_sync.connectors.contracts import StockFeedResult
from retail_sync.connectors.erpnext.frappe import (
    FrappeSession,
    frappe_time,
    modified_query,
    rows_modified_since,
)
from retail_sync.connectors.erpnext.settings import ErpNextSettings
from retail_sync.connectors.errors import DecodeError
from retail_sync.streams.models import StockLevel

BIN = "Bin"
PAGE_SIZE = 500
FIELDS = ["name", "item_code", "warehouse", "actual_qty", "reserved_qty", "modified"]
JSON = dict[str, Any]


# --- pure mapping -----------------------------------------------------------------------------


def whole_units(value: Any, what: str) -> int:
    """An ERPNext Float quantity as whole units, rounded half up (``None`` is 0)."""
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise DecodeError(f"ERP Bin {what} is not a number: {value!r}")
    try:
        return int(Decimal(str(value)).quantize(Decimal(1), rounding=ROUND_HALF_UP))
    except (InvalidOperation, ValueError):
        raise DecodeError(f"ERP Bin {what} is not a number: {value!r}") from None


def stock_level(row: Any) -> StockLevel:
    """One Bin row as a StockLevel."""
    if not isinstance(row, dict):
        raise DecodeError(f"ERP Bin row is not an object: {row!r}")
    texts = [row.get(k) for k in ("item_code", "warehouse", "modified")]
    if not all(isinstance(t, str) and t for t in texts):
        raise DecodeError(f"ERP Bin row lacks item_code, warehouse or modified: {row!r}")
    modified = frappe_time(row["modified"])
    if modified is None:
        raise DecodeError(f"ERP Bin row's modified is not a timestamp: {row!r}")
    actual_qty = whole_units(row.get("actual_qty"), "actual_qty")
    reserved_qty = whole_units(row.get("reserved_qty"), "reserved_qty")
    try:
        return StockLevel(sku=row["item_code"], warehouse=row["warehouse"], actual_qty=actual_qty,
                          reserved_qty=reserved_qty, modified=modified)
    except ValidationError as exc:  # e.g. an item code longer than a SKU may be
        raise DecodeError(f"ERP Bin row is no stock position ({exc.errors()[0]['msg']}): "
                          f"{row!r}"[:500]) from None


def bin_query(
    since: str | None, warehouses: Sequence[str], *, start: int, page_size: int
) -> dict[str, str]:
    """Query parameters of one page of Bins changed at or after ``since``, oldest first."""
    return modified_query(BIN, since, FIELDS, _warehouse_filter(warehouses), start=start,
                          page_size=page_size)


def _warehouse_filter(warehouses: Sequence[str]) -> list[list[Any]]:
    return [["warehouse", "in", list(warehouses)]] if warehouses else []


def parse_warehouses(value: str) -> tuple[str, ...]:
    """``erp_stock_warehouses``: comma-separated names; empty means every warehouse."""
    return tuple(name.strip() for name in value.split(",") if name.strip())


# --- the feed ---------------------------------------------------------------------------------


class ErpStockFeed:
    """StockFeed over ERPNext's REST API; owns one lazily created aiohttp session."""

    def __init__(
        self,
        base_url: str,
        api_key: str,
        api_secret: str,
        *,
        timeout_s: float = 10.0,
        warehouses: Sequence[str] = (),
        page_size: int = PAGE_SIZE,
    ) -> None:
        self._http = FrappeSession(base_url, api_key, api_secret, timeout_s=timeout_s)
        self.warehouses = tuple(warehouses)
        self.page_size = page_size

    @classmethod
    def from_settings(cls, settings: ErpNextSettings) -> ErpStockFeed:
        return cls(
            str(settings.erp_base_url),
            settings.erp_api_key.get_secret_value(),
            settings.erp_api_secret.get_secret_value(),
            timeout_s=settings.erp_timeout_s,
            warehouses=parse_warehouses(settings.erp_stock_warehouses),
        )

    async def poll(self, cursor: str | None) -> StockFeedResult:
        """Every Bin changed at or after ``cursor`` (all Bins when None), oldest first; the new
        cursor is the last row's ``modified`` (or ``cursor`` when nothing changed)."""
        rows = await rows_modified_since(self._http, BIN, cursor, fields=FIELDS,
                                         filters=_warehouse_filter(self.warehouses),
                                         page_size=self.page_size)
        levels = [stock_level(row) for row in rows]
        # the cursor is the ERP's own text of the last row's modified (what the next query sends)
        return StockFeedResult(levels=levels, cursor=rows[-1]["modified"] if rows else cursor)

    async def close(self) -> None:
        await self._http.close()


__all__ = ["ErpStockFeed", "bin_query", "parse_warehouses", "stock_level", "whole_units"]
