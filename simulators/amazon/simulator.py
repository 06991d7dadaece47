"""An Amazon Selling Partner API simulator: Orders v0 ``getOrders`` and ``getOrderItems``, and the
seller side (Listings Items, Feeds: quantities and order acknowledgements) in ``listings`` (this package).

What it mirrors (models/orders-api-model/ordersV0.json):

* ``GET /orders/v0/orders`` with ``MarketplaceIds`` (required), ``CreatedAfter`` xor
  ``LastUpdatedAfter`` (ISO 8601; ``CreatedBefore`` / ``LastUpdatedBefore`` only with their own
  kind), ``OrderStatuses``, ``FulfillmentChannels``, ``MaxResultsPerPage`` (1-100, default 100)
  and ``NextToken``. Orders come sorted by ``LastUpdateDate``; the payload names the upper bound
  it used (``LastUpdatedBefore`` or ``CreatedBefore``). A ``NextToken`` carries the filters and
  a keyset cursor, so an order updated mid-pagination is never skipped (it moves past the frozen
  upper bound and shows up in the next poll).
* ``GET /orders/v0/orders/{orderId}/orderItems`` (+ ``NextToken``). While an order is ``Pending``
  or ``PendingAvailability`` Amazon withholds ``OrderTotal`` and every item price, tax and
  promotion; they appear once payment is authorised.
* Auth: ``x-amz-access-token`` must equal the configured LWA token, else 403 ``Unauthorized``.
* ``POST /orders/v0/orders/{orderId}/shipmentConfirmation`` (``confirmShipment``) with a
  ``ConfirmShipmentRequest`` (``marketplaceId``, ``packageDetail``: ``packageReferenceId`` (a
  positive number), ``carrierCode`` (``CARRIER_CODES``; ``Other`` needs ``carrierName``),
  ``trackingNumber``, ``shipDate`` (ISO 8601), ``orderItems`` [``orderItemId``, ``quantity``]): 204;
  the items' ``QuantityShipped`` grow, the order becomes ``PartiallyShipped`` or ``Shipped`` and its
  ``LastUpdateDate`` moves on. A package whose ``packageReferenceId`` the order already has is a
  repeat: 204 and nothing changes (400 if it names other items). Shipping more than is left
  unshipped, an unknown item, an AFN / cancelled / pending order: 400 ``InvalidInput``.
  ``shipments`` (``GET /_sim/shipments[?order_id=]``) lists the confirmed packages.
* Usage plans as token buckets per operation (getOrders 0.0167/s burst 20, getOrderItems 0.5/s
  burst 30, confirmShipment 2/s burst 10); over budget -> 429 ``QuotaExceeded``. Every answer
  carries ``x-amzn-RequestId``; ``x-amzn-RateLimit-Limit`` comes with every answer but a 429,
  as the spec documents (``rate_limit_header_on_429`` adds it there too). Errors are the spec's
  ``{"errors": [{code, message, details}]}``.

Test-double extras: ``time_scale`` (buckets refill that many times faster, and the rate header
reports the effective rate so a client's ``1/rate`` back-off stays right), ``rate_overrides``,
injected 5xx and latency, ``/_sim`` control endpoints, seeded order generation and status updates.

Stock: a ``Listings`` (``listings``) holds what the seller last set (patchListingsItem or a
JSON_LISTINGS_FEED); every order the simulator creates is a sale on it first, and a refused sale
(``listing_mode`` "refuse") creates no order (``SaleRefused``; ``POST /_sim/orders`` answers 409).
``GET /_sim/inventory`` is its snapshot and ``GET /_sim/cancellations`` the seller's cancellations
(order acknowledgement feeds); ``GET /_sim/refunds[?order_id=]`` the refunds (payment adjustment
feeds, see listings.py).

Buyer cancellations: ``cancel_by_buyer(order_id)`` / ``POST /_sim/orders/{orderId}/buyer-cancel``
cancels a Pending / Unshipped order (``Canceled``, ``LastUpdateDate`` moves on, so pollers by
``LastUpdatedAfter`` see it); an order with anything shipped is refused (ValueError / 409).

Buyer cancellation *requests* (an MFN order the buyer cannot cancel by himself once it is
``Unshipped``): ``request_buyer_cancel(order_id, reason)`` / ``POST
/_sim/orders/{orderId}/buyer-cancel-request`` (body optional: ``{"reason", "item_ids"}``) mark its
items ``BuyerRequestedCancel`` (``orders.request_cancel_by_buyer``); the order stays
``Unshipped`` until the seller cancels it with an order acknowledgement (``CancelReason``
``BuyerCanceled``, listed in ``cancellations``). ``buyer_cancel_rate`` is the share of new
``Unshipped`` MFN orders whose buyer asks so ``buyer_cancel_after_s`` after ordering (applied when
that moment has passed and Amazon is next asked; a request for an order shipped meanwhile is not
made, as Amazon no longer offers it). ``buyer_cancel_requests`` lists the requests made.

Generated orders buy from ``skus`` (default: the built-in catalogue), 1 to ``max_quantity`` units a
line; ``POST /_sim/orders`` also takes explicit ``items``.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import random
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp import web

from retail_sync.simulators.amazon.listings import USAGE_PLANS as SELLER_PLANS
from retail_sync.simulators.amazon.listings import ApiError, ListingsApi, operation_of
from retail_sync.simulators.amazon.orders import (
    AWAITING_PAYMENT,
    ORDER_STATUSES,
    Market,
    OrderFactory,
    OrderRecord,
    iso,
    parse_package,
    request_cancel_by_buyer,
    set_status,
    ship_units,
    shipment_error,
    visible,
)
from retail_sync.simulators.bucket import Bucket
from retail_sync.simulators.listings import Listings
from retail_sync.simulators.server import Handler, SimulatorServer

JSON = dict[str, Any]
GET_ORDERS, GET_ORDER_ITEMS, CONFIRM_SHIPMENT = "getOrders", "getOrderItems", "confirmShipment"
USAGE_PLANS: dict[str, tuple[float, int]] = {
    GET_ORDERS: (0.0167, 20), GET_ORDER_ITEMS: (0.5, 30), CONFIRM_SHIPMENT: (2.0, 10), **SELLER_PLANS}
BUYER_CANCELLABLE = ("PendingAvailability", "Pending", "Unshipped")
_ERRORS = {
    403: ("Unauthorized", "Access to requested resource is denied."),
    404: ("NotFound", "The resource specified does not exist."),
    429: ("QuotaExceeded", "You exceeded your quota for the requested resource."),
    500: ("InternalFailure", "We encountered an internal error. Please try again."),
    503: ("ServiceUnavailable", "Service is temporarily unavailable. Please try again."),
}


class InvalidInput(Exception):
    """A request parameter the spec forbids; answered 400 ``InvalidInput``."""


class SaleRefused(Exception):
    """The listings refused the order's sale (not enough quantity in ``refuse`` mode)."""


def parse_iso(value: str, name: str) -> datetime:
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise InvalidInput(f"{name} is not an ISO 8601 date: {value!r}") from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def error_body(code: str, message: str, details: str = "") -> JSON:
    return {"errors": [{"code": code, "message": message, "details": details}]}


@dataclass
class AmazonSimConfig:
    """Every field can be changed at runtime with ``PUT /_sim/config``."""

    access_token: str = "Atza|simulated-lwa-token"  # noqa: S105 - demo credential of a simulator
    marketplace_id: str = "ATVPDKIKX0DER"
    currency: str = "USD"
    seed: int | None = None
    time_scale: float = 1.0
    rate_overrides: dict[str, dict[str, float]] = field(default_factory=dict)  # op -> rate/burst
    rate_limit_header_on_429: bool = False  # the spec documents only x-amzn-RequestId on a 429
    # Amazon: upper bounds at least 120 s before now, so a listed second is long complete. 0
    # lists up to now: LastUpdateDate has whole seconds, so an order read early in a second and
    # updated later in it keeps its LastUpdateDate, and a poller that remembers what it read at
    # its cursor's second misses the update (Amazon's 120 s make that impossible); >= 1 s is
    # faithful in that respect
    visibility_lag_s: float = 0.0
    items_page_size: int = 100
    tax_rate: str = "0.08"
    fail_next: int = 0  # answer the next N API calls with fail_status
    fail_status: int = 503
    latency_ms: float = 0
    seller_id: str = "A2SIMSELLER01"  # the only sellerId Listings Items answers for
    listing_mode: str = "refuse"  # "refuse" | "allow": an order beyond a listing's quantity
    feed_processing_ms: float = 200  # createFeed -> DONE / FATAL
    skus: list[str] | None = None  # what generated orders buy; None: the built-in catalogue
    max_quantity: int = 3  # units per generated line, 1..max_quantity
    mfn_rate: float = 0.7  # share of generated orders the seller fulfils (only those can be cancelled)
    buyer_cancel_rate: float = 0.0  # share of new Unshipped MFN orders whose buyer asks to cancel
    buyer_cancel_after_s: float = 2.0  # ... that long after ordering

    def updated(self, changes: JSON) -> AmazonSimConfig:
        unknown = set(changes) - {f.name for f in fields(self)}
        if unknown:
            raise ValueError(f"unknown config fields: {sorted(unknown)}")
        bad = set(changes.get("rate_overrides", {})) - set(USAGE_PLANS)
        if bad:
            raise ValueError(f"unknown operations in rate_overrides: {sorted(bad)}")
        new = AmazonSimConfig(**{**asdict(self), **changes})
        if new.listing_mode not in ("refuse", "allow"):
            raise ValueError(f"listing_mode must be 'refuse' or 'allow', got {new.listing_mode!r}")
        if int(new.max_quantity) < 1 or not 0 <= float(new.mfn_rate) <= 1:
            raise ValueError("max_quantity must be >= 1 and mfn_rate within 0..1")
        if not 0 <= float(new.buyer_cancel_rate) <= 1 or float(new.buyer_cancel_after_s) < 0:
            raise ValueError("buyer_cancel_rate must be within 0..1 and buyer_cancel_after_s >= 0")
        if new.skus is not None and (not isinstance(new.skus, list) or not new.skus
                                     or not all(isinstance(k, str) and k for k in new.skus)):
            raise ValueError("skus must be a non-empty list of SKUs (or null)")
        for operation in USAGE_PLANS:
            new.plan(operation)  # ValueError / TypeError now rather than on the next request
        return new

    def plan(self, operation: str) -> tuple[float, int]:
        rate, burst = USAGE_PLANS[operation]
        override = self.rate_overrides.get(operation, {})
        return float(override.get("rate", rate)), int(override.get("burst", burst))


@dataclass(frozen=True)
class _Query:
    marketplace_ids: tuple[str, ...]
    by_created: bool
    after: datetime
    before: datetime
    statuses: tuple[str, ...] = ()
    channels: tuple[str, ...] = ()
    page_size: int = 100
    cursor: tuple[str, str] | None = None  # (LastUpdateDate, AmazonOrderId) of the last order sent

    def matches(self, record: OrderRecord) -> bool:
        order, moment = record.order, record.purchased if self.by_created else record.updated
        return (
            order["MarketplaceId"] in self.marketplace_ids
            and self.after <= moment <= self.before
            and (not self.statuses or order["OrderStatus"] in self.statuses)
            and (not self.channels or order["FulfillmentChannel"] in self.channels)
        )

    def token(self, last: OrderRecord) -> str:
        state = {**asdict(self), "after": self.after.isoformat(), "before": self.before.isoformat()}
        state["cursor"] = [iso(last.updated), last.order["AmazonOrderId"]]
        return base64.urlsafe_b64encode(json.dumps(state).encode()).decode()

    @classmethod
    def from_token(cls, token: str) -> _Query:
        try:
            state = json.loads(base64.urlsafe_b64decode(token.encode()))
            state["after"], state["before"] = (parse_iso(state[k], k) for k in ("after", "before"))
            for key in ("marketplace_ids", "statuses", "channels", "cursor"):
                state[key] = tuple(state[key]) if state[key] is not None else None
            return cls(**state)
        except (ValueError, KeyError, TypeError, binascii.Error, InvalidInput):
            raise InvalidInput(f"Invalid NextToken: {token[:40]!r}") from None


def _csv(query: Any, name: str) -> tuple[str, ...]:
    return tuple(v.strip() for raw in query.getall(name, []) for v in raw.split(",") if v.strip())


def _page_size(query: Any) -> int:
    raw = query.get("MaxResultsPerPage", "100")
    if not raw.isdigit() or not 1 <= int(raw) <= 100:
        raise InvalidInput(f"MaxResultsPerPage must be an integer from 1 to 100, got {raw!r}")
    return int(raw)


def parse_orders_query(query: Any, latest: datetime) -> _Query:
    """The getOrders filters of a first-page request (``latest`` caps the *Before bounds)."""
    created, updated = query.get("CreatedAfter"), query.get("LastUpdatedAfter")
    if bool(created) == bool(updated):
        raise InvalidInput("Exactly one of CreatedAfter or LastUpdatedAfter is required.")
    kind, other = ("Created", "LastUpdated") if created else ("LastUpdated", "Created")
    if query.get(f"{other}Before"):
        raise InvalidInput(f"{other}Before cannot be set when {kind}After is set.")
    after = parse_iso(created or updated, f"{kind}After")
    before_raw = query.get(f"{kind}Before")
    before = parse_iso(before_raw, f"{kind}Before") if before_raw else latest
    if before > latest or before < after:
        raise InvalidInput(f"{kind}Before must be after {kind}After and before {iso(latest)}.")
    statuses = _csv(query, "OrderStatuses")
    unknown = set(statuses) - set(ORDER_STATUSES)
    if unknown:
        raise InvalidInput(f"Invalid OrderStatuses: {sorted(unknown)}")
    return _Query(
        marketplace_ids=_csv(query, "MarketplaceIds"), by_created=bool(created), after=after,
        before=before, statuses=statuses, channels=_csv(query, "FulfillmentChannels"),
        page_size=_page_size(query),
    )  # fmt: skip


class AmazonSimulator(SimulatorServer):
    """Serves getOrders / getOrderItems over HTTP from an in-memory, seeded order book."""

    def __init__(
        self, config: AmazonSimConfig | None = None, *, clock: Callable[[], datetime] | None = None
    ):
        self.config = config or AmazonSimConfig()
        self.clock = clock or (lambda: datetime.now(UTC))
        self.factory = OrderFactory(self._market(), self.config.seed)
        self.records: dict[str, OrderRecord] = {}
        self.buckets = {op: Bucket(*self._scaled(op)) for op in USAGE_PLANS}
        self.counts: Counter[str] = Counter()
        self.listings = Listings()
        self.cancellations: list[JSON] = []  # {order_id, line_id, sku, quantity, reason, at, feed_id}
        self.shipments: list[JSON] = []  # confirmed packages, see Package.record
        self.refunds: list[JSON] = []  # payment adjustments, see listings.py
        self.buyer_cancellations: list[JSON] = []  # {order_id, status_before, at}
        self.buyer_cancel_requests: list[JSON] = []  # {order_id, reason, item_ids, at}
        self._buyer_cancels_due: dict[str, datetime] = {}  # order id -> when its buyer asks
        self._buyer_rng = random.Random(None if self.config.seed is None else self.config.seed + 1)  # noqa: S311
        self.seller = ListingsApi(self)
        self._follow_config()

    # what the listings side reads of the simulator (listings.Host)
    @property
    def seller_id(self) -> str:
        return self.config.seller_id

    @property
    def marketplace_id(self) -> str:
        return self.config.marketplace_id

    @property
    def feed_processing_s(self) -> float:
        return self.config.feed_processing_ms / 1000

    def touched(self) -> None:
        self.counts["orders_updated"] += 1

    def _follow_config(self) -> None:
        cfg = self.config
        self.listings.mode = "allow" if cfg.listing_mode == "allow" else "refuse"
        self.factory.skus, self.factory.max_quantity = cfg.skus, int(cfg.max_quantity)
        self.factory.mfn_rate = float(cfg.mfn_rate)

    def _scaled(self, operation: str) -> tuple[float, int]:
        rate, burst = self.config.plan(operation)
        return rate * self.config.time_scale, burst

    def _market(self) -> Market:
        cfg = self.config
        return Market(cfg.marketplace_id, cfg.currency, cfg.tax_rate)

    def configure(self, changes: JSON) -> None:
        """Apply ``changes`` to the config (ValueError if unknown); new usage plans act at once."""
        self.config = self.config.updated(changes)
        self.factory.market = self._market()
        self._follow_config()
        for operation, bucket in self.buckets.items():
            bucket.reshape(*self._scaled(operation))

    def now(self) -> datetime:
        return self.clock().astimezone(UTC).replace(microsecond=0)

    # --- the order book (in-process API) ------------------------------------------------------

    def add_order(self, status: str = "Unshipped", *, lines: list[JSON] | None = None,
                  order_id: str | None = None) -> str:  # fmt: skip
        """Place one order; ``lines``: dicts of sku, quantity, unit_price [, tax, discount, ...].

        The order is a sale on ``listings`` first: SaleRefused (and no order) when it refuses."""
        lines = lines or self.factory.random_lines()
        if status not in ORDER_STATUSES:
            raise ValueError(f"unknown OrderStatus {status!r}; known: {', '.join(ORDER_STATUSES)}")
        wanted = [(str(line["sku"]), int(line["quantity"])) for line in lines]
        if not self.listings.sell(wanted):
            self.counts["orders_refused"] += 1
            shown = {sku: self.listings.quantity(sku) for sku, _ in wanted}
            raise SaleRefused(f"not enough listed quantity for {wanted} (listings show {shown})")
        order_id = order_id or self.factory.order_id()
        while order_id in self.records:
            order_id = self.factory.order_id()
        record = self.factory.order(order_id, status, self.now(), lines)
        self.records[order_id] = record
        self.counts["orders_created"] += 1
        rate = float(self.config.buyer_cancel_rate)
        if rate and status == "Unshipped" and record.order["FulfillmentChannel"] == "MFN" \
                and self._buyer_rng.random() < rate:
            after = timedelta(seconds=float(self.config.buyer_cancel_after_s))
            self._buyer_cancels_due[order_id] = record.purchased + after
        return order_id

    def generate_orders(self, n: int, status: str = "Unshipped") -> list[str]:
        """Up to ``n`` orders; those the listings refuse are skipped (``orders_refused`` counts)."""
        ids = []
        for _ in range(n):
            try:
                ids.append(self.add_order(status))
            except SaleRefused:
                continue
        return ids

    def update_order(self, order_id: str, *, status: str) -> None:
        """Change an order's status (KeyError if unknown); pollers see it as an update."""
        set_status(self.records[order_id], status, self.now())
        self.counts["orders_updated"] += 1

    def confirm_shipment(self, order_id: str, body: JSON) -> bool:
        """confirmShipment in process: False for a repeated package (nothing changes). KeyError
        for an unknown order, InvalidInput when the request or the order's state forbids it."""
        record = self.records[order_id]
        try:
            package = parse_package(body, self.config.marketplace_id)
        except ValueError as exc:
            raise InvalidInput(str(exc)) from None
        earlier = next((s for s in self.shipments if s["order_id"] == order_id
                        and s["package_reference_id"] == package.reference_id), None)  # fmt: skip
        if earlier is not None:
            if {i["order_item_id"]: i["quantity"] for i in earlier["items"]} != package.items:
                raise InvalidInput(f"packageReferenceId {package.reference_id} of order {order_id} "
                                   "was confirmed with other items.")  # fmt: skip
            return False
        if problem := shipment_error(record, package):
            raise InvalidInput(problem)
        now = self.now()
        ship_units(record, package.items, now)
        self.shipments.append(package.record(order_id, iso(now)))
        self.counts["orders_updated"] += 1
        return True

    def cancel_by_buyer(self, order_id: str) -> bool:
        """The buyer cancels an order not shipped yet (False if it already is Canceled); KeyError
        for an unknown order, ValueError once something shipped."""
        record = self.records[order_id]
        status = record.order["OrderStatus"]
        if status == "Canceled":
            return False
        if status not in BUYER_CANCELLABLE or record.shipped:
            raise ValueError(f"order {order_id} is {status}; a buyer can only cancel an order "
                             "that has not shipped")  # fmt: skip
        now = self.now()
        set_status(record, "Canceled", now)
        self.buyer_cancellations.append({"order_id": order_id, "status_before": status, "at": iso(now)})
        self.counts["orders_updated"] += 1
        return True

    def request_buyer_cancel(self, order_id: str, reason: str | None = None, *,
                             item_ids: list[str] | None = None) -> bool:
        """The buyer asks to cancel (``item_ids``, default every item of) an unshipped MFN order;
        False if he already asked. KeyError for an unknown order, ValueError for an order he
        cannot ask this for (AFN, pending, cancelled, anything shipped) or an unknown item."""
        record = self.records[order_id]
        known = {i["OrderItemId"] for i in record.as_ordered}
        if item_ids is not None and (not item_ids or set(item_ids) - known):
            raise ValueError(f"item_ids must name items of order {order_id}: {sorted(known)}")
        wanted = set(item_ids or known)
        if all(i.get("BuyerRequestedCancel") for i in record.as_ordered if i["OrderItemId"] in wanted):
            return False
        now = self.now()
        request_cancel_by_buyer(record, reason, now, item_ids=sorted(wanted))
        self.buyer_cancel_requests.append({"order_id": order_id, "reason": reason,
                                           "item_ids": sorted(wanted), "at": iso(now)})
        self.counts["orders_updated"] += 1
        return True

    def _buyers_ask(self) -> None:
        """Make the buyer cancellation requests ``buyer_cancel_rate`` scheduled whose time came."""
        if not self._buyer_cancels_due:
            return
        now = self.now()
        for order_id, due in list(self._buyer_cancels_due.items()):
            if due > now:
                continue
            del self._buyer_cancels_due[order_id]
            try:
                self.request_buyer_cancel(order_id, "Order placed by mistake.")
            except ValueError:  # shipped (or cancelled) meanwhile: too late to ask
                self.counts["buyer_cancel_requests_too_late"] += 1

    def stats(self) -> JSON:
        self._buyers_ask()
        return {
            "orders": len(self.records), **dict(self.counts),
            "feeds": dict(self.seller.feeds_by_type), "cancellations": len(self.cancellations),
            "shipments": len(self.shipments), "refunds": len(self.refunds),
            "buyer_cancellations": len(self.buyer_cancellations),
            "buyer_cancel_requests": len(self.buyer_cancel_requests),
            "throttled": sum(v for k, v in self.counts.items() if k.startswith("429 ")),
            "tokens": {op: round(b.tokens, 3) for op, b in self.buckets.items()},
        }  # fmt: skip

    # --- HTTP ------------------------------------------------------------------------------------

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._gateway])
        app.router.add_get("/orders/v0/orders", self._get_orders)
        app.router.add_get("/orders/v0/orders/{orderId}/orderItems", self._get_order_items)
        app.router.add_post("/orders/v0/orders/{orderId}/shipmentConfirmation", self._confirm_shipment)
        self.seller.add_routes(app.router)
        app.router.add_get("/_sim/stats", self._sim_stats)
        app.router.add_get("/_sim/inventory", self._sim_inventory)
        app.router.add_get("/_sim/cancellations", self._sim_cancellations)
        app.router.add_get("/_sim/shipments", self._sim_shipments)
        app.router.add_get("/_sim/refunds", self._sim_refunds)
        app.router.add_post("/_sim/orders/{orderId}/buyer-cancel", self._sim_buyer_cancel)
        app.router.add_post("/_sim/orders/{orderId}/buyer-cancel-request",
                            self._sim_buyer_cancel_request)
        app.router.add_get("/_sim/buyer-cancel-requests", self._sim_buyer_cancel_requests)
        app.router.add_put("/_sim/config", self._sim_config)
        app.router.add_post("/_sim/orders", self._sim_create)
        app.router.add_patch("/_sim/orders/{orderId}", self._sim_update)
        return app

    async def stop(self) -> None:
        self.seller.cancel_timers()
        await super().stop()

    @staticmethod
    def _operation(request: web.Request) -> str:
        seller_side = operation_of(request.method, request.path)
        if seller_side is not None:
            return seller_side
        if request.path.endswith("/shipmentConfirmation"):
            return CONFIRM_SHIPMENT
        return GET_ORDER_ITEMS if request.path.endswith("/orderItems") else GET_ORDERS

    @web.middleware
    async def _gateway(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Auth, usage plans, injected faults and the x-amzn headers, as Amazon's gateway does."""
        if request.path.startswith(("/_sim/", "/_docs/")):  # control; presigned document URLs
            return await handler(request)
        operation = self._operation(request)
        self._buyers_ask()
        response = await self._guarded(request, handler, operation)
        rate = self.buckets[operation].rate
        response.headers["x-amzn-RequestId"] = str(uuid.uuid4())
        if response.status != 429 or self.config.rate_limit_header_on_429:
            response.headers["x-amzn-RateLimit-Limit"] = format(rate, "g")
        self.counts[f"{response.status} {operation}"] += 1
        return response

    async def _guarded(self, request: web.Request, handler: Handler, operation: str) -> web.StreamResponse:
        token = request.headers.get("x-amz-access-token")
        if token != self.config.access_token:
            details = "x-amz-access-token header is missing" if token is None else "invalid token"
            return self._error(403, details)
        if not self.buckets[operation].take():
            return self._error(429)
        if self.config.latency_ms:
            await asyncio.sleep(self.config.latency_ms / 1000)
        if self.config.fail_next > 0:
            self.config.fail_next -= 1
            return self._error(self.config.fail_status)
        try:
            return await handler(request)
        except InvalidInput as exc:
            return web.json_response(error_body("InvalidInput", "Invalid Input", str(exc)), status=400)
        except ApiError as exc:
            return self._error(exc.status, exc.details)
        except web.HTTPException as exc:  # unknown path or method
            return self._error(404 if exc.status == 404 else exc.status, exc.reason)

    @staticmethod
    def _error(status: int, details: str = "") -> web.Response:
        fallback = ("InvalidInput", "Invalid Input") if status < 500 else ("InternalFailure", "")
        code, message = _ERRORS.get(status, fallback)
        return web.json_response(error_body(code, message, details), status=status)

    async def _get_orders(self, request: web.Request) -> web.Response:
        query = request.query
        if not _csv(query, "MarketplaceIds"):
            raise InvalidInput("MarketplaceIds is required.")
        token = query.get("NextToken")
        latest = self.now() - timedelta(seconds=self.config.visibility_lag_s)
        spec = _Query.from_token(token) if token else parse_orders_query(query, latest)
        hits = sorted(
            (r for r in self.records.values() if spec.matches(r)),
            key=lambda r: (iso(r.updated), r.order["AmazonOrderId"]),
        )
        if spec.cursor:
            hits = [r for r in hits if (iso(r.updated), r.order["AmazonOrderId"]) > spec.cursor]
        page = hits[: spec.page_size]
        payload: JSON = {"Orders": [visible(r)[0] for r in page]}
        if len(hits) > len(page):
            payload["NextToken"] = spec.token(page[-1])
        payload["CreatedBefore" if spec.by_created else "LastUpdatedBefore"] = iso(spec.before)
        return web.json_response({"payload": payload})

    async def _get_order_items(self, request: web.Request) -> web.Response:
        order_id = request.match_info["orderId"]
        record = self.records.get(order_id)
        if record is None:
            return self._error(404, f"No order {order_id!r} for this seller.")
        start = _items_offset(request.query.get("NextToken"), order_id)
        items = visible(record)[1]
        end = start + self.config.items_page_size
        payload: JSON = {"AmazonOrderId": order_id, "OrderItems": items[start:end]}
        if end < len(items):
            payload["NextToken"] = base64.urlsafe_b64encode(f"{order_id}|{end}".encode()).decode()
        return web.json_response({"payload": payload})

    async def _confirm_shipment(self, request: web.Request) -> web.Response:
        order_id = request.match_info["orderId"]
        if order_id not in self.records:
            return self._error(404, f"No order {order_id!r} for this seller.")
        try:
            body = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise InvalidInput("The request body is not JSON.") from None
        self.confirm_shipment(order_id, body)
        return web.Response(status=204)

    # --- /_sim control endpoints (test-only) ----------------------------------------------

    async def _sim_shipments(self, request: web.Request) -> web.Response:
        order_id = request.query.get("order_id")
        return web.json_response([s for s in self.shipments if order_id in (None, s["order_id"])])

    async def _sim_refunds(self, request: web.Request) -> web.Response:
        order_id = request.query.get("order_id")
        return web.json_response([r for r in self.refunds if order_id in (None, r["order_id"])])

    async def _sim_buyer_cancel(self, request: web.Request) -> web.Response:
        order_id = request.match_info["orderId"]
        if order_id not in self.records:
            return web.json_response({"error": f"no order {order_id}"}, status=404)
        try:
            self.cancel_by_buyer(order_id)
        except ValueError as exc:
            return web.json_response({"error": str(exc)}, status=409)
        return web.json_response(visible(self.records[order_id])[0])

    async def _sim_buyer_cancel_request(self, request: web.Request) -> web.Response:
        order_id = request.match_info["orderId"]
        if order_id not in self.records:
            return web.json_response({"error": f"no order {order_id}"}, status=404)
        try:
            body = await request.json() if request.can_read_body else {}
            if not isinstance(body, dict):
                raise ValueError("the body must be an object: {reason, item_ids}")
            reason, item_ids = body.get("reason"), body.get("item_ids")
            if item_ids is not None and not (isinstance(item_ids, list)
                                             and all(isinstance(i, str) for i in item_ids)):
                raise ValueError("item_ids must be a list of OrderItemIds")
            self.request_buyer_cancel(order_id, None if reason is None else str(reason),
                                      item_ids=item_ids)
        except json.JSONDecodeError:
            return web.json_response({"error": "the body is not JSON"}, status=400)
        except ValueError as exc:
            return web.json_response({"error": str(exc)}, status=409)
        order, items = visible(self.records[order_id])
        return web.json_response({**order, "OrderItems": items})

    async def _sim_buyer_cancel_requests(self, _request: web.Request) -> web.Response:
        self._buyers_ask()
        return web.json_response(self.buyer_cancel_requests)

    async def _sim_stats(self, _request: web.Request) -> web.Response:
        return web.json_response(self.stats())

    async def _sim_config(self, request: web.Request) -> web.Response:
        try:
            self.configure(await request.json())
        except (ValueError, TypeError, AttributeError) as exc:
            return web.json_response({"error": str(exc)}, status=400)
        return web.json_response(asdict(self.config))

    async def _sim_inventory(self, _request: web.Request) -> web.Response:
        return web.json_response(self.listings.snapshot())

    async def _sim_cancellations(self, _request: web.Request) -> web.Response:
        return web.json_response(self.cancellations)

    async def _sim_create(self, request: web.Request) -> web.Response:
        """``{"count": n, "status": ...}`` generates orders; ``{"items": [{"sku", "quantity"
        [, "unit_price"]}], "status", "order_id"}`` places that one order. 409 when the listings
        refuse a sale (the body says which; orders created before it are listed)."""
        ids: list[str] = []
        try:
            body = await request.json()
            status = body.get("status", "Unshipped")
            if "items" in body:
                ids.append(self.add_order(status, lines=_explicit_lines(body["items"]),
                                          order_id=body.get("order_id")))
            else:
                for _ in range(int(body.get("count", 1))):
                    ids.append(self.add_order(status))
        except SaleRefused as exc:
            return web.json_response({"error": f"sale refused: {exc}", "AmazonOrderIds": ids,
                                      "refused": 1}, status=409)  # fmt: skip
        except (ValueError, TypeError, AttributeError, KeyError) as exc:
            return web.json_response({"error": str(exc)}, status=400)
        return web.json_response({"AmazonOrderIds": ids}, status=201)

    async def _sim_update(self, request: web.Request) -> web.Response:
        order_id = request.match_info["orderId"]
        if order_id not in self.records:
            return web.json_response({"error": f"no order {order_id}"}, status=404)
        try:
            body = await request.json()
            self.update_order(order_id, status=str(body.get("OrderStatus")))
        except (ValueError, AttributeError) as exc:
            return web.json_response({"error": str(exc)}, status=400)
        return web.json_response(visible(self.records[order_id])[0])



def _explicit_lines(items: Any) -> list[JSON]:
    if not isinstance(items, list) or not items:
        raise ValueError("items must be a non-empty list of {sku, quantity[, unit_price]}")
    lines = []
    for item in items:
        quantity = item["quantity"]
        if isinstance(quantity, bool) or not isinstance(quantity, int) or quantity < 1:
            raise ValueError(f"quantity must be an integer >= 1, got {quantity!r}")
        lines.append({"sku": str(item["sku"]), "quantity": quantity, "title": str(item["sku"]),
                      "unit_price": str(item.get("unit_price", "10.00"))})  # fmt: skip
    return lines


def _items_offset(token: str | None, order_id: str) -> int:
    if not token:
        return 0
    try:
        owner, offset = base64.urlsafe_b64decode(token.encode()).decode().split("|")
        if owner == order_id and int(offset) >= 0:
            return int(offset)
    except (ValueError, binascii.Error):
        pass
    raise InvalidInput(f"Invalid NextToken for order {order_id}: {token[:40]!r}")


__all__ = [
    "AWAITING_PAYMENT",
    "AmazonSimConfig",
    "AmazonSimulator",
    "BUYER_CANCELLABLE",
    "CONFIRM_SHIPMENT",
    "ORDER_STATUSES",
    "SaleRefused",
    "USAGE_PLANS",
]
