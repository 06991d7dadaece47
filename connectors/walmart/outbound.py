"""Walmart Marketplace (US) as a ChannelOutbound: inventory, seller cancellations, shipment
confirmations and refunds out.

Auth, headers and error conversion are the Orders client's (connectors/walmart/client.py): the
client-credentials token cached and refreshed once on a 401, ``WM_SEC.ACCESS_TOKEN``,
``WM_QOS.CORRELATION_ID``, ``WM_SVC.NAME``; ``WalmartApi`` only adds calls that carry a body.

Inventory: a push of fewer than ``bulk_min_skus`` SKUs is one ``PUT /v3/inventory?sku=`` per SKU
(``mechanism="inventory"``; a 400/404 for one SKU goes to ``failed``). A larger push is one bulk
feed, ``POST /v3/feeds?feedType=inventory`` (multipart ``file``, spec 1.4 ``InventoryHeader`` /
``Inventory``; ``mechanism="inventory-feed"``, ``reference`` = the feedId), whose status is polled
(``GET /v3/feeds/{feedId}?includeDetails=true``, pages of 50) until PROCESSED or ERROR, for at most
``feed_timeout_s`` (then RetryableError: pushing the same absolute quantities again is harmless).
Per item SUCCESS is applied, DATA_ERROR failed with its ``ingestionErrors``; a SYSTEM_ERROR or
TIMEOUT_ERROR item, or a feed in ERROR for a system reason, makes the push retryable.

Cancellations: ``POST /v3/orders/{purchaseOrderId}/cancel`` with ``SELLER_CANCEL_OUT_OF_STOCK``
per line. Our canonical ``line_id`` for Walmart is the ``lineNumber`` (connectors/walmart/mapper.py).
The order is read first; a line's ``quantity`` is the number of its units that must end up
Cancelled, so only the difference is asked for, and a whole-order cancellation cancels every unit
still Created or Acknowledged. Repeating a cancellation therefore sends nothing. Units already
shipped cannot be cancelled (PermanentError).

Shipments: ``POST /v3/orders/{purchaseOrderId}/shipping`` (spec ``orderShipment``): per line
(``lineNumber`` = our line_id) a Shipped status with ``statusQuantity`` and ``trackingInfo``
(``shipDateTime`` in epoch ms, ``carrierName.carrier`` from ``WALMART_CARRIERS``, the order's own
``methodCode`` (Standard if it has none the spec allows), ``trackingNumber``); ``sellerOrderId`` is
the order key, cut to the spec's 30 characters. OTHER has no Walmart carrier code: it goes as
``otherCarrier`` with a ``trackingURL`` built from ``other_tracking_url`` (a template with
``{tracking_number}``); without one it is a PermanentError. Walmart keeps the tracking number on
each Shipped status entry and nothing else of ours, so that is the idempotency key: the order is
read first, the units of each line already Shipped/Delivered/Refund under this tracking number are
taken as done, and only the rest is sent (nothing, on a repeat). Units the line no longer has open
are a PermanentError.

Refunds: ``POST /v3/orders/{purchaseOrderId}/refund`` (spec ``orderRefund``), one line per
refunded line with ``isFullRefund: false`` and one PRODUCT refund charge (``chargeName``
ItemPrice, negative amount as in the spec) for that line's share of ``refund.amount``, split in
proportion to the lines' unit prices times the refunded units (the last line takes the rounding
rest); tax is not itemised. ``refundReason`` is ``refund.reason`` when it is one of the spec's
reasons, else "Customer returned item" (restock) or "General adjustment". ``refundComments``
carries "<reason> [retail-sync refund <refund_id>]": the order is read first and a line whose
``refund.refundComments`` has that marker means the refund was made (Walmart answers the line's
``refund`` in the order; that it keeps earlier comments of several refunds of one line is our
guess, as the simulator does). Walmart has no restock flag on a refund (goods come back through
its Returns API), so ``refund.restock`` only picks the reason. A zero amount sends nothing.

Errors: as connectors/walmart/client.py (429 -> RateLimitedError with the replenish time, 5xx/timeouts/
connection -> RetryableError, other 4xx -> PermanentError, bad JSON -> DecodeError).

Long module: inventory (single PUTs and the bulk feed), cancellations, shipping updates and refunds
share one client's token, pacing and error mapping behind one ChannelOutbound.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any
from urllib.parse import quote, urlencode

import aiohttp
from yarl import URL

from retail_sync.connectors.contracts import PushReport, QuantityUpdate, Refund, Shipment
from retail_sync.connectors.errors import DecodeError, PermanentError, RateLimitedError, RetryableError
from retail_sync.connectors.walmart.client import WalmartOrdersClient, error_for_status, walmart_budgets
from retail_sync.connectors.walmart.settings import WalmartSettings
from retail_sync.streams.models import LineUnits

JSON = dict[str, Any]
CANCEL_REASON = "SELLER_CANCEL_OUT_OF_STOCK"
CANCELLABLE = ("Created", "Acknowledged")
FEED_DONE = ("PROCESSED", "ERROR")
FEED_PAGE = 50
TRANSIENT = ("SYSTEM_ERROR", "TIMEOUT_ERROR")
PER_SKU_FAILURES = (400, 404)
#: canonical carrier (connectors.contracts.Shipment) -> Walmart ``carrierName.carrier``; None: not a
#: Walmart carrier, sent as ``otherCarrier`` (which needs a tracking URL)
WALMART_CARRIERS: dict[str, str | None] = {
    "UPS": "UPS",
    "USPS": "USPS",
    "FEDEX": "FedEx",
    "DHL": "DHL",
    "OTHER": None,
}
METHOD_CODES = ("Standard", "Express", "OneDay", "Freight", "WhiteGlove", "Value")
SHIPPED_STATUSES = ("Shipped", "Delivered", "Refund")
REFUND_REASONS = (  # RefundChargeType.refundReason of the orders spec, the ones we may pass on
    "BillingError", "TaxExemptCustomer", "ItemNotAsAdvertised", "IncorrectItemReceived",
    "CancelledYetShipped", "ItemNotReceivedByCustomer", "IncorrectShippingPrice", "DamagedItem",
    "DefectiveItem", "CustomerChangedMind", "CustomerReceivedItemLate", "Buyer canceled",
    "Customer returned item", "General adjustment", "Merchandise not received", "Others",
)
REFUND_MARKER = "retail-sync refund {}"
CENT = Decimal("0.01")


class WalmartApi(WalmartOrdersClient):
    """The Orders client plus authenticated calls with a JSON or multipart body."""

    async def send(
        self, method: str, url: str | URL, what: str, body: Callable[[], Mapping[str, Any]] | None = None,
        *, paid: bool = False,
    ) -> tuple[int, str, Mapping[str, str]]:
        """One call within its budget (``paid``: the slot was taken already; ``body()`` gives
        aiohttp's ``json=``/``data=``, rebuilt for a retry); a 401 drops the cached token and
        tries once more with a new one."""
        for attempt in (1, 2):
            headers = {**self._headers(), "WM_SEC.ACCESS_TOKEN": await self._access_token()}
            kwargs = dict(body()) if body is not None else {}
            status, text, resp_headers = await self._request(
                method, url, what, paid=paid and attempt == 1, headers=headers, **kwargs)
            if status != 401 or attempt == 2:
                return status, text, resp_headers
            self._token = None
        raise AssertionError("unreachable")

    async def send_json(
        self, method: str, url: str | URL, what: str, body: Callable[[], Mapping[str, Any]] | None = None,
        *, paid: bool = False,
    ) -> JSON:
        status, text, headers = await self.send(method, url, what, body, paid=paid)
        if status != 200:
            raise error_for_status(status, text, headers, what, time.time())
        return _object(text, what)


class WalmartOutbound:
    """Inventory pushes (single PUTs or one bulk feed) and seller cancellations for Walmart."""

    channel = "walmart"

    def __init__(
        self, api: WalmartApi, *, bulk_min_skus: int = 20, feed_timeout_s: float = 30.0,
        feed_poll_s: float = 0.1, feed_poll_max_s: float = 2.0,
        other_tracking_url: str | None = None,
    ) -> None:
        self.api = api
        self.other_tracking_url = other_tracking_url  # e.g. "https://track.example/{tracking_number}"
        self.bulk_min_skus = bulk_min_skus
        # every call draws on its operation's budget in api.budgets (connectors.ratelimit:
        # shared through Redis by every worker when one is configured), so pushes wait instead
        # of earning 429s
        self.feed_timeout_s = feed_timeout_s
        self.feed_poll_s, self.feed_poll_max_s = feed_poll_s, feed_poll_max_s

    @classmethod
    def from_settings(cls, settings: WalmartSettings) -> WalmartOutbound | None:
        if settings.walmart_base_url is None:
            return None
        api = WalmartApi(str(settings.walmart_base_url), settings.walmart_client_id,
                         settings.walmart_client_secret.get_secret_value(),
                         svc_name=settings.walmart_svc_name, budgets=walmart_budgets(settings))
        return cls(api, bulk_min_skus=settings.walmart_bulk_min_skus)

    def _url(self, path: str, **query: str) -> URL:
        encoded = urlencode(query, quote_via=quote) if query else ""
        return URL(f"{self.api.base_url}{path}" + (f"?{encoded}" if encoded else ""), encoded=True)

    # --- inventory -------------------------------------------------------------------------------

    async def push_inventory(self, updates: Sequence[QuantityUpdate]) -> PushReport:
        if not updates:
            return PushReport(applied=[], mechanism="inventory")
        if len(updates) < self.bulk_min_skus or not await self.api.budgets.take_if_free("feeds"):
            return await self._put_each(updates)  # few SKUs, or the feed budget is spent
        return await self._feed(updates)

    async def _put_each(self, updates: Sequence[QuantityUpdate]) -> PushReport:
        applied: list[str] = []
        failed: dict[str, str] = {}
        for update in updates:
            what = f"update inventory of {update.sku}"
            body = _json_body(_inventory_item(update))
            status, text, headers = await self.api.send(
                "PUT", self._url("/v3/inventory", sku=update.sku), what, body
            )
            if status == 200:
                applied.append(update.sku)
            elif status in PER_SKU_FAILURES:
                failed[update.sku] = str(error_for_status(status, text, headers, what, time.time()))
            else:
                raise error_for_status(status, text, headers, what, time.time())
        return PushReport(applied=applied, failed=failed, mechanism="inventory")

    async def _feed(self, updates: Sequence[QuantityUpdate]) -> PushReport:
        document = json.dumps({"InventoryHeader": {"version": "1.4"},
                               "Inventory": [_inventory_item(u) for u in updates]}).encode()

        def multipart() -> Mapping[str, Any]:
            form = aiohttp.FormData()
            form.add_field("file", document, filename="inventory.json", content_type="application/json")
            return {"data": form}

        answer = await self.api.send_json("POST", self._url("/v3/feeds", feedType="inventory"),
                                          "inventory feed", multipart, paid=True)
        feed_id = answer.get("feedId")
        if not isinstance(feed_id, str) or not feed_id:
            raise DecodeError("Walmart inventory feed: answer has no feedId")
        statuses = await self._feed_result(feed_id)
        return _feed_report(feed_id, [u.sku for u in updates], *statuses)

    async def _feed_status(self, feed_id: str, offset: int) -> JSON:
        url = self._url(f"/v3/feeds/{quote(feed_id, safe='')}", includeDetails="true",
                        offset=str(offset), limit=str(FEED_PAGE))
        return await self.api.send_json("GET", url, f"feed {feed_id} status")

    async def _feed_result(self, feed_id: str) -> tuple[JSON, list[JSON]]:
        """The final status of the feed and every item's ingestion status."""
        first = await self._wait_for_feed(feed_id)
        items = list(_item_statuses(first))
        received = int(first.get("itemsReceived") or 0)
        while items and len(items) < received:
            page = _item_statuses(await self._feed_status(feed_id, len(items)))
            if not page:
                break
            items.extend(page)
        return first, items

    async def _wait_for_feed(self, feed_id: str) -> JSON:
        deadline = time.monotonic() + self.feed_timeout_s
        pause = self.feed_poll_s
        while True:
            try:
                status = await self._feed_status(feed_id, 0)
                if status.get("feedStatus") in FEED_DONE:
                    return status
                wait = pause
            except RateLimitedError as exc:
                wait = exc.retry_after if exc.retry_after is not None else pause
            left = deadline - time.monotonic()
            if left <= 0:
                raise RetryableError(f"Walmart feed {feed_id}: not processed within {self.feed_timeout_s} s")
            await asyncio.sleep(min(wait, left))
            pause = min(self.feed_poll_max_s, pause * 1.5)

    # --- cancellations ---------------------------------------------------------------------------

    async def cancel_lines(
        self, marketplace_order_id: str, lines: Sequence[LineUnits], *, whole_order: bool,
        reason: str,
    ) -> None:
        po = marketplace_order_id
        todo = _still_to_cancel(await self.api.get_order(po), lines, whole_order=whole_order)
        if not todo:
            return
        url = self._url(f"/v3/orders/{quote(po, safe='')}/cancel")
        body = _cancellation(todo)
        status, text, headers = await self.api.send("POST", url, f"cancel {po}", _json_body(body))
        if status == 200:
            return
        error = error_for_status(status, text, headers, f"cancel {po}", time.time())
        if status == 400 and not _still_to_cancel(await self.api.get_order(po), lines,
                                                  whole_order=whole_order):
            return  # cancelled meanwhile (a concurrent repeat): what we wanted holds
        raise error

    # --- shipments ------------------------------------------------------------------------------

    async def confirm_shipment(self, marketplace_order_id: str, shipment: Shipment) -> None:
        po = marketplace_order_id
        carrier = self._carrier_name(shipment)
        order = await self.api.get_order(po)
        todo = _still_to_ship(order, shipment)
        if not todo:
            return
        body = _shipment_body(order, shipment, todo, carrier)
        url = self._url(f"/v3/orders/{quote(po, safe='')}/shipping")
        what = f"ship {po} (shipment {shipment.shipment_id})"
        status, text, headers = await self.api.send("POST", url, what, _json_body(body))
        if status == 200:
            return
        error = error_for_status(status, text, headers, what, time.time())
        if status == 400 and not _still_to_ship(await self.api.get_order(po), shipment):
            return  # shipped meanwhile (a concurrent repeat)
        raise error

    def _carrier_name(self, shipment: Shipment) -> JSON:
        """``carrierName`` (and for OTHER the ``trackingURL``) of the shipment's carrier."""
        key = shipment.carrier.upper()
        if key not in WALMART_CARRIERS:
            raise PermanentError(f"{shipment.carrier!r} is not a canonical carrier "
                                 f"({', '.join(WALMART_CARRIERS)})")
        code = WALMART_CARRIERS[key]
        if code is not None:
            return {"carrierName": {"carrier": code}}
        if self.other_tracking_url is None:
            raise PermanentError(f"shipment {shipment.shipment_id}: Walmart needs a tracking URL for "
                                 "a carrier outside its list, and none is configured")
        url = self.other_tracking_url.format(tracking_number=quote(shipment.tracking_number, safe=""))
        return {"carrierName": {"otherCarrier": "Other"}, "trackingURL": url}

    # --- refunds --------------------------------------------------------------------------------

    async def refund(self, marketplace_order_id: str, refund: Refund) -> None:
        po = marketplace_order_id
        marker = REFUND_MARKER.format(refund.refund_id)
        order = await self.api.get_order(po)
        if _has_refund(order, marker) or _decimal(refund.amount, refund.refund_id) == 0:
            return
        body = _refund_body(order, refund, marker)
        url = self._url(f"/v3/orders/{quote(po, safe='')}/refund")
        what = f"refund {refund.refund_id} of {po}"
        status, text, headers = await self.api.send("POST", url, what, _json_body(body))
        if status == 200:
            return
        error = error_for_status(status, text, headers, what, time.time())
        if status == 400 and _has_refund(await self.api.get_order(po), marker):
            return
        raise error

    async def close(self) -> None:
        await self.api.close()


# --- pure helpers -----------------------------------------------------------------------------


def _json_body(payload: JSON) -> Callable[[], Mapping[str, Any]]:
    return lambda: {"json": payload}


def _inventory_item(update: QuantityUpdate) -> JSON:
    return {"sku": update.sku, "quantity": {"unit": "EACH", "amount": update.quantity}}


def _item_statuses(status: JSON) -> list[JSON]:
    details = status.get("itemDetails") or {}
    items = details.get("itemIngestionStatus") if isinstance(details, dict) else None
    return [i for i in items if isinstance(i, dict)] if isinstance(items, list) else []


def _errors_text(holder: JSON) -> str:
    errors = (holder.get("ingestionErrors") or {}).get("ingestionError") or []
    return "; ".join(f"{e.get('type')} {e.get('code')}: {e.get('description', '')}" for e in errors)


def _feed_report(feed_id: str, skus: list[str], status: JSON, items: list[JSON]) -> PushReport:
    if status.get("feedStatus") == "ERROR":
        errors = (status.get("ingestionErrors") or {}).get("ingestionError") or []
        if not errors or any(e.get("type") != "DATA_ERROR" for e in errors):
            raise RetryableError(f"Walmart feed {feed_id}: ERROR {_errors_text(status)}")
        reason = f"feed {feed_id} in ERROR: {_errors_text(status)}"
        return PushReport(applied=[], failed=dict.fromkeys(skus, reason),
                          mechanism="inventory-feed", reference=feed_id)
    by_sku = {str(i.get("sku")): i for i in items}
    transient = [s for s, i in by_sku.items() if i.get("ingestionStatus") in TRANSIENT]
    if transient:
        raise RetryableError(f"Walmart feed {feed_id}: transient errors for {', '.join(transient[:10])}")
    applied = [s for s in skus if by_sku.get(s, {}).get("ingestionStatus") == "SUCCESS"]
    failed = {
        s: (f"{by_sku[s].get('ingestionStatus')} {_errors_text(by_sku[s])}" if s in by_sku
            else f"not in the report of feed {feed_id}")
        for s in skus if s not in applied
    }
    return PushReport(applied=applied, failed=failed, mechanism="inventory-feed", reference=feed_id)


def _units(entry: Any) -> int:
    try:
        return int(Decimal(str(entry["statusQuantity"]["amount"])))
    except (KeyError, TypeError, InvalidOperation):
        raise DecodeError(f"Walmart order line status without a quantity: {entry!r}") from None


def _line_units(line: JSON) -> tuple[int, int]:
    """(units still cancellable, units already Cancelled) of one order line."""
    entries = (line.get("orderLineStatuses") or {}).get("orderLineStatus") or []
    open_units = sum(_units(e) for e in entries if e.get("status") in CANCELLABLE)
    cancelled = sum(_units(e) for e in entries if e.get("status") == "Cancelled")
    return open_units, cancelled


def _still_to_cancel(order: JSON, lines: Sequence[LineUnits], *, whole_order: bool) -> dict[str, int]:
    """lineNumber -> units to cancel now so that the request holds."""
    by_number = {str(ln.get("lineNumber")): ln for ln in (order.get("orderLines") or {}).get("orderLine", [])}
    if whole_order:
        todo = {n: _line_units(ln)[0] for n, ln in by_number.items()}
        return {n: q for n, q in todo.items() if q > 0}
    wanted: dict[str, int] = {}
    for line in lines:
        if line.line_id not in by_number:
            raise PermanentError(f"Walmart order {order.get('purchaseOrderId')}: no line {line.line_id}")
        wanted[line.line_id] = max(wanted.get(line.line_id, 0), line.quantity)
    todo = {}
    for number, quantity in wanted.items():
        open_units, cancelled = _line_units(by_number[number])
        missing = quantity - cancelled
        if missing > open_units:
            raise PermanentError(f"Walmart order {order.get('purchaseOrderId')} line {number}: "
                                 f"{missing} unit(s) to cancel, only {open_units} not yet shipped")
        if missing > 0:
            todo[number] = missing
    return todo


def _cancellation(todo: Mapping[str, int]) -> JSON:
    lines = [
        {"lineNumber": number, "orderLineStatuses": {"orderLineStatus": [{
            "status": "Cancelled", "cancellationReason": CANCEL_REASON,
            "statusQuantity": {"unitOfMeasurement": "EACH", "amount": str(quantity)},
        }]}}
        for number, quantity in todo.items()
    ]
    return {"orderCancellation": {"orderLines": {"orderLine": lines}}}


def _order_lines(order: JSON) -> dict[str, JSON]:
    return {str(ln.get("lineNumber")): ln for ln in (order.get("orderLines") or {}).get("orderLine", [])}


def _shipped_with(line: JSON, tracking_number: str) -> int:
    """Units of the line shipped (or since delivered / refunded) under ``tracking_number``."""
    entries = (line.get("orderLineStatuses") or {}).get("orderLineStatus") or []
    return sum(_units(e) for e in entries if e.get("status") in SHIPPED_STATUSES
               and (e.get("trackingInfo") or {}).get("trackingNumber") == tracking_number)


def _still_to_ship(order: JSON, shipment: Shipment) -> dict[str, int]:
    """lineNumber -> units of this shipment Walmart does not have as shipped yet."""
    by_number = _order_lines(order)
    wanted: dict[str, int] = {}
    for line in shipment.lines:
        if line.line_id not in by_number:
            raise PermanentError(f"Walmart order {order.get('purchaseOrderId')}: no line {line.line_id}")
        wanted[line.line_id] = wanted.get(line.line_id, 0) + line.quantity
    todo = {}
    for number, quantity in wanted.items():
        missing = quantity - _shipped_with(by_number[number], shipment.tracking_number)
        open_units = _line_units(by_number[number])[0]
        if missing > open_units:
            raise PermanentError(f"Walmart order {order.get('purchaseOrderId')} line {number}: "
                                 f"{missing} unit(s) to ship, only {open_units} open")
        if missing > 0:
            todo[number] = missing
    return todo


def _epoch_ms(iso: str) -> int:
    try:
        parsed = datetime.fromisoformat(iso.replace("Z", "+00:00"))
    except ValueError:
        raise PermanentError(f"shipped_at {iso!r} is not an ISO 8601 time") from None
    if parsed.tzinfo is None:
        raise PermanentError(f"shipped_at {iso!r} has no timezone")
    return int(parsed.timestamp() * 1000)


def _shipment_body(order: JSON, shipment: Shipment, todo: Mapping[str, int], carrier: JSON) -> JSON:
    method = (order.get("shippingInfo") or {}).get("methodCode")
    tracking = {"shipDateTime": _epoch_ms(shipment.shipped_at), **carrier,
                "methodCode": method if method in METHOD_CODES else "Standard",
                "trackingNumber": shipment.tracking_number}
    lines = [
        {"lineNumber": number, "sellerOrderId": shipment.order_key[:30],
         "orderLineStatuses": {"orderLineStatus": [{
             "status": "Shipped", "trackingInfo": tracking,
             "statusQuantity": {"unitOfMeasurement": "EACH", "amount": str(quantity)},
         }]}}
        for number, quantity in todo.items()
    ]
    return {"orderShipment": {"orderLines": {"orderLine": lines}}}


def _has_refund(order: JSON, marker: str) -> bool:
    return any(marker in str((ln.get("refund") or {}).get("refundComments") or "")
               for ln in _order_lines(order).values())


def _decimal(amount: str, refund_id: str) -> Decimal:
    try:
        value = Decimal(amount)
    except InvalidOperation:
        raise PermanentError(f"refund {refund_id}: amount {amount!r} is not a number") from None
    if not value.is_finite() or value < 0:
        raise PermanentError(f"refund {refund_id}: amount {amount!r} must be >= 0")
    return value


def _unit_price(line: JSON) -> Decimal:
    charges = (line.get("charges") or {}).get("charge") or []
    product = sum((Decimal(str(c["chargeAmount"]["amount"])) for c in charges
                   if c.get("chargeType") == "PRODUCT"), Decimal(0))
    quantity = int(Decimal(str((line.get("orderLineQuantity") or {}).get("amount") or 1)))
    return product / max(1, quantity)


def _refund_shares(order: JSON, refund: Refund) -> dict[str, Decimal]:
    """lineNumber -> its share of the refund amount (by unit price x refunded units)."""
    by_number = _order_lines(order)
    weights: dict[str, Decimal] = {}
    for line in refund.lines:
        if line.line_id not in by_number:
            raise PermanentError(f"Walmart order {order.get('purchaseOrderId')}: no line {line.line_id}")
        weight = _unit_price(by_number[line.line_id]) * line.quantity
        weights[line.line_id] = weights.get(line.line_id, Decimal(0)) + weight
    if not weights:
        raise PermanentError(f"refund {refund.refund_id}: Walmart refunds order lines, and it has none")
    amount, total = _decimal(refund.amount, refund.refund_id), sum(weights.values(), Decimal(0))
    numbers = list(weights)
    shares = {n: (amount * weights[n] / total if total else amount / len(numbers)).quantize(
        CENT, ROUND_HALF_UP) for n in numbers[:-1]}
    shares[numbers[-1]] = amount - sum(shares.values(), Decimal(0))
    return shares


def _refund_body(order: JSON, refund: Refund, marker: str) -> JSON:
    reason = refund.reason if refund.reason in REFUND_REASONS else (
        "Customer returned item" if refund.restock else "General adjustment")
    lines = [
        {"lineNumber": number, "isFullRefund": False, "refunds": {"refund": [{
            "refundComments": f"{refund.reason} [{marker}]",
            "refundCharges": {"refundCharge": [{"refundReason": reason, "charge": {
                "chargeType": "PRODUCT", "chargeName": "ItemPrice",
                "chargeAmount": {"currency": refund.currency, "amount": float(-share)},
            }}]},
        }]}}
        for number, share in _refund_shares(order, refund).items() if share > 0
    ]
    return {"orderRefund": {"purchaseOrderId": str(order.get("purchaseOrderId")),
                            "orderLines": {"orderLine": lines}}}


def _object(text: str, what: str) -> JSON:
    try:
        payload = json.loads(text)
    except json.JSONDecodeError:
        raise DecodeError(f"Walmart {what}: answer is not JSON", body=text[:4096]) from None
    if not isinstance(payload, dict):
        raise DecodeError(f"Walmart {what}: answer is not a JSON object", body=text[:4096])
    return payload


__all__ = ["WALMART_CARRIERS", "WalmartApi", "WalmartOutbound"]
