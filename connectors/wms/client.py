"""The warehouse (3PL / WMS) as a WmsConnector, over the REST API simulators/wms/simulator.py models.

Calls (``Authorization: Bearer <wms_api_key>``)::

    POST /api/v1/fulfillment-orders                     create, idempotent on reference
                                                        (ship_to, shipping, lines' details)
    POST /api/v1/fulfillment-orders/{reference}/cancel  200 cancelled, 409 already shipped
    POST /api/v1/returns                                announce a return, idempotent on id
    GET  /api/v1/events?after=<cursor>&limit=N          shipments and received returns

Our ``order_key`` is the fulfilment order's ``reference``; units released later, when goods
arrived for a backorder, go as ``<order_key>#bo<n>`` (``order_key_of`` maps both back).

``poll`` follows ``next`` while pages come back full, at most ``max_pages`` pages per call (the
rest comes with the next poll); the cursor it answers is the last ``next`` (or the one it was
given when nothing came), so polling again from it neither skips nor repeats. Events of other
kinds are skipped (the cursor still moves past them). Carriers become canonical (UPS, USPS, FEDEX,
DHL, else OTHER).

Errors, converted here at the edge:

    429                         -> RateLimitedError (retry_after from Retry-After)
    5xx, timeouts, connection   -> RetryableError
    other 4xx                   -> PermanentError (404 on cancel: nothing to stop, True)
    2xx that is not the shape   -> DecodeError
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import quote

import aiohttp

from retail_sync.connectors.contracts import Shipment, WmsEvent, WmsFeedResult
from retail_sync.connectors.errors import (
    DecodeError,
    PermanentError,
    RateLimitedError,
    RetryableError,
    SyncError,
    parse_retry_after,
)
from retail_sync.connectors.wms.settings import WmsSettings
from retail_sync.streams.models import LineUnits

API = "/api/v1"
PAGE_SIZE = 100
MAX_PAGES = 20
MAX_ERROR_BODY = 4 * 1024
CANONICAL_CARRIERS = {"UPS": "UPS", "USPS": "USPS", "FEDEX": "FEDEX", "FEDERALEXPRESS": "FEDEX",
                      "DHL": "DHL", "DHLEXPRESS": "DHL"}  # fmt: skip
JSON = dict[str, Any]


# --- pure mapping -----------------------------------------------------------------------------

BACKORDER_REFERENCE = re.compile(r"(?P<order_key>.+)#bo[1-9][0-9]*")


def order_key_of(reference: str) -> str:
    """The order a fulfilment reference belongs to: the key itself, or ``<key>#bo<n>``."""
    found = BACKORDER_REFERENCE.fullmatch(reference)
    return found["order_key"] if found else reference



def line_docs(lines: Sequence[LineUnits],
              details: Mapping[str, Mapping[str, Any]] | None = None) -> list[JSON]:
    """Line documents; with ``details`` each also carries its title, properties (e.g. the
    engraving text) and condition, where there are any."""
    docs = []
    for ln in lines:
        doc: JSON = {"line_id": ln.line_id, "sku": ln.sku, "quantity": ln.quantity}
        extra = (details or {}).get(ln.line_id) or {}
        doc.update({k: v for k, v in extra.items() if v not in (None, "", [])})
        docs.append(doc)
    return docs


def canonical_carrier(code: str) -> str:
    key = "".join(ch for ch in code.upper() if ch.isalnum())
    return CANONICAL_CARRIERS.get(key, "OTHER")


def _text(doc: Mapping[str, Any], key: str, what: str) -> str:
    value = doc.get(key)
    if not isinstance(value, str) or not value:
        raise DecodeError(f"WMS {what} lacks {key}: {dict(doc)!r}"[:500])
    return value


def shipment_lines(value: Any, what: str) -> list[LineUnits]:
    if not isinstance(value, list):
        raise DecodeError(f"WMS {what}: lines is not a list")
    lines = []
    for row in value:
        if not isinstance(row, dict):
            raise DecodeError(f"WMS {what}: line is not an object: {row!r}")
        qty = row.get("quantity")
        if isinstance(qty, bool) or not isinstance(qty, int) or qty <= 0:
            raise DecodeError(f"WMS {what}: quantity is not a positive integer: {row!r}")
        lines.append(LineUnits(line_id=_text(row, "line_id", what), sku=_text(row, "sku", what),
                               quantity=qty))
    return lines


def wms_event(raw: Any) -> WmsEvent | None:
    """One feed event as a WmsEvent; None for a kind we do not use. DecodeError if malformed."""
    if not isinstance(raw, dict) or not isinstance(raw.get("data"), dict):
        raise DecodeError(f"WMS event is not an object with data: {raw!r}"[:500])
    kind, data = raw.get("kind"), raw["data"]
    if kind == "shipment":
        shipment = Shipment(
            shipment_id=_text(data, "id", "shipment"),
            order_key=order_key_of(_text(data, "reference", "shipment")),
            lines=shipment_lines(data.get("lines"), "shipment"),
            carrier=canonical_carrier(_text(data, "carrier", "shipment")),
            tracking_number=_text(data, "tracking_number", "shipment"),
            shipped_at=_text(data, "shipped_at", "shipment"),
        )
        return WmsEvent(kind="shipment", shipment=shipment, order_key=shipment.order_key,
                        at=shipment.shipped_at)  # fmt: skip
    if kind == "return_received":
        return WmsEvent(
            kind="return_received",
            return_id=_text(data, "return_id", "return"),
            order_key=_text(data, "reference", "return"),
            lines=shipment_lines(data.get("lines"), "return"),
            at=_text(data, "received_at", "return"),
        )
    return None


def error_for_status(status: int, body: str, headers: Mapping[str, str], what: str) -> SyncError:
    """The sync error an unsuccessful HTTP status means."""
    clipped = body[:MAX_ERROR_BODY]
    message = f"WMS {what}: HTTP {status} {clipped[:200]}"
    retry_after = parse_retry_after(headers.get("Retry-After"))
    if status == 429:
        return RateLimitedError(message, status=status, body=clipped, retry_after=retry_after)
    if status >= 500:
        return RetryableError(message, status=status, body=clipped, retry_after=retry_after)
    return PermanentError(message, status=status, body=clipped)


def json_object(body: str, what: str) -> JSON:
    try:
        doc = json.loads(body)
    except (json.JSONDecodeError, RecursionError):  # RecursionError: nested too deep
        raise DecodeError(f"WMS {what}: answer is not JSON", body=body[:MAX_ERROR_BODY]) from None
    if not isinstance(doc, dict):
        raise DecodeError(f"WMS {what}: answer is not a JSON object", body=body[:MAX_ERROR_BODY])
    return doc


# --- the connector ----------------------------------------------------------------------------


class WmsClient:
    """WmsConnector over the WMS REST API; owns one lazily created aiohttp session."""

    def __init__(self, base_url: str, api_key: str, *, timeout_s: float = 10.0,
                 page_size: int = PAGE_SIZE, max_pages: int = MAX_PAGES) -> None:  # fmt: skip
        self.base_url = base_url.rstrip("/")
        self._headers = {"Authorization": f"Bearer {api_key}", "Accept": "application/json"}
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._session: aiohttp.ClientSession | None = None
        self.page_size, self.max_pages = page_size, max_pages

    @classmethod
    def from_settings(cls, settings: WmsSettings) -> WmsClient | None:
        """The client for ``wms_base_url``, or None when no warehouse is configured."""
        if settings.wms_base_url is None:
            return None
        return cls(str(settings.wms_base_url), settings.wms_api_key.get_secret_value(),
                   timeout_s=settings.wms_timeout_s)  # fmt: skip

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(headers=self._headers, timeout=self._timeout)
        return self._session

    async def _request(self, method: str, path: str, what: str,
                       **kwargs: Any) -> tuple[int, str, Mapping[str, str]]:  # fmt: skip
        try:
            async with self._client().request(method, self.base_url + API + path, **kwargs) as resp:
                return resp.status, await resp.text(errors="replace"), resp.headers
        except TimeoutError as exc:
            raise RetryableError(f"WMS {what}: timed out ({exc!r})") from exc
        except aiohttp.ClientError as exc:
            raise RetryableError(f"WMS {what}: {type(exc).__name__}: {exc}") from exc

    async def _call(self, method: str, path: str, what: str, **kwargs: Any) -> JSON:
        """One call that must answer 200/201 with a JSON object."""
        status, body, headers = await self._request(method, path, what, **kwargs)
        if status not in (200, 201):
            raise error_for_status(status, body, headers, what)
        return json_object(body, what)

    async def create_fulfilment_order(self, order_key: str, erp_sales_order: str,
                                      lines: Sequence[LineUnits],
                                      ship_to: Mapping[str, Any] | None,
                                      reference: str | None = None, *,
                                      shipping: Mapping[str, Any] | None = None,
                                      line_details: Mapping[str, Mapping[str, Any]] | None = None,
                                      ) -> str:  # fmt: skip
        reference = reference or order_key
        what = f"create fulfilment order {reference}"
        body = {
            "reference": reference,
            "erp_sales_order": erp_sales_order,
            "lines": line_docs(lines, line_details),
            "ship_to": dict(ship_to) if ship_to is not None else None,
        }
        if shipping is not None:
            body["shipping"] = dict(shipping)
        doc = await self._call("POST", "/fulfillment-orders", what, json=body)
        return _text(doc, "id", what)

    async def cancel_fulfilment_order(self, reference: str) -> bool:
        what = f"cancel fulfilment order {reference}"
        path = f"/fulfillment-orders/{quote(reference, safe='')}/cancel"
        status, body, headers = await self._request("POST", path, what)
        if status == 409:
            return False
        if status == 404:  # the warehouse never had it: nothing will ship
            return True
        if status != 200:
            raise error_for_status(status, body, headers, what)
        cancelled = json_object(body, what).get("cancelled")
        if not isinstance(cancelled, bool):
            raise DecodeError(f"WMS {what}: no cancelled flag", body=body[:MAX_ERROR_BODY])
        return cancelled

    async def expect_return(self, order_key: str, return_id: str,
                            lines: Sequence[LineUnits]) -> None:  # fmt: skip
        body = {"id": return_id, "reference": order_key, "lines": line_docs(lines)}
        await self._call("POST", "/returns", f"announce return {return_id} of {order_key}", json=body)

    async def _page(self, cursor: str | None) -> tuple[list[Any], str | None]:
        params = {"limit": str(self.page_size), **({"after": cursor} if cursor else {})}
        doc = await self._call("GET", "/events", f"read events after {cursor}", params=params)
        events, nxt = doc.get("events"), doc.get("next")
        if not isinstance(events, list) or not (nxt is None or isinstance(nxt, str)):
            raise DecodeError(f"WMS events page lacks events or next: {doc!r}"[:500])
        return events, nxt or cursor

    async def poll(self, cursor: str | None) -> WmsFeedResult:
        """Events after ``cursor``, oldest first, over at most ``max_pages`` pages."""
        events: list[WmsEvent] = []
        for _ in range(self.max_pages):
            raw, cursor = await self._page(cursor)
            events.extend(e for e in map(wms_event, raw) if e is not None)
            if len(raw) < self.page_size:
                break
        return WmsFeedResult(events=events, cursor=cursor)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


__all__ = ["WmsClient", "canonical_carrier", "error_for_status", "line_docs", "wms_event"]
