"""ERPNext (Frappe REST) implementation of the ErpConnector contract.

Speaks ``/api/resource/Sales Order`` with ``Authorization: token key:secret``. The canonical
order becomes a Sales Order inserted and submitted (``"docstatus": 1``, so the ERP reserves its
stock) whose ``po_no`` (customer's purchase order number) is our ``order_key``; the ERP side is
expected to be idempotent on it (a repeat post answers the existing document with
``X-Idempotent-Replay: true``). Units the engine accepted without stock travel per item in the
custom field ``custom_backorder_qty``. Every HTTP and network failure is converted here, at the
edge, into the sync error hierarchy (``FrappeSession`` and ``error_for_status``, shared with the
stock feed in ``connectors.erp_stock``):

    200/201 with data.name        -> ErpPostResult (created_at = the order's ``creation``)
    429                           -> RateLimitedError (retry_after from Retry-After)
    5xx, timeouts, connection     -> RetryableError
    other 4xx, 2xx without a name -> PermanentError (status, body truncated to 4 KiB)
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from decimal import Decimal
from typing import Any
from urllib.parse import quote

import aiohttp

from connectors.base import ErpPostResult
from connectors.errors import (
    PermanentError,
    RateLimitedError,
    RetryableError,
    SyncError,
    parse_retry_after,
)
from retail_sync.settings import Settings
from streams.models import Order

SALES_ORDER = "Sales Order"
MAX_ERROR_BODY = 4 * 1024
JSON = dict[str, Any]


# --- pure mapping -----------------------------------------------------------------------------


def _amount(value: Decimal) -> str:
    """Decimal as a plain string, so no precision is lost in JSON."""
    return format(value, "f")


def _items(
    order: Order, delivery_date: str, warehouse: str, backorders: Mapping[str, int]
) -> list[JSON]:
    unknown = set(backorders) - {line.line_id for line in order.lines}
    if unknown:
        raise ValueError(f"backorders name lines the order does not have: {sorted(unknown)}")
    items = []
    for line in order.lines:
        item: JSON = {
            "item_code": line.sku,
            "item_name": line.title or line.sku,
            "qty": line.quantity,
            "rate": _amount(line.unit_price.amount),
            "uom": "Nos",
            "delivery_date": delivery_date,
            "warehouse": warehouse,
            "marketplace_line_id": line.line_id,
        }
        if backorders.get(line.line_id):
            item["custom_backorder_qty"] = backorders[line.line_id]
        items.append(item)
    return items


def _actual_charge(account_head: str, description: str, amount: Decimal) -> JSON:
    return {
        "charge_type": "Actual",
        "account_head": account_head,
        "description": description,
        "tax_amount": _amount(amount),
    }


def _taxes(order: Order) -> list[JSON]:
    """Tax (unless already inside the prices) and shipping as fixed-amount rows."""
    rows = []
    if order.tax_total.amount and not order.taxes_included:
        rows.append(_actual_charge("Sales Tax", "Marketplace sales tax", order.tax_total.amount))
    if order.shipping.amount:
        rows.append(
            _actual_charge("Freight and Forwarding Charges", "Shipping", order.shipping.amount)
        )
    return rows


def _customer_fields(order: Order) -> JSON:
    """Buyer details in custom fields (``customer_name`` is ERPNext's, fetched from Customer)."""
    return {
        "customer_email": order.customer.email,
        "marketplace_customer_name": order.customer.name,
        "marketplace_customer_id": order.customer.marketplace_customer_id,
    }


def sales_order_doc(
    order_key: str,
    order: Order,
    *,
    company: str,
    customer: str,
    warehouse: str,
    backorders: Mapping[str, int] | None = None,
) -> JSON:
    """The ERPNext Sales Order document for a canonical order: submitted on insert (so the ERP
    reserves stock), idempotent on po_no. ``backorders`` maps a line_id to the units of that line
    accepted without stock (``custom_backorder_qty``); a line_id not in the order is a ValueError.
    """
    transaction_date = order.created_at.date().isoformat()  # created_at is UTC
    doc: JSON = {
        "docstatus": 1,
        "customer": customer,
        "company": company,
        "order_type": "Sales",
        "po_no": order_key,
        "po_date": transaction_date,
        "transaction_date": transaction_date,
        "delivery_date": transaction_date,
        "currency": order.currency,
        "set_warehouse": warehouse,
        "marketplace": order.channel,
        "marketplace_order_id": order.marketplace_order_id,
        "marketplace_order_name": order.marketplace_order_name,
        **_customer_fields(order),
        "items": _items(order, transaction_date, warehouse, backorders or {}),
        "taxes": _taxes(order),
    }
    if order.discount_total.amount:
        doc["apply_discount_on"] = "Net Total"
        doc["discount_amount"] = _amount(order.discount_total.amount)
    return doc


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


def post_result(status: int, body: str, headers: Mapping[str, str]) -> ErpPostResult:
    """Read a successful create: the document name, its ``creation`` timestamp and whether it
    was an idempotent replay."""
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
    replay = headers.get("X-Idempotent-Replay", "").lower() == "true"
    created_at = creation if isinstance(creation, str) and creation else None
    return ErpPostResult(erp_sales_order=name, created=not replay, created_at=created_at)


# --- the connector ----------------------------------------------------------------------------


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
            self._session = aiohttp.ClientSession(headers=self._headers, timeout=self._timeout)
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


class ErpNextConnector:
    """ErpConnector over ERPNext's REST API; owns one lazily created aiohttp session."""

    def __init__(
        self,
        base_url: str,
        api_key: str,
        api_secret: str,
        *,
        timeout_s: float = 10.0,
        company: str = "Retail Sync Demo Ltd",
        customer: str = "Marketplace Customer",
        warehouse: str = "Stores - RSD",
    ) -> None:
        self._http = FrappeSession(base_url, api_key, api_secret, timeout_s=timeout_s)
        self.base_url = self._http.base_url
        self.company, self.customer, self.warehouse = company, customer, warehouse

    @classmethod
    def from_settings(cls, settings: Settings) -> ErpNextConnector:
        return cls(
            str(settings.erp_base_url),
            settings.erp_api_key.get_secret_value(),
            settings.erp_api_secret.get_secret_value(),
            timeout_s=settings.erp_timeout_s,
            company=settings.erp_company,
            customer=settings.erp_default_customer,
            warehouse=settings.erp_warehouse,
        )

    def _url(self, name: str | None = None) -> str:
        return self._http.url(SALES_ORDER, name)

    async def create_sales_order(
        self, order_key: str, order: Order, *, backorders: Mapping[str, int] | None = None
    ) -> ErpPostResult:
        doc = sales_order_doc(
            order_key,
            order,
            company=self.company,
            customer=self.customer,
            warehouse=self.warehouse,
            backorders=backorders,
        )
        what = f"create sales order {order_key}"
        status, body, headers = await self._http.request("POST", self._url(), what, json=doc)
        if status not in (200, 201):
            raise error_for_status(status, body, headers, what)
        return post_result(status, body, headers)

    async def get_sales_order(self, name: str) -> JSON:
        """The full Sales Order document ``name`` (PermanentError 404 if it does not exist)."""
        doc: JSON = await self._http.get_data(self._url(name), f"get sales order {name}")
        return doc

    async def find_by_po_no(self, po_no: str) -> JSON | None:
        """The Sales Order whose ``po_no`` is ``po_no`` (our order_key), or None."""
        what = f"find sales order by po_no {po_no}"
        params = {
            "filters": json.dumps([[SALES_ORDER, "po_no", "=", po_no]]),
            "fields": json.dumps(["name"]),
            "limit_page_length": "1",
        }
        rows = await self._http.get_data(self._url(), what, params=params)
        return await self.get_sales_order(rows[0]["name"]) if rows else None

    async def close(self) -> None:
        await self._http.close()


def data_of(status: int, body: str, what: str) -> Any:
    """The ``data`` of a Frappe answer (PermanentError when there is none)."""
    try:
        return json.loads(body)["data"]
    except (json.JSONDecodeError, KeyError, TypeError):
        raise PermanentError(
            f"ERP {what}: HTTP {status} without data", status=status, body=body[:MAX_ERROR_BODY]
        ) from None


__all__ = [
    "ErpNextConnector",
    "FrappeSession",
    "data_of",
    "error_for_status",
    "post_result",
    "sales_order_doc",
]
