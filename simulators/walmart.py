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

Test-double extras: deterministic orders from a seed, ``time_scale`` (bucket refill runs that many
times faster), runtime budget changes (``PUT /_sim/config``), counters (``GET /_sim/stats``).
The cursor's ``poIndex`` is the last purchase order of the page (a keyset), so acknowledging orders
while paging neither skips nor repeats any. Every simulated order is seller-fulfilled, so
``shipNodeType=WFSFulfilled`` or ``3PLFulfilled`` finds nothing.
"""

from __future__ import annotations

import base64
import math
import secrets
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, fields
from typing import Any
from urllib.parse import urlencode

from aiohttp import web

from simulators.server import SimulatorServer
from simulators.walmart_orders import (
    ListQuery,
    OrderBook,
    WalmartOrderFactory,
    line_statuses,
    now_ms,
    parse_list_query,
    parse_walmart_date,
)

JSON = dict[str, Any]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_OPTIONAL_INTS = ("seed", "base_time_ms")


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

    def updated(self, changes: JSON) -> WalmartSimConfig:
        """A copy with ``changes`` applied (coerced to each field's type); unknown fields raise."""
        unknown = set(changes) - {f.name for f in fields(self)}
        if unknown:
            raise ValueError(f"unknown config fields: {sorted(unknown)}")
        merged = asdict(self)
        for name, value in changes.items():
            merged[name] = _coerce(name, merged[name], value)
        return WalmartSimConfig(**merged)


def _coerce(name: str, current: Any, value: Any) -> Any:
    if name in _OPTIONAL_INTS:
        return None if value is None else int(value)
    if isinstance(current, bool):
        if not isinstance(value, bool):
            raise ValueError(f"{name} must be true or false")
        return value
    return type(current)(value)


class TokenBucket:
    """``burst`` tokens refilled at ``rate_per_s * time_scale`` per real second; clock injectable."""

    def __init__(self, rate_per_s: float, burst: int, time_scale: float = 1.0, clock: Any = time.monotonic):
        self.clock = clock
        self.rate_per_s, self.burst, self.time_scale = rate_per_s, burst, time_scale
        self.tokens = float(burst)
        self._at = clock()

    def reconfigure(self, rate_per_s: float, burst: int, time_scale: float) -> None:
        """New plan from now on; tokens already earned are kept up to the new burst."""
        self._refill()
        self.rate_per_s, self.burst, self.time_scale = rate_per_s, burst, time_scale
        self.tokens = min(self.tokens, float(burst))

    def _refill(self) -> None:
        now = self.clock()
        gained = (now - self._at) * self.rate_per_s * self.time_scale
        self.tokens = min(float(self.burst), self.tokens + gained)
        self._at = now

    def take(self) -> bool:
        self._refill()
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True

    def count(self) -> int:
        self._refill()
        return math.floor(self.tokens)

    def seconds_to_next_token(self) -> float:
        """Real seconds until the count grows by one (0 when the bucket is full)."""
        if self.tokens >= self.burst:
            return 0.0
        return (1 - (self.tokens % 1)) / (self.rate_per_s * self.time_scale)


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


def _bad_param(field: str, description: str) -> web.Response:
    info = "Request has invalid input param."
    return walmart_error(400, "INVALID_REQUEST_PARAM.GMP_ORDER_API", field, description, info)


def _not_found(description: str) -> web.Response:
    info = "Requested content could not be found."
    return walmart_error(
        404, "CONTENT_NOT_FOUND.GMP_ORDER_API", "data", description, info, category="REQUEST"
    )


class WalmartSimulator(SimulatorServer):
    """The Walmart Orders API as a real HTTP server; ``orders`` gives tests in-process access."""

    OPERATIONS = ("released", "orders", "acknowledge")

    def __init__(self, config: WalmartSimConfig | None = None, clock: Any = time.monotonic) -> None:
        self.config = config or WalmartSimConfig()
        self.clock = clock
        self.book = OrderBook(WalmartOrderFactory(self.config.seed, self.config.max_lines))
        self.orders = self.book.orders  # purchaseOrderId -> order, for in-process inspection
        self._tokens: dict[str, float] = {}  # access token -> expiry (clock)
        self._buckets = {op: self._bucket(op) for op in self.OPERATIONS}
        self._stats: Counter[str] = Counter()

    # --- state -----------------------------------------------------------------------------

    def _bucket(self, operation: str) -> TokenBucket:
        rate, burst = self._plan(operation)
        return TokenBucket(rate, burst, self.config.time_scale, self.clock)

    def _plan(self, operation: str) -> tuple[float, int]:
        cfg = self.config
        return getattr(cfg, f"{operation}_rate_per_s"), getattr(cfg, f"{operation}_burst")

    def set_config(self, changes: JSON) -> WalmartSimConfig:
        self.config = self.config.updated(changes)
        for operation, bucket in self._buckets.items():
            bucket.reconfigure(*self._plan(operation), self.config.time_scale)
        return self.config

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
        """Create ``n`` orders in Created status (deterministic for a seed); returns copies."""
        return self.book.generate(n, self.config.base_time_ms, self.config.order_interval_ms)

    def add_order(self, order: JSON) -> JSON:
        """Store an order as given (replacing one with the same purchaseOrderId)."""
        return self.book.add(order)

    def update_line_status(self, po: str, line_number: str, status: str) -> JSON:
        """Move one whole line to ``status`` (any of the spec's six); returns the order."""
        return self.book.set_line_status(po, line_number, status)

    def acknowledge(self, po: str) -> JSON:
        return self.book.acknowledge(po)

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
        app.router.add_get("/_sim/stats", self._sim_stats)
        app.router.add_put("/_sim/config", self._sim_config)
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
        rejected, headers = self._throttle("orders" if route == "order" else route)
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


async def run_walmart_simulator(
    config: WalmartSimConfig | None = None, host: str = "127.0.0.1", port: int = 0
) -> WalmartSimulator:
    simulator = WalmartSimulator(config)
    await simulator.start(host, port)
    return simulator


__all__ = [
    "TokenBucket",
    "WalmartSimConfig",
    "WalmartSimulator",
    "parse_walmart_date",
    "run_walmart_simulator",
    "walmart_error",
]
