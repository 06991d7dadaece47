"""ERPNext (Frappe REST) implementation of the ErpConnector contract.

Speaks ``/api/resource/Sales Order`` with ``Authorization: token key:secret``. The canonical
order becomes a draft Sales Order whose ``po_no`` (customer's purchase order number) is our
``order_key``; the ERP side is expected to be idempotent on it (a repeat post answers the existing
document with ``X-Idempotent-Replay: true``). Every HTTP and network failure is converted here, at
the edge, into the sync error hierarchy:

    200/201 with data.name        -> ErpPostResult
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


def _items(order: Order, delivery_date: str, warehouse: str) -> list[JSON]:
    return [
        {
            "item_code": line.sku,
            "item_name": line.title or line.sku,
            "qty": line.quantity,
            "rate": _amount(line.unit_price.amount),
            "uom": "Nos",
            "delivery_date": delivery_date,
            "warehouse": warehouse,
            "marketplace_line_id": line.line_id,
        }
        for line in order.lines
    ]


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
    order_key: str, order: Order, *, company: str, customer: str, warehouse: str
) -> JSON:
    """The ERPNext Sales Order document for a canonical order (a draft, idempotent on po_no)."""
    transaction_date = order.created_at.date().isoformat()  # created_at is UTC
    doc: JSON = {
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
        "items": _items(order, transaction_date, warehouse),
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
    """Read a successful create: the document name, and whether it was an idempotent replay."""
    try:
        name = json.loads(body)["data"]["name"]
    except (json.JSONDecodeError, KeyError, TypeError):
        name = None
    if not isinstance(name, str) or not name:
        raise PermanentError(
            f"ERP create sales order: HTTP {status} without data.name",
            status=status,
            body=body[:MAX_ERROR_BODY],
        )
    replay = headers.get("X-Idempotent-Replay", "").lower() == "true"
    return ErpPostResult(erp_sales_order=name, created=not replay)


# --- the connector ----------------------------------------------------------------------------


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
        self.base_url = base_url.rstrip("/")
        self.company, self.customer, self.warehouse = company, customer, warehouse
        self._headers = {
            "Authorization": f"token {api_key}:{api_secret}",
            "Accept": "application/json",
            "Content-Type": "application/json",
        }
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._session: aiohttp.ClientSession | None = None

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
        url = f"{self.base_url}/api/resource/{quote(SALES_ORDER)}"
        return f"{url}/{quote(name, safe='')}" if name else url

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(headers=self._headers, timeout=self._timeout)
        return self._session

    async def _request(
        self, method: str, url: str, what: str, **kwargs: Any
    ) -> tuple[int, str, Mapping[str, str]]:
        """One HTTP exchange; network failures become RetryableError here."""
        try:
            async with self._client().request(method, url, **kwargs) as resp:
                return resp.status, await resp.text(errors="replace"), resp.headers
        except TimeoutError as exc:  # asyncio.TimeoutError is TimeoutError on 3.11
            raise RetryableError(f"ERP {what}: timed out ({exc!r})") from exc
        except aiohttp.ClientError as exc:
            raise RetryableError(f"ERP {what}: {type(exc).__name__}: {exc}") from exc

    async def create_sales_order(self, order_key: str, order: Order) -> ErpPostResult:
        doc = sales_order_doc(
            order_key, order, company=self.company, customer=self.customer, warehouse=self.warehouse
        )
        what = f"create sales order {order_key}"
        status, body, headers = await self._request("POST", self._url(), what, json=doc)
        if status not in (200, 201):
            raise error_for_status(status, body, headers, what)
        return post_result(status, body, headers)

    async def get_sales_order(self, name: str) -> JSON:
        """The full Sales Order document ``name`` (PermanentError 404 if it does not exist)."""
        what = f"get sales order {name}"
        status, body, headers = await self._request("GET", self._url(name), what)
        if status != 200:
            raise error_for_status(status, body, headers, what)
        return _data(status, body, what)

    async def find_by_po_no(self, po_no: str) -> JSON | None:
        """The Sales Order whose ``po_no`` is ``po_no`` (our order_key), or None."""
        what = f"find sales order by po_no {po_no}"
        params = {
            "filters": json.dumps([[SALES_ORDER, "po_no", "=", po_no]]),
            "fields": json.dumps(["name"]),
            "limit_page_length": "1",
        }
        status, body, headers = await self._request("GET", self._url(), what, params=params)
        if status != 200:
            raise error_for_status(status, body, headers, what)
        rows = _data(status, body, what)
        return await self.get_sales_order(rows[0]["name"]) if rows else None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def _data(status: int, body: str, what: str) -> Any:
    try:
        return json.loads(body)["data"]
    except (json.JSONDecodeError, KeyError, TypeError):
        raise PermanentError(
            f"ERP {what}: HTTP {status} without data", status=status, body=body[:MAX_ERROR_BODY]
        ) from None


__all__ = [
    "ErpNextConnector",
    "error_for_status",
    "post_result",
    "sales_order_doc",
]
