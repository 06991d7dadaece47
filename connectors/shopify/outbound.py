"""Shopify Admin REST as a ChannelOutbound: inventory levels, seller cancellations, shipment
confirmations and refunds out.

Inventory: Shopify REST has no bulk inventory call, so a push is one
``POST /admin/api/{v}/inventory_levels/set.json`` (``location_id``, ``inventory_item_id``,
``available``) per SKU. SKUs resolve to inventory items through ``products.json`` (every page,
following ``Link: <...>; rel="next"``), cached; an SKU missing from the cache reloads it once per
push, and an SKU the shop still does not have is reported in ``PushReport.failed``, as is a 422 on
its level. The location is ``shopify_location_id`` or the first active one of ``locations.json``.

Pacing: Shopify's REST call limit is a leaky bucket per store (40 calls leaking 2/s; Plus 80 and
4/s) reported after every call in ``X-Shopify-Shop-Api-Call-Limit: used/size``. Calls draw on
one budget, ``shopify:admin`` in connectors.ratelimit.Budgets (GCRA at the leak rate with the
bucket less ``SHOPIFY_HEADROOM`` as burst, shared by every worker through Redis), which is exactly
a leaky bucket; the header's ``used`` is adopted when it is fuller than ours (other tools of the
shop call too) and a different ``size`` rescales the plan. A 429 pauses the budget for
``Retry-After`` (every worker) and the call is tried again, at most ``max_attempts`` times in
all; then it is a RateLimitedError.

Cancellations: a whole order is ``POST orders/{id}/cancel.json`` with ``reason: inventory``; the
422 "Order has already been cancelled" is success. Part of an order is a refund with
``restock_type: cancel`` per line (``POST orders/{id}/refunds.json``). A line's ``quantity`` is read
as the units of that line that must end up cancelled: the refunds already on the order are read
first and only the difference is asked for, so repeating a cancellation changes nothing.

Shipments: ``POST orders/{id}/fulfillments.json`` (REST 2021-10 shape) with the shipment's lines
(``line_id`` is the Shopify line item id), its tracking number and ``tracking_company`` from
``SHOPIFY_CARRIERS`` (canonical carrier -> Shopify's company name; a carrier not in the table is a
PermanentError), at the shop's location, ``notify_customer: true``. Shopify fulfillments have no
field of ours to carry the shipment id, so the tracking number is the idempotency key a real
integration can see: the order's fulfillments are read first and a successful one that already
carries the shipment's tracking number means it was confirmed (a shipment without a tracking
number matches a fulfillment without one for exactly the same line quantities). A 422 after which
the fulfillment is there (a concurrent repeat) is success too; any other 422 (e.g. more units
than are left to fulfil) is a PermanentError.

Refunds: ``POST orders/{id}/refunds.json`` with ``refund_line_items`` (``restock_type`` ``return``
at the shop's location when ``refund.restock``, else ``no_restock``), one transaction ``{"kind":
"refund", "amount", "gateway"}`` for ``refund.amount`` (the order's gateway; none for a zero
amount) and the ``note`` "<reason> [retail-sync refund <refund_id>]". Idempotent on refund_id:
the order's refunds are read first and one whose note carries that marker means done. We send
no ``parent_id`` (the capture transaction); Shopify accepts the gateway instead for a single
captured payment (not checked against a real shop). A refund in another currency than the
order's is a PermanentError.

Errors at the edge: 429 -> RateLimitedError (``Retry-After``), 5xx, timeouts and connection
failures -> RetryableError, other 4xx -> PermanentError, a 2xx that is not the JSON promised ->
DecodeError.

Long module: inventory, cancellations, fulfilments, refunds and the read-only order list share one
Admin API client's call-limit pacing and error mapping.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from decimal import Decimal, InvalidOperation
from typing import Any

import aiohttp

from retail_sync.connectors.contracts import PushReport, QuantityUpdate, Refund, Shipment
from retail_sync.connectors.errors import (
    DecodeError,
    PermanentError,
    RateLimitedError,
    RetryableError,
    SyncError,
    parse_retry_after,
)
from retail_sync.connectors.ratelimit import Budgets, budgets_for
from retail_sync.connectors.retry import while_result
from retail_sync.connectors.shopify.plan import SHOPIFY_HEADROOM, SHOPIFY_PLANS
from retail_sync.connectors.shopify.settings import ShopifySettings
from retail_sync.streams.models import LineUnits

JSON = dict[str, Any]
ADMIN = "admin"  # the one budget of the Admin REST API (per store)
CALL_LIMIT_HEADER = "X-Shopify-Shop-Api-Call-Limit"
ALREADY_CANCELLED = "already been cancelled"
MAX_ERROR_BODY = 4 * 1024
#: canonical carrier (connectors.contracts.Shipment) -> Shopify ``tracking_company``
SHOPIFY_CARRIERS: dict[str, str] = {
    "UPS": "UPS",
    "USPS": "USPS",
    "FEDEX": "FedEx",
    "DHL": "DHL Express",
    "OTHER": "Other",
}
REFUND_MARKER = "retail-sync refund {}"


def error_for_status(status: int, body: str, headers: Mapping[str, str], what: str) -> SyncError:
    """The sync error an unsuccessful Shopify answer means."""
    clipped = body[:MAX_ERROR_BODY]
    message = f"Shopify {what}: HTTP {status} {shopify_errors(clipped)}"
    retry_after = parse_retry_after(headers.get("Retry-After"))
    if status == 429:
        return RateLimitedError(message, status=status, body=clipped, retry_after=retry_after)
    if status >= 500:
        return RetryableError(message, status=status, body=clipped, retry_after=retry_after)
    return PermanentError(message, status=status, body=clipped)


def shopify_errors(body: str) -> str:
    """The text of Shopify's ``{"errors": ...}`` / ``{"error": ...}`` body (any of its shapes)."""
    try:
        payload = json.loads(body)
    except json.JSONDecodeError:
        return body[:200]
    errors = payload.get("errors", payload.get("error")) if isinstance(payload, dict) else payload
    if isinstance(errors, dict):
        return "; ".join(f"{k} {', '.join(map(str, v)) if isinstance(v, list) else v}"
                         for k, v in errors.items())
    if isinstance(errors, list):
        return "; ".join(map(str, errors))
    return str(errors if errors is not None else body[:200])


def parse_call_limit(value: str | None) -> tuple[int, int] | None:
    """``"32/40"`` -> (32, 40); None if absent or odd."""
    used, _, size = (value or "").partition("/")
    try:
        parsed = int(used), int(size)
    except ValueError:
        return None
    return parsed if parsed[1] > 0 else None


class ShopifyOutbound:
    """Inventory levels, seller cancellations, fulfillments and refunds through Shopify Admin REST
    (one aiohttp session)."""

    channel = "shopify"

    def __init__(
        self, base_url: str, access_token: str, *, api_version: str = "2024-04",
        location_id: int | None = None, timeout_s: float = 10.0, leak_per_s: float | None = None,
        max_attempts: int = 3, page_limit: int = 250, budgets: Budgets | None = None,
    ) -> None:
        self.api = f"{base_url.rstrip('/')}/admin/api/{api_version}"
        self._token = access_token
        self._location_id = location_id
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._session: aiohttp.ClientSession | None = None
        if budgets is None:
            plans = dict(SHOPIFY_PLANS)
            if leak_per_s is not None:
                plans[ADMIN] = (leak_per_s, plans[ADMIN][1])
            budgets = Budgets("shopify", plans)
        self.budgets = budgets
        self.max_attempts = max(1, max_attempts)
        self.page_limit = page_limit
        self._items: dict[str, int] = {}  # sku -> inventory_item_id
        self.calls = 0
        self.throttled = 0

    @classmethod
    def from_settings(cls, settings: ShopifySettings) -> ShopifyOutbound | None:
        if settings.shopify_admin_base_url is None:
            return None
        return cls(str(settings.shopify_admin_base_url),
                   settings.shopify_access_token.get_secret_value(),
                   api_version=settings.shopify_api_version,
                   location_id=settings.shopify_location_id,
                   budgets=budgets_for(settings, "shopify", SHOPIFY_PLANS))

    # --- HTTP ------------------------------------------------------------------------------------

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        return self._session

    async def _exchange(self, method: str, url: str, what: str, body: JSON | None) -> tuple[int, str, Any]:
        headers = {"X-Shopify-Access-Token": self._token, "Accept": "application/json"}
        await self.budgets.acquire(ADMIN)
        self.calls += 1
        try:
            async with self._client().request(method, url, json=body, headers=headers) as resp:
                await self._observe(resp.status, resp.headers)
                return resp.status, await resp.text(errors="replace"), resp
        except TimeoutError as exc:
            raise RetryableError(f"Shopify {what}: timed out ({exc!r})") from exc
        except aiohttp.ClientError as exc:
            raise RetryableError(f"Shopify {what}: {type(exc).__name__}: {exc}") from exc

    async def _observe(self, status: int, headers: Any) -> None:
        """Follow the bucket Shopify reports (fuller than ours, or another size) and its 429s."""
        parsed = parse_call_limit(headers.get(CALL_LIMIT_HEADER))
        if parsed is not None:
            used, size = parsed
            rate, burst = self.budgets.plans[ADMIN]
            planned_size = burst + SHOPIFY_HEADROOM
            # the bucket's size sets the leak (a Plus store: 80 calls leaking twice as fast);
            # reported on every answer (cheap: repeats are not re-sent), so a bucket that
            # shrank and grew back is followed both ways
            await self.budgets.reported_rate(ADMIN, rate * size / planned_size,
                                             max(1, size - SHOPIFY_HEADROOM))
            await self.budgets.reported_level(ADMIN, used)
        if status == 429:
            await self.budgets.throttled(ADMIN, parse_retry_after(headers.get("Retry-After")) or 1.0)

    async def _call(self, method: str, url: str, what: str, body: JSON | None = None) -> tuple[int, str, Any]:
        """One call, paced; a 429 waits ``Retry-After`` and tries again (``max_attempts`` in all).
        Returns status, text and the response (for its headers and links)."""
        async def once() -> tuple[int, str, Any]:
            answer = await self._exchange(method, url, what, body)
            if answer[0] == 429:
                self.throttled += 1  # the budget is paused (_observe); the next try waits for it
            return answer

        status, text, resp = await while_result(once, lambda answer: answer[0] == 429,
                                                attempts=self.max_attempts)
        if status == 429:
            raise error_for_status(status, text, resp.headers, what)
        return status, text, resp

    async def _json(self, method: str, path: str, what: str, body: JSON | None = None) -> JSON:
        status, text, resp = await self._call(method, f"{self.api}/{path}", what, body)
        if not 200 <= status < 300:
            raise error_for_status(status, text, resp.headers, what)
        return _object(text, what)

    # --- catalogue and location ----------------------------------------------------------------

    async def _load_items(self) -> None:
        """Every variant's sku -> inventory_item_id, over every page of products.json."""
        items: dict[str, int] = {}
        url: str | None = f"{self.api}/products.json?limit={self.page_limit}"
        while url is not None:
            status, text, resp = await self._call("GET", url, "products")
            if status != 200:
                raise error_for_status(status, text, resp.headers, "products")
            for product in _object(text, "products").get("products", []):
                for variant in product.get("variants", []):
                    if variant.get("sku") and variant.get("inventory_item_id"):
                        items[str(variant["sku"])] = int(variant["inventory_item_id"])
            following = resp.links.get("next")
            url = str(following["url"]) if following else None
        self._items = items

    async def location_id(self) -> int:
        if self._location_id is None:
            locations = (await self._json("GET", "locations.json", "locations")).get("locations", [])
            active = [loc for loc in locations if loc.get("active", True)]
            if not active:
                raise PermanentError("Shopify locations: the shop has no active location")
            self._location_id = int(active[0]["id"])
        return self._location_id

    async def _resolve(self, skus: Sequence[str]) -> dict[str, int]:
        if any(sku not in self._items for sku in skus):
            await self._load_items()  # new or first: reload once for this push
        return {sku: self._items[sku] for sku in skus if sku in self._items}

    # --- ChannelOutbound -------------------------------------------------------------------------

    async def push_inventory(self, updates: Sequence[QuantityUpdate]) -> PushReport:
        items = await self._resolve([u.sku for u in updates])
        location = await self.location_id() if items else 0
        applied: list[str] = []
        failed: dict[str, str] = {
            u.sku: f"Shopify has no product variant with SKU {u.sku}" for u in updates if u.sku not in items
        }
        for update in (u for u in updates if u.sku in items):
            body = {"location_id": location, "inventory_item_id": items[update.sku],
                    "available": update.quantity}
            what = f"set inventory level of {update.sku}"
            status, text, resp = await self._call("POST", f"{self.api}/inventory_levels/set.json", what, body)
            if 200 <= status < 300:
                applied.append(update.sku)
            elif status == 422:
                failed[update.sku] = f"HTTP 422 {shopify_errors(text)}"
            else:
                raise error_for_status(status, text, resp.headers, what)
        return PushReport(applied=applied, failed=failed, mechanism="inventory_levels/set")

    async def cancel_lines(
        self, marketplace_order_id: str, lines: Sequence[LineUnits], *, whole_order: bool,
        reason: str,
    ) -> None:
        if whole_order:
            await self._cancel_order(marketplace_order_id)
        else:
            await self._cancel_units(marketplace_order_id, lines, reason)

    async def _cancel_order(self, order_id: str) -> None:
        what = f"cancel order {order_id}"
        body = {"reason": "inventory", "email": False, "restock": False}
        status, text, resp = await self._call("POST", f"{self.api}/orders/{order_id}/cancel.json", what, body)
        if 200 <= status < 300 or (status == 422 and ALREADY_CANCELLED in text):
            return
        raise error_for_status(status, text, resp.headers, what)

    async def _cancel_units(self, order_id: str, lines: Sequence[LineUnits], reason: str) -> None:
        refunds = await self._json("GET", f"orders/{order_id}/refunds.json", f"refunds of {order_id}")
        done = _refunded(refunds.get("refunds", []))
        wanted: dict[int, int] = {}
        for line in lines:
            line_item_id = _line_item_id(line, order_id)
            wanted[line_item_id] = max(wanted.get(line_item_id, 0), line.quantity)
        items = [
            {"line_item_id": line_id, "quantity": qty - done.get(line_id, 0), "restock_type": "cancel"}
            for line_id, qty in wanted.items() if qty > done.get(line_id, 0)
        ]
        if items:
            body = {"refund": {"note": reason, "notify": False, "refund_line_items": items}}
            await self._json("POST", f"orders/{order_id}/refunds.json", f"refund lines of {order_id}", body)

    # --- shipments ----------------------------------------------------------------------------

    async def confirm_shipment(self, marketplace_order_id: str, shipment: Shipment) -> None:
        order_id = marketplace_order_id
        company = shopify_carrier(shipment.carrier)
        items = _shipment_items(shipment.lines, order_id)
        if await self._fulfilled(order_id, shipment.tracking_number, items):
            return
        body = {"fulfillment": {
            "location_id": await self.location_id(), "tracking_number": shipment.tracking_number or None,
            "tracking_company": company, "notify_customer": True,
            "line_items": [{"id": line_id, "quantity": qty} for line_id, qty in items.items()],
        }}
        what = f"fulfil order {order_id} (shipment {shipment.shipment_id})"
        status, text, resp = await self._call("POST", f"{self.api}/orders/{order_id}/fulfillments.json",
                                              what, body)
        if 200 <= status < 300:
            return
        if status == 422 and await self._fulfilled(order_id, shipment.tracking_number, items):
            return  # a concurrent repeat got there first
        raise error_for_status(status, text, resp.headers, what)

    async def _fulfilled(self, order_id: str, tracking_number: str, items: Mapping[int, int]) -> bool:
        """Whether a successful fulfillment of the order already carries this shipment."""
        what = f"fulfillments of {order_id}"
        answer = await self._json("GET", f"orders/{order_id}/fulfillments.json", what)
        fulfillments = answer.get("fulfillments")
        if not isinstance(fulfillments, list):
            raise DecodeError(f"Shopify fulfillments of {order_id}: answer has no fulfillments list")
        return any(_same_shipment(f, tracking_number, items) for f in fulfillments if isinstance(f, dict))

    # --- refunds -------------------------------------------------------------------------------

    async def refund(self, marketplace_order_id: str, refund: Refund) -> None:
        order_id = marketplace_order_id
        marker = REFUND_MARKER.format(refund.refund_id)
        if await self._refunded_already(order_id, marker):
            return
        order = (await self._json("GET", f"orders/{order_id}.json", f"order {order_id}")).get("order") or {}
        if str(order.get("currency", refund.currency)).upper() != refund.currency.upper():
            raise PermanentError(f"Shopify order {order_id} is in {order.get('currency')}, "
                                 f"refund {refund.refund_id} in {refund.currency}")
        body = {"refund": {
            "note": f"{refund.reason} [{marker}]", "notify": True,
            "refund_line_items": await self._refund_items(refund, order_id),
            "transactions": _refund_transactions(refund, order.get("gateway")),
        }}
        what = f"refund {refund.refund_id} of order {order_id}"
        url = f"{self.api}/orders/{order_id}/refunds.json"
        status, text, resp = await self._call("POST", url, what, body)
        if 200 <= status < 300:
            return
        if status == 422 and await self._refunded_already(order_id, marker):
            return
        raise error_for_status(status, text, resp.headers, what)

    async def _refund_items(self, refund: Refund, order_id: str) -> list[JSON]:
        kind = "return" if refund.restock else "no_restock"
        location = {"location_id": await self.location_id()} if refund.restock and refund.lines else {}
        return [{"line_item_id": line_id, "quantity": qty, "restock_type": kind, **location}
                for line_id, qty in _shipment_items(refund.lines, order_id).items()]

    async def _refunded_already(self, order_id: str, marker: str) -> bool:
        refunds = await self._json("GET", f"orders/{order_id}/refunds.json", f"refunds of {order_id}")
        listed = refunds.get("refunds")
        return isinstance(listed, list) and any(
            marker in str(r.get("note") or "") for r in listed if isinstance(r, dict))

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def shopify_carrier(carrier: str) -> str:
    """Shopify's ``tracking_company`` for a canonical carrier (PermanentError if not one)."""
    company = SHOPIFY_CARRIERS.get(carrier.upper())
    if company is None:
        raise PermanentError(f"{carrier!r} is not a canonical carrier ({', '.join(SHOPIFY_CARRIERS)})")
    return company


def _shipment_items(lines: Sequence[LineUnits], order_id: str) -> dict[int, int]:
    """line item id -> units, the shipment's (or refund's) lines added up per line."""
    items: dict[int, int] = {}
    for line in lines:
        line_id = _line_item_id(line, order_id)
        items[line_id] = items.get(line_id, 0) + line.quantity
    return items


def _same_shipment(fulfillment: JSON, tracking_number: str, items: Mapping[int, int]) -> bool:
    if fulfillment.get("status") not in ("success", "open", "pending"):
        return False  # cancelled / failure / error: it does not count
    numbers = {str(n) for n in fulfillment.get("tracking_numbers") or []}
    numbers |= {str(fulfillment["tracking_number"])} if fulfillment.get("tracking_number") else set()
    if tracking_number:
        return tracking_number in numbers
    shipped: dict[int, int] = {}
    for item in fulfillment.get("line_items") or []:
        shipped[int(item["id"])] = shipped.get(int(item["id"]), 0) + int(item["quantity"])
    return not numbers and shipped == dict(items)


def _refund_transactions(refund: Refund, gateway: Any) -> list[JSON]:
    try:
        amount = Decimal(refund.amount)
    except InvalidOperation:
        raise PermanentError(f"refund {refund.refund_id}: amount {refund.amount!r} is not a number") from None
    if amount < 0 or not amount.is_finite():
        raise PermanentError(f"refund {refund.refund_id}: amount {refund.amount!r} must be >= 0")
    if amount == 0:
        return []
    transaction: JSON = {"kind": "refund", "amount": str(amount)}
    if gateway:
        transaction["gateway"] = gateway
    return [transaction]


def _refunded(refunds: Any) -> dict[int, int]:
    """Units already refunded or cancelled per line item, over the order's refunds."""
    done: dict[int, int] = {}
    for refund in refunds if isinstance(refunds, list) else []:
        for item in refund.get("refund_line_items", []):
            line_id = int(item["line_item_id"])
            done[line_id] = done.get(line_id, 0) + int(item["quantity"])
    return done


def _line_item_id(line: LineUnits, order_id: str) -> int:
    try:
        return int(line.line_id)
    except ValueError:
        message = f"Shopify order {order_id}: line id {line.line_id!r} is not a line item id"
        raise PermanentError(message) from None


def _object(text: str, what: str) -> JSON:
    try:
        payload = json.loads(text)
    except json.JSONDecodeError:
        raise DecodeError(f"Shopify {what}: answer is not JSON", body=text[:MAX_ERROR_BODY]) from None
    if not isinstance(payload, dict):
        raise DecodeError(f"Shopify {what}: answer is not a JSON object", body=text[:MAX_ERROR_BODY])
    return payload


__all__ = [
    "SHOPIFY_CARRIERS",
    "ShopifyOutbound",
    "error_for_status",
    "parse_call_limit",
    "shopify_carrier",
    "shopify_errors",
]


# --- read-only: the shop's orders (reconciliation, retail_sync/reconcile.py) ---------------------


async def list_orders(outbound: ShopifyOutbound, *, created_at_min: str | None = None,
                      status: str = "any") -> list[JSON]:
    """Every order of the shop (``GET orders.json?status=any&limit=...&created_at_min=...``),
    paced by the same call-limit bucket as every other call. Pages follow ``Link: rel="next"``
    (page_info) when Shopify sends it, else ``since_id`` = the last id of a full page. Each order
    once. Read only: changes nothing in the shop."""
    from urllib.parse import urlencode

    params = {"status": status, "limit": str(outbound.page_limit)}
    if created_at_min is not None:
        params["created_at_min"] = created_at_min
    base = f"{outbound.api}/orders.json"
    url: str | None = f"{base}?{urlencode(params)}"
    orders: list[JSON] = []
    seen: set[Any] = set()
    while url is not None:
        code, text, resp = await outbound._call("GET", url, "list orders")
        if code != 200:
            raise error_for_status(code, text, resp.headers, "list orders")
        page = _object(text, "list orders").get("orders")
        if not isinstance(page, list) or not all(isinstance(o, dict) for o in page):
            raise DecodeError("Shopify list orders: orders is not a list of objects")
        fresh = [o for o in page if o.get("id") not in seen]
        seen.update(o.get("id") for o in fresh)
        orders += fresh
        following = resp.links.get("next")
        if following:
            url = str(following["url"])
        elif fresh and len(page) >= outbound.page_limit:
            last = max(int(o["id"]) for o in fresh)
            url = f"{base}?{urlencode({**params, 'since_id': str(last)})}"
        else:
            url = None
    return orders
