"""A Walmart-Marketplace-like server: Orders API v3 and the client-credentials token call.

What it mirrors (Walmart's OpenAPI documents in ../shared/specs/walmart, Aug 2023):

* ``POST /v3/token`` with ``Authorization: Basic base64(clientId:clientSecret)`` and the form
  ``grant_type=client_credentials`` answers ``{"access_token", "token_type": "Bearer",
  "expires_in": 900}``; the token goes in ``WM_SEC.ACCESS_TOKEN`` on every other call.
* Every call needs ``WM_QOS.CORRELATION_ID`` and ``WM_SVC.NAME``. Errors use Walmart's gateway
  body ``{"errors": {"error": [GatewayError]}}`` (code, field, description, info, severity, category).
* ``GET /v3/orders/released`` lists purchase orders that still have lines in ``Created``;
  ``GET /v3/orders`` lists all (filters ``status``, ``createdStartDate``, ``lastModifiedStartDate``).
  Both page with ``list.meta.nextCursor``: a query string the client appends to the same path.
  No match answers 404 ``CONTENT_NOT_FOUND.GMP_ORDER_API``, as Walmart does (knob: empty_list_404).
* ``POST /v3/orders/{purchaseOrderId}/acknowledge`` moves Created lines to Acknowledged and
  answers ``{"order": ...}``; ``GET /v3/orders/{purchaseOrderId}`` reads one order.
* Throttling is a token bucket per operation; every throttled operation answers with
  ``x-current-token-count`` and ``x-next-replenish-time`` (epoch ms) and 429 when empty.
* Inventory (us-mp-inventory): ``PUT /v3/inventory?sku=`` with ``{"sku", "quantity": {"unit":
  "EACH", "amount": N}}`` sets the listing at once and answers the same shape; ``GET
  /v3/inventory?sku=`` reads it. An SKU that is not one of the seller's items answers 404
  ``CONTENT_NOT_FOUND.GMP_INVENTORY_API``. ``POST /v3/feeds?feedType=inventory`` (multipart with a
  ``file`` part, as the spec, or the same JSON as the body) answers ``{"feedId"}``; the feed is
  RECEIVED, INPROGRESS after half of ``feed_processing_ms`` and PROCESSED (quantities applied, per
  item SUCCESS or DATA_ERROR with ``ingestionErrors``) once it has passed; a file that is not an
  inventory feed ends in ERROR. ``GET /v3/feeds/{feedId}?includeDetails=true&offset=&limit=`` (limit
  at most 50) reports it as the feeds spec's PartnerFeedResponse.
* ``POST /v3/orders/{purchaseOrderId}/cancel`` with ``orderCancellation.orderLines.orderLine[]``
  (``lineNumber``, ``orderLineStatuses.orderLineStatus[]`` with status Cancelled, a
  ``cancellationReason`` of the spec's enum and ``statusQuantity``) moves those units to a
  ``Cancelled`` status entry and answers ``{"order": ...}``. Asking for more units than are still
  Created/Acknowledged (e.g. repeating a cancellation) is a 400 ``INVALID_REQUEST_CONTENT``; a
  client that wants idempotency reads the order first.
* ``POST /v3/orders/{purchaseOrderId}/shipping`` with ``orderShipment.orderLines.orderLine[]``
  (``lineNumber``, ``sellerOrderId``, ``orderLineStatuses.orderLineStatus[]`` with status Shipped,
  ``statusQuantity`` and ``trackingInfo`` {``shipDateTime`` epoch ms, ``carrierName`` {``carrier``
  of the spec's enum, or ``otherCarrier`` with a ``trackingURL``}, ``methodCode`` of the spec's enum,
  ``trackingNumber``}) moves those units to a ``Shipped`` entry with that trackingInfo (a partly
  shipped line has several entries) and answers ``{"order": ...}``. More units than are still
  Created/Acknowledged is a 400 ``INVALID_REQUEST_CONTENT``.
* ``POST /v3/orders/{purchaseOrderId}/refund`` with ``orderRefund`` (``purchaseOrderId``,
  ``orderLines.orderLine[]`` with ``lineNumber``, ``isFullRefund``, ``refunds.refund[]`` with
  ``refundComments`` and ``refundCharges.refundCharge[]`` {``refundReason`` of the spec's enum,
  ``charge`` {chargeType PRODUCT|SHIPPING, chargeName, ``chargeAmount`` negative, ``tax``?}})
  records the refund on the line (``refund``, see simulators/walmart/orders.py; a fully refunded
  line's shipped units become ``Refund``) and answers ``{"order": ...}``. A line not shipped, or
  refunded beyond its charges and taxes, is a 400. Every refund gets a Walmart ``refundId``.
* Buyer cancellation (test-double side): ``cancel_by_buyer(po)`` / ``POST
  /_sim/orders/{po}/buyer-cancel`` cancels every open unit with ``CUSTOMER_REQUESTED_SELLER_TO_CANCEL``
  and bumps the order's last-modified time, so ``GET /v3/orders?lastModifiedStartDate=`` (and
  ``status=Cancelled``) lists it. ``GET /_sim/refunds`` lists every refund recorded.
* Rate limits, our guesses (Walmart publishes per-endpoint limits; recalled, not in the specs
  here): inventory PUT/GET 200 per minute (burst 200), bulk inventory feeds 10 per hour (burst
  10), feed status 20/s, cancel, shipping and refund 10/s each; all in the config (and scaled by
  ``time_scale``).

Test-double extras: deterministic orders from a seed, ``time_scale`` (bucket refill runs that many
times faster), runtime budget changes (``PUT /_sim/config``), counters (``GET /_sim/stats``); stock in
``listings`` (simulators/listings.py: ``GET /_sim/inventory``, mode ``listing_mode``); seller
cancellations (``GET /_sim/cancellations``). Every order ``generate_orders`` / ``create_order`` /
``POST /_sim/orders`` makes is a sale on the listings; a refused one (refuse mode, not enough
stock) is not stored, ``orders_refused`` counts it and ``generate_orders(n)`` simply returns fewer
than n (a buyer who saw "out of stock" left). ``add_order`` stores a given order as is (no sale).
Generated orders draw from config ``skus`` (default: the CATALOG) with 1..``max_quantity`` units.
The cursor's ``poIndex`` is the last purchase order of the page (a keyset), so acknowledging orders
while paging neither skips nor repeats any. Every simulated order is seller-fulfilled, so
``shipNodeType=WFSFulfilled`` or ``3PLFulfilled`` finds nothing.

Modules of this package: ``simulator`` (the server, its routes and throttling), ``orders`` (the
order book, generated orders, the list query), ``requests`` (request bodies read and checked).
"""

from __future__ import annotations

import asyncio
import base64
import copy
import secrets
import time
from collections import Counter
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

from aiohttp import web

from retail_sync.simulators.bucket import Bucket
from retail_sync.simulators.listings import Listings
from retail_sync.simulators.server import Handler, SimulatorServer
from retail_sync.simulators.walmart.orders import (
    CATALOG,
    ListQuery,
    OrderBook,
    WalmartOrderFactory,
    line_statuses,
    now_ms,
    parse_list_query,
    parse_walmart_date,
)
from retail_sync.simulators.walmart.requests import (
    cancel_requests,
    charge_amount,
    feed_file,
    feed_items,
    inventory_problem,
    refund_requests,
    ship_requests,
)

JSON = dict[str, Any]
_OPTIONAL_INTS = ("seed", "base_time_ms", "max_quantity")
_SKU_LISTS = ("skus", "extra_skus")
FEED_TYPES = ("inventory", "MP_INVENTORY")
FEED_DETAILS_LIMIT = 50


@dataclass
class WalmartSimConfig:
    """Credentials, throttling plans and order generation; all changeable via PUT /_sim/config."""

    client_id: str = "demo-client-id"
    client_secret: str = "demo-client-secret"  # noqa: S105 - demo credential of a simulator
    token_ttl_s: int = 900  # Walmart: 15 minutes (not scaled by time_scale)
    time_scale: float = 1.0  # bucket refill runs this many times faster than real time
    released_rate_per_s: float = 20.0
    released_burst: int = 20
    orders_rate_per_s: float = 20.0  # GET /v3/orders and GET /v3/orders/{po}
    orders_burst: int = 20
    acknowledge_rate_per_s: float = 10.0
    acknowledge_burst: int = 10
    empty_list_404: bool = True
    seller_id: str = "8"
    partner_id: str = "100009"
    seed: int | None = None
    base_time_ms: int | None = None  # orderDate of generated orders; None = wall clock
    order_interval_ms: int = 60_000
    max_lines: int = 3
    inventory_rate_per_s: float = 200 / 60  # PUT/GET /v3/inventory (guess: 200 per minute)
    inventory_burst: int = 200
    feeds_rate_per_s: float = 10 / 3600  # POST /v3/feeds (guess: 10 inventory feeds per hour)
    feeds_burst: int = 10
    feed_status_rate_per_s: float = 20.0  # GET /v3/feeds/{feedId}
    feed_status_burst: int = 20
    cancel_rate_per_s: float = 10.0  # POST /v3/orders/{po}/cancel
    cancel_burst: int = 10
    shipping_rate_per_s: float = 10.0  # POST /v3/orders/{po}/shipping
    shipping_burst: int = 10
    refund_rate_per_s: float = 10.0  # POST /v3/orders/{po}/refund
    refund_burst: int = 10
    feed_processing_ms: int = 200  # a feed is PROCESSED (and applied) this long after upload
    listing_mode: str = "refuse"  # "refuse" | "allow" (simulators/listings.py)
    skus: list[str] | None = None  # SKUs generated orders draw from; None: CATALOG
    extra_skus: list[str] = field(default_factory=list)  # more items of the seller (no orders)
    max_quantity: int | None = None  # units per generated line 1..max; None: mostly 1, up to 3

    def updated(self, changes: JSON) -> WalmartSimConfig:
        """A copy with ``changes`` applied (coerced to each field's type); unknown fields raise."""
        unknown = set(changes) - {f.name for f in fields(self)}
        if unknown:
            raise ValueError(f"unknown config fields: {sorted(unknown)}")
        merged = asdict(self)
        for name, value in changes.items():
            merged[name] = _coerce(name, merged[name], value)
        if merged["listing_mode"] not in ("refuse", "allow"):
            raise ValueError("listing_mode must be 'refuse' or 'allow'")
        return WalmartSimConfig(**merged)


def _coerce(name: str, current: Any, value: Any) -> Any:
    if name in _SKU_LISTS:
        if value is None and name == "skus":
            return None
        if not isinstance(value, list) or (not value and name == "skus"):
            raise ValueError(f"{name} must be a non-empty list of SKUs")
        return [str(v) for v in value]
    if name in _OPTIONAL_INTS:
        return None if value is None else int(value)
    if isinstance(current, bool):
        if not isinstance(value, bool):
            raise ValueError(f"{name} must be true or false")
        return value
    return type(current)(value)


def walmart_error(
    status: int, code: str, field: str, description: str, info: str, *, category: str = "DATA"
) -> web.Response:
    """A Walmart gateway error body (GatewayError in the orders spec)."""
    error = {
        "code": code,
        "field": field,
        "description": description,
        "info": info,
        "severity": "ERROR",
        "category": category,
        "causes": [],
        "errorIdentifiers": {},
    }
    return web.json_response({"errors": {"error": [error]}}, status=status)


def _unauthorized(info: str) -> web.Response:
    return walmart_error(401, "UNAUTHORIZED.GMP_GATEWAY_API", "UNAUTHORIZED", "Unauthorized", info)


def _bad_param(field: str, description: str, *, api: str = "GMP_ORDER_API") -> web.Response:
    info = "Request has invalid input param."
    return walmart_error(400, f"INVALID_REQUEST_PARAM.{api}", field, description, info)


def _not_found(description: str) -> web.Response:
    info = "Requested content could not be found."
    return walmart_error(
        404, "CONTENT_NOT_FOUND.GMP_ORDER_API", "data", description, info, category="REQUEST"
    )


class WalmartSimulator(SimulatorServer):
    """The Walmart Orders API as a real HTTP server; ``orders`` gives tests in-process access."""

    OPERATIONS = ("released", "orders", "acknowledge", "inventory", "feeds", "feed_status", "cancel",
                  "shipping", "refund")
    ROUTE_OPERATION = {"order": "orders", "inventory_get": "inventory", "inventory_put": "inventory"}

    def __init__(self, config: WalmartSimConfig | None = None, clock: Any = time.monotonic) -> None:
        self.config = config or WalmartSimConfig()
        self.clock = clock
        cfg = self.config
        factory = WalmartOrderFactory(cfg.seed, cfg.max_lines, cfg.skus, cfg.max_quantity)
        self.book = OrderBook(factory)
        self.orders = self.book.orders  # purchaseOrderId -> order, for in-process inspection
        self.listings = Listings(mode="allow" if cfg.listing_mode == "allow" else "refuse")
        self.cancellations: list[JSON] = []  # seller cancellations, oldest first
        self.buyer_cancellations: list[JSON] = []  # cancelled by the buyer, oldest first
        self.refunds: list[JSON] = []  # one record per refunded line, oldest first
        self.feeds: dict[str, JSON] = {}  # feedId -> feed record
        self._feed_timers: list[asyncio.TimerHandle] = []
        self._tokens: dict[str, float] = {}  # access token -> expiry (clock)
        self._buckets = {op: self._bucket(op) for op in self.OPERATIONS}
        self._stats: Counter[str] = Counter()

    # --- state -----------------------------------------------------------------------------

    def _bucket(self, operation: str) -> Bucket:
        rate, burst = self._plan(operation)
        return Bucket(rate, burst, time_scale=self.config.time_scale, clock=self.clock)

    def _plan(self, operation: str) -> tuple[float, int]:
        cfg = self.config
        return getattr(cfg, f"{operation}_rate_per_s"), getattr(cfg, f"{operation}_burst")

    def set_config(self, changes: JSON) -> WalmartSimConfig:
        cfg = self.config = self.config.updated(changes)
        for operation, bucket in self._buckets.items():
            bucket.reshape(*self._plan(operation), cfg.time_scale)
        factory = self.book.factory
        factory.skus, factory.max_quantity = cfg.skus, cfg.max_quantity
        factory.max_lines = max(1, cfg.max_lines)
        self.listings.mode = "allow" if cfg.listing_mode == "allow" else "refuse"
        return cfg

    def known_skus(self) -> set[str]:
        """The seller's items: the catalogue, configured SKUs and every SKU ever ordered."""
        ordered = {ln["item"]["sku"] for o in self.orders.values() for ln in o["orderLines"]["orderLine"]}
        configured = set(self.config.skus or ()) | set(self.config.extra_skus)
        return {s for s, _, _ in CATALOG} | configured | ordered

    def stats(self) -> JSON:
        released = sum(1 for order in self.orders.values() if "Created" in line_statuses(order))
        tokens = {op: bucket.count() for op, bucket in self._buckets.items()}
        return {
            **self._stats,
            "orders_total": len(self.orders),
            "orders_released": released,
            "bucket_tokens": tokens,
        }

    def generate_orders(self, n: int) -> list[JSON]:
        """``n`` buyers order (deterministic for a seed); the orders the listings accepted are
        stored in Created status and returned (copies). Refused ones are counted, not stored."""
        cfg = self.config
        return self.book.generate(n, cfg.base_time_ms, cfg.order_interval_ms, self._sell)

    def create_order(self, lines: list[tuple[str, int]]) -> JSON | None:
        """One order with exactly ``lines`` ``[(sku, quantity)]``; None when refused."""
        cfg = self.config
        made = self.book.generate(1, cfg.base_time_ms, cfg.order_interval_ms, self._sell, lines)
        return made[0] if made else None

    def _sell(self, order: JSON) -> bool:
        lines = [
            (ln["item"]["sku"], int(ln["orderLineQuantity"]["amount"]))
            for ln in order["orderLines"]["orderLine"]
        ]
        sold = self.listings.sell(lines)
        self._stats["orders_sold" if sold else "orders_refused"] += 1
        return sold

    def add_order(self, order: JSON) -> JSON:
        """Store an order as given (replacing one with the same purchaseOrderId)."""
        return self.book.add(order)

    def update_line_status(self, po: str, line_number: str, status: str) -> JSON:
        """Move one whole line to ``status`` (any of the spec's six); returns the order."""
        return self.book.set_line_status(po, line_number, status)

    def acknowledge(self, po: str) -> JSON:
        return self.book.acknowledge(po)

    def cancel_by_buyer(self, po: str) -> JSON:
        """The buyer cancels the order: every unit still Created/Acknowledged becomes Cancelled
        (``CUSTOMER_REQUESTED_SELLER_TO_CANCEL``) and the order's last-modified time moves, so the
        modified-orders list shows it. Returns a copy of the order. KeyError for an unknown order,
        ValueError when nothing is open any more."""
        applied = self.book.buyer_cancel(po)
        at = datetime.now(UTC).isoformat()
        for line, qty, reason in applied:
            self.buyer_cancellations.append({"order_id": po, "line_id": line["lineNumber"],
                                             "sku": line["item"]["sku"], "quantity": qty,
                                             "reason": reason, "at": at})
        return copy.deepcopy(self.orders[po])

    def expire_tokens(self) -> None:
        """Make every issued access token expire now (the next call answers 401)."""
        self._tokens = dict.fromkeys(self._tokens, float("-inf"))

    # --- server ----------------------------------------------------------------------------

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._gateway])
        app.router.add_post("/v3/token", self._token)
        app.router.add_get("/v3/orders/released", self._released, name="released")
        app.router.add_get("/v3/orders", self._all_orders, name="orders")
        app.router.add_get("/v3/orders/{purchaseOrderId}", self._get_order, name="order")
        app.router.add_post("/v3/orders/{purchaseOrderId}/acknowledge", self._ack, name="acknowledge")
        app.router.add_post("/v3/orders/{purchaseOrderId}/cancel", self._cancel, name="cancel")
        app.router.add_post("/v3/orders/{purchaseOrderId}/shipping", self._ship, name="shipping")
        app.router.add_post("/v3/orders/{purchaseOrderId}/refund", self._refund, name="refund")
        app.router.add_get("/v3/inventory", self._get_inventory, name="inventory_get")
        app.router.add_put("/v3/inventory", self._put_inventory, name="inventory_put")
        app.router.add_post("/v3/feeds", self._post_feed, name="feeds")
        app.router.add_get("/v3/feeds/{feedId}", self._feed_status, name="feed_status")
        app.router.add_get("/_sim/stats", self._sim_stats)
        app.router.add_put("/_sim/config", self._sim_config)
        app.router.add_post("/_sim/orders", self._sim_orders)
        app.router.add_get("/_sim/inventory", self._sim_inventory)
        app.router.add_get("/_sim/cancellations", self._sim_cancellations)
        app.router.add_get("/_sim/refunds", self._sim_refunds)
        app.router.add_post("/_sim/orders/{purchaseOrderId}/buyer-cancel", self._sim_buyer_cancel)
        return app

    # --- gateway: headers, token, throttling -------------------------------------------------

    def _missing_header(self, request: web.Request) -> web.Response | None:
        for header in ("WM_QOS.CORRELATION_ID", "WM_SVC.NAME"):
            if not request.headers.get(header):
                self._stats["bad_requests"] += 1
                code = "INVALID_REQUEST_HEADER.GMP_GATEWAY_API"
                return walmart_error(
                    400,
                    code,
                    header,
                    f"{header} header is required",
                    "Request has missing or invalid header.",
                    category="REQUEST",
                )
        return None

    def _token_error(self, request: web.Request) -> web.Response | None:
        token = request.headers.get("WM_SEC.ACCESS_TOKEN")
        expiry = self._tokens.get(token) if token else None
        if expiry is not None and expiry > self.clock():
            return None
        self._stats["auth_failures"] += 1
        return _unauthorized(
            "Unauthorized token or invalid service name"
            if token is None or expiry is None
            else "Token expired"
        )

    def _throttle(self, operation: str) -> tuple[web.Response | None, dict[str, str]]:
        bucket = self._buckets[operation]
        admitted = bucket.take()
        replenish = time.time() + bucket.seconds_to_next_token()
        headers = {
            "x-current-token-count": str(bucket.count()),
            "x-next-replenish-time": str(int(replenish * 1000)),
        }
        self._stats[f"requests_{operation}"] += 1
        if admitted:
            return None, headers
        self._stats["throttled_429"] += 1
        self._stats[f"throttled_429_{operation}"] += 1
        error = walmart_error(
            429,
            "REQUEST_THRESHOLD_VIOLATED.GMP_GATEWAY_API",
            "REQUEST_THRESHOLD_VIOLATED",
            "Too Many Requests",
            "Request threshold violated",
            category="REQUEST",
        )
        return error, headers

    @web.middleware
    async def _gateway(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        route = request.match_info.route.name
        if not request.path.startswith("/v3/") or route is None:
            return await handler(request)
        rejected = self._missing_header(request) or self._token_error(request)
        if rejected is not None:
            return rejected
        rejected, headers = self._throttle(self.ROUTE_OPERATION.get(route, route))
        response: web.StreamResponse = rejected or await handler(request)
        response.headers.update(headers)
        return response

    # --- handlers ------------------------------------------------------------------------------

    def _basic_credentials(self, request: web.Request) -> tuple[str, str] | None:
        scheme, _, encoded = request.headers.get("Authorization", "").partition(" ")
        try:
            client_id, _, secret = base64.b64decode(encoded, validate=True).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            return None
        return (client_id, secret) if scheme.lower() == "basic" else None

    async def _token(self, request: web.Request) -> web.Response:
        self._stats["token_requests"] += 1
        missing = self._missing_header(request)
        if missing is not None:
            return missing
        cfg = self.config
        if self._basic_credentials(request) != (cfg.client_id, cfg.client_secret):
            self._stats["auth_failures"] += 1
            return _unauthorized("Invalid client id or client secret")
        form = await request.post()
        if form.get("grant_type") != "client_credentials":
            self._stats["bad_requests"] += 1
            return _bad_param("grant_type", "grant_type must be client_credentials")
        token = secrets.token_urlsafe(32)
        self._tokens[token] = self.clock() + cfg.token_ttl_s
        self._stats["tokens_issued"] += 1
        return web.json_response(
            {"access_token": token, "token_type": "Bearer", "expires_in": cfg.token_ttl_s}
        )

    def _next_cursor(self, q: ListQuery, total: int, last_po: str) -> str:
        params = {
            "limit": str(q.limit),
            "hasMoreElements": "true",
            "soIndex": str(total),
            "poIndex": last_po,
            "partnerId": self.config.partner_id,
            "sellerId": self.config.seller_id,
            **q.extra,
        }
        return "?" + urlencode(params)

    def _list(self, request: web.Request, released: bool) -> web.Response:
        try:
            q = parse_list_query(request.query, now_ms())
        except ValueError as exc:
            self._stats["bad_requests"] += 1
            field, description = exc.args if len(exc.args) == 2 else ("query", str(exc))
            return _bad_param(field, description)
        seller_fulfilled = request.query.get("shipNodeType", "SellerFulfilled") == "SellerFulfilled"
        page, total, more = self.book.page(q, released) if seller_fulfilled else ([], 0, False)
        if not page and self.config.empty_list_404:
            return _not_found("No Orders found")
        meta: JSON = {"totalCount": total, "limit": q.limit}
        if more:
            meta["nextCursor"] = self._next_cursor(q, total, page[-1]["purchaseOrderId"])
        return web.json_response({"list": {"meta": meta, "elements": {"order": page}}})

    async def _released(self, request: web.Request) -> web.Response:
        return self._list(request, released=True)

    async def _all_orders(self, request: web.Request) -> web.Response:
        return self._list(request, released=False)

    async def _get_order(self, request: web.Request) -> web.Response:
        order = self.orders.get(request.match_info["purchaseOrderId"])
        if order is None:
            return _not_found("Order not found")
        return web.json_response({"order": order})

    async def _ack(self, request: web.Request) -> web.Response:
        po = request.match_info["purchaseOrderId"]
        if po not in self.orders:
            return _not_found("Order not found")
        self._stats["acknowledged"] += 1
        return web.json_response({"order": self.acknowledge(po)})

    async def _sim_stats(self, _request: web.Request) -> web.Response:
        return web.json_response(self.stats())

    async def _sim_config(self, request: web.Request) -> web.Response:
        try:
            changes = await request.json()
            if not isinstance(changes, dict):
                raise ValueError("expected a JSON object")
            config = self.set_config(changes)
        except (ValueError, TypeError) as exc:
            return web.json_response({"error": str(exc)}, status=400)
        return web.json_response(asdict(config))


    async def _sim_orders(self, request: web.Request) -> web.Response:
        """``{"lines": [{"sku", "quantity"}]}``: one order with those lines; ``{"count": n}``: n
        generated orders. Answers ``{"created": [purchaseOrderId...], "refused": k}``."""
        try:
            body = await request.json()
            lines = None
            if "lines" in body:
                lines = [(str(ln["sku"]), int(ln["quantity"])) for ln in body["lines"]]
            count = 1 if lines is not None else int(body["count"])
            if (lines is not None and (not lines or any(q < 1 for _, q in lines))) or count < 0:
                raise ValueError("lines need a sku and a quantity >= 1; count >= 0")
        except (ValueError, TypeError, KeyError) as exc:
            return web.json_response({"error": f"bad request: {exc}"}, status=400)
        made = [self.create_order(lines)] if lines is not None else self.generate_orders(count)
        created = [o["purchaseOrderId"] for o in made if o is not None]
        return web.json_response({"created": created, "refused": count - len(created)})

    async def _sim_inventory(self, _request: web.Request) -> web.Response:
        return web.json_response(self.listings.snapshot())

    async def _sim_cancellations(self, _request: web.Request) -> web.Response:
        return web.json_response(self.cancellations)

    # --- inventory ---------------------------------------------------------------------------

    def _inventory_body(self, sku: str) -> JSON:
        return {"sku": sku, "quantity": {"unit": "EACH", "amount": self.listings.quantity(sku) or 0}}

    def _sku_param(self, request: web.Request) -> tuple[str | None, web.Response | None]:
        sku = request.query.get("sku")
        if not sku:
            return None, _bad_param("sku", "sku is required", api="GMP_INVENTORY_API")
        if sku not in self.known_skus():
            info = "Requested content could not be found."
            return None, walmart_error(404, "CONTENT_NOT_FOUND.GMP_INVENTORY_API", "sku",
                                       f"Item not found for sku {sku}", info, category="REQUEST")
        return sku, None

    async def _get_inventory(self, request: web.Request) -> web.Response:
        sku, error = self._sku_param(request)
        return error or web.json_response(self._inventory_body(str(sku)))

    async def _put_inventory(self, request: web.Request) -> web.Response:
        sku, error = self._sku_param(request)
        if error is not None:
            return error
        try:
            body = await request.json()
        except ValueError:
            body = None
        problem = inventory_problem(body, str(sku))
        if problem is not None:
            self._stats["bad_requests"] += 1
            return _bad_param("quantity", problem, api="GMP_INVENTORY_API")
        self.listings.set(str(sku), int(body["quantity"]["amount"]))
        self._stats["inventory_updates"] += 1
        return web.json_response(self._inventory_body(str(sku)))

    # --- bulk feeds ---------------------------------------------------------------------------

    async def _post_feed(self, request: web.Request) -> web.Response:
        feed_type = request.query.get("feedType")
        if feed_type not in FEED_TYPES:
            return _bad_param("feedType", f"feedType must be one of {', '.join(FEED_TYPES)}",
                              api="GMP_FEED_API")
        raw = await feed_file(request)
        if raw is None:
            return _bad_param("file", "multipart part 'file' is required", api="GMP_FEED_API")
        feed_id = f"{secrets.token_hex(16).upper()}@AQMBAQA"
        self.feeds[feed_id] = {"feedId": feed_id, "submitted": time.monotonic(),
                               "feedSubmissionDate": now_ms(), "raw": raw, "result": None}
        self._stats["feeds_received"] += 1
        delay = self.config.feed_processing_ms / 1000
        self._feed_timers.append(asyncio.get_running_loop().call_later(delay, self._process_feed, feed_id))
        return web.json_response({"feedId": feed_id})

    def _process_feed(self, feed_id: str) -> None:
        feed = self.feeds[feed_id]
        if feed["result"] is not None:
            return
        items = feed_items(feed["raw"])
        if items is None:
            feed["result"] = {"feedStatus": "ERROR", "statuses": [], "ingestionErrors": {"ingestionError": [
                {"type": "DATA_ERROR", "code": "ERR_INVALID_FEED",
                 "description": "The file is not an inventory feed (InventoryHeader/Inventory)"}]}}
            return
        known = self.known_skus()
        statuses = [self._ingest(index, item, known) for index, item in enumerate(items)]
        feed["result"] = {"feedStatus": "PROCESSED", "statuses": statuses}
        self._stats["feeds_processed"] += 1

    def _ingest(self, index: int, item: Any, known: set[str]) -> JSON:
        sku = str(item.get("sku", "")) if isinstance(item, dict) else ""
        problem = (f"Item not found for sku {sku}" if sku and sku not in known
                   else inventory_problem(item, sku))
        status: JSON = {"martId": 0, "sku": sku, "index": index, "ingestionStatus": "SUCCESS"}
        if problem is None:
            self.listings.set(sku, int(item["quantity"]["amount"]))
            return status
        error = {"type": "DATA_ERROR", "code": "ERR_EXT_DATA_0801001", "description": problem}
        return {**status, "ingestionStatus": "DATA_ERROR",
                "ingestionErrors": {"ingestionError": [error]}}

    def _feed_state(self, feed: JSON) -> str:
        if feed["result"] is not None:
            return str(feed["result"]["feedStatus"])
        elapsed_ms = (time.monotonic() - feed["submitted"]) * 1000
        return "INPROGRESS" if elapsed_ms >= self.config.feed_processing_ms / 2 else "RECEIVED"

    async def _feed_status(self, request: web.Request) -> web.Response:
        feed = self.feeds.get(request.match_info["feedId"])
        if feed is None:
            info = "Requested content could not be found."
            return walmart_error(404, "CONTENT_NOT_FOUND.GMP_FEED_API", "feedId", "Feed not found",
                                 info, category="REQUEST")
        try:
            offset = max(0, int(request.query.get("offset", "0")))
            limit = min(FEED_DETAILS_LIMIT, max(1, int(request.query.get("limit", "50"))))
        except ValueError:
            return _bad_param("offset", "offset and limit must be numbers", api="GMP_FEED_API")
        details = request.query.get("includeDetails", "false").lower() == "true"
        return web.json_response(self._feed_report(feed, offset, limit, details))

    def _feed_report(self, feed: JSON, offset: int, limit: int, details: bool) -> JSON:
        result = feed["result"] or {}
        statuses = result.get("statuses", [])
        received = len(statuses) if feed["result"] is not None else len(feed_items(feed["raw"]) or [])
        failed = sum(1 for s in statuses if s["ingestionStatus"] != "SUCCESS")
        report: JSON = {
            "feedId": feed["feedId"], "feedStatus": self._feed_state(feed),
            "feedSubmissionDate": feed["feedSubmissionDate"], "itemsReceived": received,
            "itemsSucceeded": len(statuses) - failed, "itemsFailed": failed,
            "itemsProcessing": received - len(statuses), "offset": offset, "limit": limit,
        }
        if "ingestionErrors" in result:
            report["ingestionErrors"] = result["ingestionErrors"]
        if details:
            report["itemDetails"] = {"itemIngestionStatus": statuses[offset : offset + limit]}
        return report

    # --- seller cancellation -------------------------------------------------------------------

    async def _cancel(self, request: web.Request) -> web.Response:
        po = request.match_info["purchaseOrderId"]
        if po not in self.orders:
            return _not_found("Order not found")
        try:
            body = await request.json()
        except ValueError:
            body = None
        try:
            requests = cancel_requests(body)
            applied = self.book.cancel(po, requests)
        except ValueError as exc:
            self._stats["bad_requests"] += 1
            info = "Request content is invalid."
            return walmart_error(400, "INVALID_REQUEST_CONTENT.GMP_ORDER_API", "orderCancellation",
                                 str(exc), info)
        at = datetime.now(UTC).isoformat()
        for line, qty, reason in applied:
            sku = line["item"]["sku"]
            self.listings.seller_cancelled(sku, qty)
            self.cancellations.append({"order_id": po, "line_id": line["lineNumber"], "sku": sku,
                                       "quantity": qty, "reason": reason, "at": at})
        self._stats["cancelled_lines"] += len(applied)
        return web.json_response({"order": self.orders[po]})

    # --- shipping and refunds ------------------------------------------------------------------

    async def _body(self, request: web.Request) -> Any:
        try:
            return await request.json()
        except ValueError:
            return None

    def _invalid(self, field: str, exc: ValueError) -> web.Response:
        self._stats["bad_requests"] += 1
        info = "Request content is invalid."
        return walmart_error(400, "INVALID_REQUEST_CONTENT.GMP_ORDER_API", field, str(exc), info)

    async def _ship(self, request: web.Request) -> web.Response:
        po = request.match_info["purchaseOrderId"]
        if po not in self.orders:
            return _not_found("Order not found")
        try:
            requests = ship_requests(await self._body(request))
            self.book.ship(po, requests)
        except ValueError as exc:
            return self._invalid("orderShipment", exc)
        self._stats["shipped_lines"] += len(requests)
        return web.json_response({"order": self.orders[po]})

    async def _refund(self, request: web.Request) -> web.Response:
        po = request.match_info["purchaseOrderId"]
        if po not in self.orders:
            return _not_found("Order not found")
        refund_id = secrets.token_hex(8)
        try:
            requests = refund_requests(await self._body(request), po)
            self.book.refund(po, requests, refund_id)
        except ValueError as exc:
            return self._invalid("orderRefund", exc)
        at = datetime.now(UTC).isoformat()
        for number, charges, comments, full in requests:
            amount = -sum(charge_amount(c) for c in charges)
            self.refunds.append({"order_id": po, "line_id": number, "refund_id": refund_id,
                                 "amount": str(amount), "comments": comments, "full": full,
                                 "reasons": sorted({c["refundReason"] for c in charges}), "at": at})
        self._stats["refunded_lines"] += len(requests)
        return web.json_response({"order": self.orders[po]})

    async def _sim_buyer_cancel(self, request: web.Request) -> web.Response:
        try:
            order = self.cancel_by_buyer(request.match_info["purchaseOrderId"])
        except KeyError:
            return web.json_response({"error": "no such order"}, status=404)
        except ValueError as exc:
            return web.json_response({"error": str(exc)}, status=409)
        return web.json_response({"order": order})

    async def _sim_refunds(self, _request: web.Request) -> web.Response:
        return web.json_response(self.refunds)

    async def stop(self) -> None:
        for timer in self._feed_timers:
            timer.cancel()
        self._feed_timers.clear()
        await super().stop()


async def run_walmart_simulator(
    config: WalmartSimConfig | None = None, host: str = "127.0.0.1", port: int = 0
) -> WalmartSimulator:
    simulator = WalmartSimulator(config)
    await simulator.start(host, port)
    return simulator


__all__ = [
    "WalmartSimConfig",
    "WalmartSimulator",
    "parse_walmart_date",
    "run_walmart_simulator",
    "walmart_error",
]
