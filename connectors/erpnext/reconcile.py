"""ERPNext's side of reconciliation: the Sales Orders of the window and the credit notes of the
orders a marketplace shows refunded, read over the public REST API as an operator would.

* ``read_sales_orders``: ``GET /api/resource/Sales Order`` with ``transaction_date`` (the order's
  creation day, UTC) on or after the window's first day, every page;
* ``read_credit_notes``: submitted return ``Sales Invoice`` rows (``is_return`` 1) per ``po_no``,
  for the given order keys only (100 per query).

Rows come as ERPNext lists them (``name``, ``po_no`` = our order key, ``status``, ``docstatus``,
``grand_total``, ``per_delivered``, ``currency``): the shape ``retail_sync.reconcile`` compares.
A throttle or a transient failure is waited out (6 attempts, jittered backoff, never shorter than
the ERP's Retry-After).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from functools import partial
from typing import Any, TypeVar

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    stop_after_attempt,
    wait_random_exponential,
)

from retail_sync.connectors.erpnext.documents import SALES_INVOICE, SALES_ORDER
from retail_sync.connectors.erpnext.frappe import FrappeSession
from retail_sync.connectors.erpnext.settings import ErpNextSettings
from retail_sync.connectors.errors import DecodeError, RetryableError

JSON = dict[str, Any]
T = TypeVar("T")
PAGE_SIZE = 500
ATTEMPTS, BASE_S, MAX_S = 6, 0.5, 30.0
SO_FIELDS = ["name", "po_no", "status", "docstatus", "grand_total", "per_delivered", "currency",
             "transaction_date"]

_jitter = wait_random_exponential(multiplier=BASE_S, max=MAX_S)


def _wait(state: RetryCallState) -> float:
    """Full-jitter exponential backoff, never shorter than the ERP's own Retry-After."""
    error = state.outcome.exception() if state.outcome is not None else None
    return max(_jitter(state), getattr(error, "retry_after", None) or 0.0)


async def _retrying(call: Callable[[], Awaitable[T]]) -> T:
    async for attempt in AsyncRetrying(retry=retry_if_exception_type(RetryableError),
                                       stop=stop_after_attempt(ATTEMPTS), wait=_wait, reraise=True):
        with attempt:
            return await call()
    raise AssertionError("unreachable")  # pragma: no cover


def session(settings: ErpNextSettings) -> FrappeSession:
    return FrappeSession(str(settings.erp_base_url), settings.erp_api_key.get_secret_value(),
                         settings.erp_api_secret.get_secret_value(), timeout_s=settings.erp_timeout_s)


async def pages(http: FrappeSession, doctype: str, filters: list[list[Any]],
                fields: list[str]) -> list[JSON]:
    """Every row of ``doctype`` matching ``filters``, page by page (oldest first)."""
    rows: list[JSON] = []
    while True:
        query = {"fields": json.dumps(fields), "filters": json.dumps([[doctype, *f] for f in filters]),
                 "order_by": "creation asc, name asc", "limit_start": str(len(rows)),
                 "limit_page_length": str(PAGE_SIZE)}  # fmt: skip
        page = await _retrying(partial(http.get_data, http.url(doctype), f"list {doctype}",
                                       params=query))
        if not isinstance(page, list) or not all(isinstance(r, dict) for r in page):
            raise DecodeError(f"ERP list {doctype}: data is not a list of rows")
        rows += page
        if len(page) < PAGE_SIZE:
            return rows


async def read_sales_orders(settings: ErpNextSettings, since: datetime) -> list[JSON]:
    """The Sales Orders of the window (``transaction_date`` >= the window's first day)."""
    http = session(settings)
    try:
        return await pages(http, SALES_ORDER, [["transaction_date", ">=", since.date().isoformat()]],
                           SO_FIELDS)
    finally:
        await http.close()


async def read_credit_notes(settings: ErpNextSettings, keys: Sequence[str]) -> Counter[str]:
    """Submitted credit notes (return Sales Invoices) per po_no, for ``keys`` only."""
    found: Counter[str] = Counter()
    if not keys:
        return found
    http = session(settings)
    try:
        for start in range(0, len(keys), 100):
            chunk = list(keys[start:start + 100])
            rows = await pages(http, SALES_INVOICE, [["is_return", "=", 1], ["docstatus", "=", 1],
                                                     ["po_no", "in", chunk]], ["name", "po_no"])
            found.update(str(r.get("po_no")) for r in rows)
    finally:
        await http.close()
    return found


__all__ = ["SO_FIELDS", "pages", "read_credit_notes", "read_sales_orders", "session"]
