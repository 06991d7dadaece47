"""Frappe REST at the edge: one HTTP session with token auth, answers read, errors converted.

Every HTTP and network failure is converted here into the sync error hierarchy (shared by the
connector, the stock feed, the order feed, the reconciliation reader and the start-up check):

    200/201 with data.name        -> the document (``post_result``: ErpPostResult)
    409/417                       -> may be a duplicate (``may_be_duplicate``): look it up
    429                           -> RateLimitedError (retry_after from Retry-After)
    5xx, timeouts, connection     -> RetryableError
    other 4xx, 2xx without a name -> PermanentError (status, body truncated to 4 KiB)

``rows_modified_since`` is the shared "poll a doctype by ``modified``" paging (see
``connectors.erpnext.stock_feed`` for why it pages on the last row's ``modified``), used by the
stock feed and the order feed.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import aiohttp
import orjson

from retail_sync.connectors.contracts import ErpPostResult
from retail_sync.connectors.errors import (
    DecodeError,
    PermanentError,
    RateLimitedError,
    RetryableError,
    SyncError,
    parse_retry_after,
)

MAX_ERROR_BODY = 4 * 1024
JSON = dict[str, Any]

# --- pure response mapping --------------------------------------------------------------------


def _frappe_reason(body: str) -> str:
    """``exc_type: exception`` from a Frappe error body, or the start of the raw body."""
    try:
        payload = json.loads(body)
    except json.JSONDecodeError:
        return body[:200]
    if not isinstance(payload, dict):
        return body[:200]
    exc_type, exception = payload.get("exc_type"), payload.get("exception")
    if exc_type or exception:
        return f"{exc_type or 'Error'}: {exception or ''}".strip()
    return str(payload.get("message") or payload.get("errors") or body[:200])


def error_for_status(status: int, body: str, headers: Mapping[str, str], what: str) -> SyncError:
    """The sync error an unsuccessful HTTP status means."""
    clipped = body[:MAX_ERROR_BODY]
    message = f"ERP {what}: HTTP {status} {_frappe_reason(clipped)}"
    if status == 429:
        retry_after = parse_retry_after(headers.get("Retry-After"))
        return RateLimitedError(message, status=status, body=clipped, retry_after=retry_after)
    if status >= 500:
        retry_after = parse_retry_after(headers.get("Retry-After"))
        return RetryableError(message, status=status, body=clipped, retry_after=retry_after)
    return PermanentError(message, status=status, body=clipped)


def created_doc(status: int, body: str, headers: Mapping[str, str], what: str) -> JSON:
    """A successful create's document (any other status raises its sync error)."""
    if status not in (200, 201):
        raise error_for_status(status, body, headers, what)
    doc = data_of(status, body, what)
    if not isinstance(doc, dict) or not isinstance(doc.get("name"), str):
        raise PermanentError(f"ERP {what}: HTTP {status} without data.name", status=status,
                             body=body[:MAX_ERROR_BODY])  # fmt: skip
    return doc


def may_be_duplicate(status: int) -> bool:
    """A refused create that may mean "it exists already": Frappe's 417 (ValidationError:
    UniqueValidationError on a unique field, or ``validate_po``'s refusal of a second order for
    the same po_no) or 409 (DuplicateEntryError)."""
    return status in (409, 417)


def post_result(status: int, body: str, headers: Mapping[str, str]) -> ErpPostResult:
    """Read a successful create: the document name and its ``creation`` timestamp."""
    try:
        data = json.loads(body)["data"]
        name, creation = data["name"], data.get("creation")
    except (json.JSONDecodeError, KeyError, TypeError, AttributeError):
        name = creation = None
    if not isinstance(name, str) or not name:
        raise PermanentError(
            f"ERP create sales order: HTTP {status} without data.name",
            status=status,
            body=body[:MAX_ERROR_BODY],
        )
    return ErpPostResult(erp_sales_order=name, created=True, created_at=frappe_time(creation))


def existing_result(doc: JSON) -> ErpPostResult:
    """A Sales Order found by its order key: the order was created before (``created=False``)."""
    return ErpPostResult(erp_sales_order=str(doc["name"]), created=False,
                         created_at=frappe_time(doc.get("creation")))


def frappe_time(value: Any) -> datetime | None:
    """A Frappe timestamp (``YYYY-MM-DD HH:MM:SS[.ffffff]``, the site's timezone: UTC here) as an
    aware datetime; None when there is none or it is not one."""
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value.strip()).replace(tzinfo=UTC)
    except ValueError:
        return None


# --- the session ------------------------------------------------------------------------------


def json_text(value: Any) -> str:
    """``value`` as JSON text for a request body: what ``json.dumps`` wrote, by orjson (keys that
    are not strings written as strings, as ``json.dumps`` does)."""
    return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode()


class FrappeSession:
    """One lazily created aiohttp session to a Frappe site, with token auth; network failures
    become RetryableError here."""

    def __init__(self, base_url: str, api_key: str, api_secret: str, *, timeout_s: float) -> None:
        self.base_url = base_url.rstrip("/")
        self._headers = {
            "Authorization": f"token {api_key}:{api_secret}",
            "Accept": "application/json",
            "Content-Type": "application/json",
        }
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._session: aiohttp.ClientSession | None = None

    def url(self, doctype: str, name: str | None = None) -> str:
        url = f"{self.base_url}/api/resource/{quote(doctype)}"
        return f"{url}/{quote(name, safe='')}" if name else url

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            # request bodies (``json=``) by orjson: the stdlib encoder was ~1.5 % of a worker
            # posting orders in bulk (issue 16 profile)
            self._session = aiohttp.ClientSession(headers=self._headers, timeout=self._timeout,
                                                  json_serialize=json_text)
        return self._session

    async def request(
        self, method: str, url: str, what: str, **kwargs: Any
    ) -> tuple[int, str, Mapping[str, str]]:
        """One HTTP exchange: status, body text and headers."""
        try:
            async with self._client().request(method, url, **kwargs) as resp:
                return resp.status, await resp.text(errors="replace"), resp.headers
        except TimeoutError as exc:  # asyncio.TimeoutError is TimeoutError on 3.11
            raise RetryableError(f"ERP {what}: timed out ({exc!r})") from exc
        except aiohttp.ClientError as exc:
            raise RetryableError(f"ERP {what}: {type(exc).__name__}: {exc}") from exc

    async def get_data(self, url: str, what: str, **kwargs: Any) -> Any:
        """GET ``url`` and answer its ``data``; any other status than 200 raises its sync error."""
        status, body, headers = await self.request("GET", url, what, **kwargs)
        if status != 200:
            raise error_for_status(status, body, headers, what)
        return data_of(status, body, what)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def modified_query(doctype: str, since: str | None, fields: list[str],
                   filters: list[list[Any]], *, start: int, page_size: int) -> dict[str, str]:
    """Query parameters of one page of ``doctype`` changed at or after ``since``, oldest first."""
    conditions = [[doctype, "modified", ">=", since]] if since is not None else []
    return {
        "fields": json.dumps(fields),
        "filters": json.dumps(conditions + [[doctype, *f] for f in filters]),
        "order_by": "modified asc, name asc",
        "limit_start": str(start),
        "limit_page_length": str(page_size),
    }


async def rows_modified_since(
    http: FrappeSession, doctype: str, since: str | None, *, fields: list[str],
    filters: list[list[Any]] | None = None, page_size: int = 500,
) -> list[JSON]:
    """Every row of ``doctype`` changed at or after ``since`` (``>=``: the cursor's instant is
    read again, never skipped), oldest first, each (name, modified) once. Pages restart at the
    last row's ``modified`` (``limit_start`` 0), so rows changing between two reads shift
    nothing; only a full page at one instant is stepped over by ``limit_start``. ``fields`` must
    hold ``name`` and ``modified``."""
    found: list[JSON] = []
    seen: set[tuple[Any, str]] = set()
    at, start = since, 0
    what = f"list {doctype} modified since {since}"
    while True:
        query = modified_query(doctype, at, fields, filters or [], start=start, page_size=page_size)
        rows = await http.get_data(http.url(doctype), what, params=query)
        if not isinstance(rows, list) or not all(
            isinstance(r, dict) and isinstance(r.get("modified"), str) for r in rows
        ):
            raise DecodeError(f"ERP {what}: not a list of rows with modified")
        for row in rows:
            if (row.get("name"), row["modified"]) not in seen:
                seen.add((row.get("name"), row["modified"]))
                found.append(row)
        if len(rows) < page_size:
            return found
        last = rows[-1]["modified"]
        at, start = (at, start + len(rows)) if last == at else (last, 0)


def data_of(status: int, body: str, what: str) -> Any:
    """The ``data`` of a Frappe answer (PermanentError when there is none)."""
    try:
        return json.loads(body)["data"]
    except (json.JSONDecodeError, KeyError, TypeError):
        raise PermanentError(
            f"ERP {what}: HTTP {status} without data", status=status, body=body[:MAX_ERROR_BODY]
        ) from None



__all__ = [
    "MAX_ERROR_BODY",
    "FrappeSession",
    "created_doc",
    "data_of",
    "error_for_status",
    "existing_result",
    "frappe_time",
    "may_be_duplicate",
    "modified_query",
    "post_result",
    "rows_modified_since",
]
