"""ERPNext (Frappe REST) implementation of the ErpOrderFeed contract: sales orders the ERP ended.

The ERP cancels or closes orders on its own (fraud review, no stock, a user in the desk). The
feed polls ``Sales Order`` by ``modified`` exactly as the stock feed polls Bins (the paging is
shared: ``connectors.erpnext.frappe.rows_modified_since``)::

    GET /api/resource/Sales Order?fields=[...]&filters=[["Sales Order","modified",">=",cursor],
        ["Sales Order","status","in",["Cancelled","Closed"]]]&order_by=modified asc, name asc

Every cancelled or closed order is reported, whoever ended it: a user cancelling in the ERP's
desk sets no custom field, so filtering on one would miss exactly the changes this feed is for.
The engine treats a cancellation it asked for itself as an idempotent repeat. ``reason`` is the
order's ``custom_cancel_reason`` (set by ``ErpNextConnector.cancel_sales_order``, and by the
ERP's own cancellations where it records one), else None. Like the stock feed it may repeat the
orders at the cursor's instant and never skips one. Errors map as for Sales Orders: 429
RateLimitedError, 5xx and network RetryableError, other 4xx PermanentError; a row without name,
po_no, status or modified is a DecodeError.
"""

from __future__ import annotations

from typing import Any

from retail_sync.connectors.contracts import ErpOrderChange, ErpOrderFeedResult
from retail_sync.connectors.erpnext.frappe import FrappeSession, rows_modified_since
from retail_sync.connectors.erpnext.settings import ErpNextSettings
from retail_sync.connectors.errors import DecodeError

SALES_ORDER = "Sales Order"
ENDED = ["Cancelled", "Closed"]
FIELDS = ["name", "po_no", "status", "docstatus", "custom_cancel_reason", "modified"]
PAGE_SIZE = 500


def order_change(row: Any) -> ErpOrderChange:
    """One listed Sales Order row as an ErpOrderChange."""
    if not isinstance(row, dict):
        raise DecodeError(f"ERP Sales Order row is not an object: {row!r}")
    texts = [row.get(k) for k in ("name", "po_no", "status", "modified")]
    if not all(isinstance(t, str) and t for t in texts):
        raise DecodeError(f"ERP Sales Order row lacks name, po_no, status or modified: {row!r}")
    reason = row.get("custom_cancel_reason")
    return ErpOrderChange(
        erp_sales_order=row["name"],
        order_key=row["po_no"],
        status=row["status"],
        reason=reason if isinstance(reason, str) and reason else None,
        modified=row["modified"],
    )


class ErpOrderFeed:
    """ErpOrderFeed over ERPNext's REST API; owns one lazily created aiohttp session."""

    def __init__(
        self,
        base_url: str,
        api_key: str,
        api_secret: str,
        *,
        timeout_s: float = 10.0,
        page_size: int = PAGE_SIZE,
    ) -> None:
        self._http = FrappeSession(base_url, api_key, api_secret, timeout_s=timeout_s)
        self.page_size = page_size

    @classmethod
    def from_settings(cls, settings: ErpNextSettings) -> ErpOrderFeed:
        return cls(
            str(settings.erp_base_url),
            settings.erp_api_key.get_secret_value(),
            settings.erp_api_secret.get_secret_value(),
            timeout_s=settings.erp_timeout_s,
        )

    async def poll(self, cursor: str | None) -> ErpOrderFeedResult:
        """Orders cancelled or closed, changed at or after ``cursor`` (all when None), oldest
        first; the new cursor is the last one's ``modified`` (``cursor`` when none changed)."""
        rows = await rows_modified_since(
            self._http, SALES_ORDER, cursor, fields=FIELDS,
            filters=[["status", "in", ENDED]], page_size=self.page_size,
        )  # fmt: skip
        changes = [order_change(row) for row in rows]
        return ErpOrderFeedResult(changes=changes,
                                  cursor=changes[-1].modified if changes else cursor)  # fmt: skip

    async def close(self) -> None:
        await self._http.close()


__all__ = ["ErpOrderFeed", "order_change"]
