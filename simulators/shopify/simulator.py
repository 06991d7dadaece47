"""A Shopify-like marketplace: an ``orders/create`` webhook sender and a slice of the Admin REST API.

What it mirrors (see Shopify's webhook and REST docs):

* Webhook deliveries POST the bare order JSON with ``X-Shopify-Topic``, ``X-Shopify-Hmac-Sha256``
  (base64 HMAC-SHA256 of the raw body with the app secret), ``X-Shopify-Shop-Domain``,
  ``X-Shopify-API-Version``, ``X-Shopify-Webhook-Id`` (one per delivery, kept by retries),
  ``X-Shopify-Event-Id`` and ``X-Shopify-Triggered-At``.
* Shopify waits 1 s to connect and 5 s in total, and retries any non-2xx answer with backoff.
* The Admin API authenticates with ``X-Shopify-Access-Token`` and meters calls with a leaky bucket
  (40 calls, leaking 2/s), reported in ``X-Shopify-Shop-Api-Call-Limit``; full bucket -> 429.
* Admin REST served: ``orders.json``, ``orders/{id}.json``, ``locations.json`` (one active
  location), ``products.json`` (one product per SKU, its variant carrying ``sku`` and
  ``inventory_item_id``; ``limit``/``since_id`` and a ``Link: <...page_info=...>; rel="next"``
  header), ``inventory_levels.json`` and ``inventory_levels/set.json`` (422 ``{"errors": [...]}``
  for an unknown location or item or a bad ``available``), ``orders/{id}/cancel.json`` (422
  ``{"error": "Order has already been cancelled"}`` on a repeat; the remaining units of every line
  become a refund with ``restock_type: cancel``, as Shopify refunds a cancelled order) and
  ``orders/{id}/refunds.json`` (GET lists, POST creates; refunding more than is left is a 422).
* After the sale (REST 2021-10 shapes): ``orders/{id}/fulfillments.json`` (GET lists; POST
  ``{"fulfillment": {"location_id", "tracking_number"|"tracking_numbers", "tracking_company",
  "tracking_urls"?, "line_items": [{"id", "quantity"}]?, "notify_customer"}}`` answers 201 with the
  fulfillment, status ``success``; no ``line_items`` fulfils everything left; more than a line has
  left to fulfil, an unknown line, another location or a cancelled order is a 422). The order's
  ``fulfillment_status`` becomes ``partial`` / ``fulfilled``, each line's ``fulfillable_quantity``
  drops. Known carriers get a ``tracking_url`` when none is given (TRACKING_URLS). Refunds take
  ``restock_type`` ``cancel`` (unfulfilled units only), ``return`` (fulfilled units only, not yet
  returned) or ``no_restock``, and ``transactions: [{"kind": "refund", "amount", "gateway"}]``:
  money back makes ``financial_status`` ``partially_refunded``, or ``refunded`` once the refunds
  reach ``total_price`` (more than that is a 422). A fulfilled order cannot be cancelled (422).
* The shop's own side (the merchant in Shopify admin, or the buyer): ``cancel_by_buyer(order_id)``
  / ``POST /_sim/orders/{id}/buyer-cancel`` cancels an order nothing of which was fulfilled yet
  (cancel-type refunds for every unit, ``cancel_reason: customer``, the money refunded if it was
  captured, otherwise ``financial_status: voided``) and sends an ``orders/cancelled`` webhook
  (body: the order); ``refund_by_merchant(order_id, lines, amount)`` / ``POST
  /_sim/orders/{id}/merchant-refund`` (``{"lines": [{"line_item_id", "quantity"}], "amount",
  "restock_type"?}``) creates a refund and sends ``refunds/create`` (body: the refund). Webhooks of
  other topics go to ``webhook_url`` with its topic (the last two path segments) replaced, e.g.
  ``.../webhooks/shopify/orders/create`` -> ``.../webhooks/shopify/orders/cancelled``; they are
  signed and retried like order webhooks. ``GET /_sim/buyer-cancellations`` lists the former.
* Order edits (the merchant edits an open order in Shopify admin): ``edit_order(order_id,
  line_id, quantity)`` / ``POST /_sim/orders/{id}/edit`` (``{"line_item_id", "quantity"}``)
  reduces a line's ``current_quantity`` (0 removes it; ``quantity`` stays what was ordered, the
  ``current_*`` totals follow, ``orders.edit_quantity``), moves ``updated_at`` on and
  sends the ``orders/updated`` webhook (body: the order), signed and retried as Shopify does.
  ``edit_rate`` is the share of good orders the merchant edits ``edit_delay_s`` after their
  ``orders/create`` was accepted (one unit less of a line with several, else one line of
  several removed); ``GET /_sim/edits`` lists the edits.

Stock (``listings``, see simulators/listings.py): the seller sets it through ``inventory_levels``;
every good order the sender generates is a sale. A refused sale is a buyer who saw "out of stock"
and left: no webhook is sent, ``orders_refused`` counts it, and the event still counts towards
``send_orders(count)`` (so a sold-out catalogue cannot stall a run). Malformed and unmappable events
are not orders and take no stock. Cancellations and cancel-type refunds are recorded as seller
cancellations (``GET /_sim/cancellations``) and in ``listings.seller_cancelled``; they do not put
units back on the listing (the seller's next absolute quantity does).

Test-double extras: paced load generation, duplicate / malformed / unmappable injection, delivery
statistics and per-order send times (for end-to-end latency and loss checks); ``PUT /_sim/config``
(generated SKUs, ``max_quantity``, ``listing_mode``, the call-limit bucket, rates),
``POST /_sim/orders`` (``{"lines": [{"sku", "quantity"}]}`` sends one order with exactly those
lines, ``{"count": n}`` sends n generated events), ``GET /_sim/inventory``, ``GET /_sim/cancellations``.

Modules of this package: ``simulator`` (the server: Admin REST and the shop's own actions),
``webhooks`` (the sending side, a mixin of the simulator), ``config``, ``orders`` (order resources
and what happens to them).
"""

from __future__ import annotations

import asyncio
import base64
import time
from collections import deque
from dataclasses import asdict
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from aiohttp import web

from retail_sync.simulators.bucket import Bucket
from retail_sync.simulators.listings import Listings
from retail_sync.simulators.server import Handler, SimulatorServer
from retail_sync.simulators.shopify.config import ShopifySimConfig
from retail_sync.simulators.shopify.orders import (
    CANCEL_REASONS,
    DEFAULT_SKUS,
    RESTOCK_TYPES,
    ShopifyOrderFactory,
    add_fulfillment,
    add_refund,
    catalog_entry,
    catalog_ids,
    edit_quantity,
    fulfillable_quantities,
    fulfilled_quantities,
    mark_cancelled,
    money,
    refunded_amount,
    refunded_by_type,
    remaining_quantities,
    shop_time,
)
from retail_sync.simulators.shopify.webhooks import (
    CANCELLED_TOPIC,
    REFUND_TOPIC,
    UPDATED_TOPIC,
    Delivery,
    SenderStats,
    WebhookSender,
    sign,
)

JSON = dict[str, Any]
#: tracking_company -> the tracking page Shopify links when the fulfillment gives no URL
TRACKING_URLS = {
    "UPS": "https://www.ups.com/track?tracknum={}",
    "USPS": "https://tools.usps.com/go/TrackConfirmAction?tLabels={}",
    "FedEx": "https://www.fedex.com/fedextrack/?trknbr={}",
    "DHL Express": "https://www.dhl.com/en/express/tracking.html?AWB={}",
}
UNAUTHORIZED = "[API] Invalid API key or access token (unrecognized login or wrong password)"
THROTTLED = (
    "Exceeded 2 calls per second for api client. "
    "Reduce request rates to resume uninterrupted service."
)



class ShopifySimulator(WebhookSender, SimulatorServer):
    """Sends webhooks to ``config.webhook_url`` and serves the orders it created over Admin REST."""

    def __init__(self, config: ShopifySimConfig, factory: ShopifyOrderFactory | None = None):
        self.config = config
        self.factory = factory or ShopifyOrderFactory(config.seed, config.shop_domain)
        self.rng = self.factory.rng
        self.listings = Listings()
        self.cancellations: list[JSON] = []  # seller cancellations, oldest first
        self.catalog: dict[str, JSON] = {}  # sku -> product resource (only grows)
        self._next_refund_id = 1_000_000_000
        self._next_fulfillment_id = 4_000_000_000
        self.buyer_cancellations: list[JSON] = []  # orders the buyer cancelled, oldest first
        self.edits: list[JSON] = []  # order edits: {order_id, line_item_id, sku, before, after, at}
        self.orders: dict[str, JSON] = {}  # order id -> order resource, good orders only
        self.first_sent_at: dict[str, float] = {}  # order id -> time.time() of first attempt
        self._accepted: set[str] = set()
        self._stats = SenderStats()
        self._stop = asyncio.Event()
        self._bucket = Bucket.leaky()
        self.admin_calls: deque[float] = deque(maxlen=100_000)  # when each admitted Admin call came
        self.set_config({})

    # --- configuration and catalogue ---------------------------------------------------------

    def set_config(self, changes: JSON) -> ShopifySimConfig:
        """Apply ``changes`` (as ``PUT /_sim/config``) to the config, factory, listings, bucket."""
        cfg = self.config = self.config.updated(changes)
        if "skus" in changes or cfg.skus is not None:
            self.factory.skus = list(cfg.skus or DEFAULT_SKUS)
        self.factory.max_quantity = cfg.max_quantity
        self.listings.mode = "allow" if cfg.listing_mode == "allow" else "refuse"
        self._bucket.reshape(cfg.api_leak_per_s, cfg.api_bucket_capacity)
        for sku in [*DEFAULT_SKUS, *self.factory.skus, *cfg.extra_skus]:
            self._ensure_product(sku)
        return cfg

    def _ensure_product(self, sku: str) -> JSON:
        if sku not in self.catalog:
            ids = catalog_ids(sku)
            title, variant, price = catalog_entry(sku)
            self.catalog[sku] = {
                "id": ids["product_id"],
                "title": title,
                "status": "active",
                "variants": [{
                    "id": ids["variant_id"], "product_id": ids["product_id"], "title": variant,
                    "sku": sku, "price": price, "inventory_item_id": ids["inventory_item_id"],
                    "inventory_management": "shopify", "inventory_policy": "deny",
                }],
            }
        return self.catalog[sku]

    def _product(self, sku: str) -> JSON:
        """The product resource as served now (stock and policy from the listings)."""
        product = self._ensure_product(sku)
        variant = product["variants"][0]
        policy = "continue" if self.listings.mode == "allow" else "deny"
        quantity = self.listings.quantity(sku)
        return {**product, "variants": [{
            **variant, "inventory_quantity": quantity or 0, "inventory_policy": policy,
        }]}

    def _sku_of_item(self, inventory_item_id: int) -> str | None:
        for sku, product in self.catalog.items():
            if product["variants"][0]["inventory_item_id"] == inventory_item_id:
                return sku
        return None

    # --- Admin REST API --------------------------------------------------------------------

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._admin_guard])
        admin = "/admin/api/{version}"
        app.router.add_get(f"{admin}/orders.json", self._list_orders)
        app.router.add_get(f"{admin}/orders/{{order_id}}.json", self._get_order)
        app.router.add_post(f"{admin}/orders/{{order_id}}/cancel.json", self._cancel_order)
        app.router.add_get(f"{admin}/orders/{{order_id}}/refunds.json", self._list_refunds)
        app.router.add_post(f"{admin}/orders/{{order_id}}/refunds.json", self._create_refund)
        app.router.add_get(f"{admin}/orders/{{order_id}}/fulfillments.json", self._list_fulfillments)
        app.router.add_post(f"{admin}/orders/{{order_id}}/fulfillments.json", self._create_fulfillment)
        app.router.add_get(f"{admin}/locations.json", self._locations)
        app.router.add_get(f"{admin}/products.json", self._products)
        app.router.add_get(f"{admin}/inventory_levels.json", self._inventory_levels)
        app.router.add_post(f"{admin}/inventory_levels/set.json", self._set_inventory_level)
        app.router.add_get("/_sim/stats", self._sim_stats)
        app.router.add_put("/_sim/config", self._sim_config)
        app.router.add_post("/_sim/orders", self._sim_orders)
        app.router.add_get("/_sim/inventory", self._sim_inventory)
        app.router.add_get("/_sim/cancellations", self._sim_cancellations)
        app.router.add_get("/_sim/buyer-cancellations", self._sim_buyer_cancellations)
        app.router.add_post("/_sim/orders/{order_id}/buyer-cancel", self._sim_buyer_cancel)
        app.router.add_post("/_sim/orders/{order_id}/merchant-refund", self._sim_merchant_refund)
        app.router.add_post("/_sim/orders/{order_id}/edit", self._sim_edit)
        app.router.add_get("/_sim/edits", self._sim_edits)
        return app

    @web.middleware
    async def _admin_guard(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Access-token auth and the leaky-bucket call limit on every /admin response."""
        if not request.path.startswith("/admin/"):
            return await handler(request)
        headers: dict[str, str] = {}
        if request.headers.get("X-Shopify-Access-Token") != self.config.access_token:
            response: web.StreamResponse = web.json_response({"errors": UNAUTHORIZED}, status=401)
        elif not self._bucket.take():
            response = web.json_response({"errors": THROTTLED}, status=429)
            headers["Retry-After"] = "2.0"
            self._stats.api_throttled_429 += 1
        else:
            self.admin_calls.append(time.monotonic())
            response = await handler(request)
        response.headers.update({**headers, "X-Shopify-Shop-Api-Call-Limit": self._bucket.header()})
        return response

    async def _list_orders(self, request: web.Request) -> web.Response:
        query = request.query
        try:
            limit = min(250, max(1, int(query.get("limit", "50"))))
            since_id = int(query.get("since_id", "0"))
            ids = {i.strip() for i in query["ids"].split(",")} if "ids" in query else None
        except ValueError:
            return web.json_response({"errors": "Bad Request"}, status=400)
        if query.get("status", "open") not in ("open", "any"):
            return web.json_response({"orders": []})
        orders = sorted(self.orders.values(), key=lambda o: o["id"])
        hits = [o for o in orders if o["id"] > since_id and (ids is None or str(o["id"]) in ids)]
        return web.json_response({"orders": hits[:limit]})

    async def _get_order(self, request: web.Request) -> web.Response:
        order = self.orders.get(request.match_info["order_id"])
        if order is None:
            return web.json_response({"errors": "Not Found"}, status=404)
        return web.json_response({"order": order})

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
        """``{"lines": [{"sku", "quantity"}]}``: one order with those lines; ``{"count": n}``:
        n generated events. Answers with what was created (or refused)."""
        try:
            body = await request.json()
            if "lines" in body:
                lines = [(str(li["sku"]), int(li["quantity"])) for li in body["lines"]]
                if not lines or any(q < 1 for _, q in lines):
                    raise ValueError("lines need a sku and a quantity >= 1")
            else:
                count = int(body["count"])
        except (ValueError, TypeError, KeyError) as exc:
            return web.json_response({"error": f"bad request: {exc}"}, status=400)
        if "lines" in body:
            order = await self.send_order(lines)
            if order is None:
                return web.json_response({"refused": True, "order": None})
            return web.json_response({"refused": False, "order": order,
                                      "delivered": str(order["id"]) in self._accepted})
        return web.json_response(await self.send_orders(count=count))

    async def _sim_inventory(self, _request: web.Request) -> web.Response:
        return web.json_response(self.listings.snapshot())

    async def _sim_cancellations(self, _request: web.Request) -> web.Response:
        return web.json_response(self.cancellations)

    # --- Admin REST: locations, products, inventory levels -------------------------------------

    def _location(self) -> JSON:
        return {
            "id": self.config.location_id, "name": "Main warehouse", "active": True,
            "address1": "126 York St.", "city": "Ottawa", "province_code": "ON",
            "country_code": "CA", "zip": "K1N 5T5", "legacy": False,
            "admin_graphql_api_id": f"gid://shopify/Location/{self.config.location_id}",
        }

    async def _locations(self, _request: web.Request) -> web.Response:
        return web.json_response({"locations": [self._location()]})

    async def _products(self, request: web.Request) -> web.Response:
        query = request.query
        try:
            limit = min(250, max(1, int(query.get("limit", "50"))))
            since = query.get("since_id", "0")
            if "page_info" in query:
                since = base64.urlsafe_b64decode(query["page_info"].encode()).decode()
            since_id = int(since)
        except ValueError:
            return web.json_response({"errors": "Bad Request"}, status=400)
        products = sorted((self._product(s) for s in self.catalog), key=lambda p: p["id"])
        hits = [p for p in products if p["id"] > since_id]
        page = hits[:limit]
        response = web.json_response({"products": page})
        if len(hits) > limit:
            cursor = base64.urlsafe_b64encode(str(page[-1]["id"]).encode()).decode()
            url = request.url.with_query({"limit": str(limit), "page_info": cursor})
            response.headers["Link"] = f'<{url}>; rel="next"'
        return response

    def _level(self, sku: str, inventory_item_id: int) -> JSON:
        listing = self.listings.items.get(sku)
        return {
            "inventory_item_id": inventory_item_id,
            "location_id": self.config.location_id,
            "available": None if listing is None else listing.quantity,
            "updated_at": None if listing is None else listing.updated_at,
        }

    async def _inventory_levels(self, request: web.Request) -> web.Response:
        try:
            raw = request.query.get("inventory_item_ids", "")
            wanted = {int(i) for i in raw.split(",") if i.strip()}
        except ValueError:
            return web.json_response({"errors": "Bad Request"}, status=400)
        if not wanted and "location_ids" not in request.query:
            return _unprocessable(["inventory_item_ids or location_ids is required"])
        levels = [
            self._level(sku, p["variants"][0]["inventory_item_id"])
            for sku, p in sorted(self.catalog.items())
            if not wanted or p["variants"][0]["inventory_item_id"] in wanted
        ]
        return web.json_response({"inventory_levels": levels})

    async def _set_inventory_level(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
            location_id, item_id = body["location_id"], body["inventory_item_id"]
            available = body["available"]
        except (ValueError, TypeError, KeyError):
            return _unprocessable(["location_id, inventory_item_id and available are required"])
        if str(location_id) != str(self.config.location_id):
            return _unprocessable(["Location not found"])
        sku = self._sku_of_item(int(item_id)) if str(item_id).isdigit() else None
        if sku is None:
            return _unprocessable(["Inventory item does not exist"])
        try:
            self.listings.set(sku, available)
        except ValueError:
            return _unprocessable({"available": ["must be a whole number of at least 0"]})
        return web.json_response({"inventory_level": self._level(sku, int(item_id))})

    # --- Admin REST: cancellation and refunds ------------------------------------------------

    def _record_cancellations(self, order: JSON, items: list[tuple[int, int, str]], reason: str) -> None:
        by_id = {li["id"]: li for li in order["line_items"]}
        at = datetime.now(UTC).isoformat()
        for line_id, qty, kind in items:
            if kind != "cancel":
                continue
            sku = by_id[line_id]["sku"]
            self.listings.seller_cancelled(sku, qty)
            self.cancellations.append({"order_id": str(order["id"]), "line_id": str(line_id),
                                       "sku": sku, "quantity": qty, "reason": reason, "at": at})

    def _refund(self, order: JSON, items: list[tuple[int, int, str]], note: str | None,
                reason: str, transactions: list[JSON] | None = None, *, by_seller: bool = True) -> JSON:
        self._next_refund_id += 1000
        refund = add_refund(order, items, note=note, refund_id=self._next_refund_id,
                            location_id=self.config.location_id, transactions=transactions)
        if by_seller:
            self._record_cancellations(order, items, reason)
        return refund

    def _order_or_404(self, request: web.Request) -> JSON | web.Response:
        order = self.orders.get(request.match_info["order_id"])
        return web.json_response({"errors": "Not Found"}, status=404) if order is None else order

    async def _cancel_order(self, request: web.Request) -> web.Response:
        order = self._order_or_404(request)
        if isinstance(order, web.Response):
            return order
        try:
            body = await request.json() if request.can_read_body else {}
        except ValueError:
            body = None
        if not isinstance(body, dict):
            return web.json_response({"errors": "Bad Request"}, status=400)
        reason = body.get("reason", "other")
        if reason not in CANCEL_REASONS:
            return _unprocessable({"reason": ["is not included in the list"]})
        if order["cancelled_at"] is not None:
            return web.json_response({"error": "Order has already been cancelled"}, status=422)
        if any(fulfilled_quantities(order).values()):
            return web.json_response({"error": "Cannot cancel a fulfilled order"}, status=422)
        left = [(i, q, "cancel") for i, q in remaining_quantities(order).items() if q > 0]
        if left:
            self._refund(order, left, None, reason)
        mark_cancelled(order, reason)
        return web.json_response({"order": order})

    async def _list_refunds(self, request: web.Request) -> web.Response:
        order = self._order_or_404(request)
        if isinstance(order, web.Response):
            return order
        return web.json_response({"refunds": order.get("refunds", [])})

    async def _create_refund(self, request: web.Request) -> web.Response:
        order = self._order_or_404(request)
        if isinstance(order, web.Response):
            return order
        try:
            refund = (await request.json())["refund"]
            items = [(int(i["line_item_id"]), int(i["quantity"]), str(i.get("restock_type", "no_restock")))
                     for i in refund.get("refund_line_items", [])]
            transactions = _transactions(refund.get("transactions", []))
        except (ValueError, TypeError, KeyError, AttributeError, ArithmeticError):
            return web.json_response({"errors": "Bad Request"}, status=400)
        problem = _refund_problem(order, items)
        if problem is not None:
            return _unprocessable({"refund_line_items": [problem]})
        problem = _money_problem(order, transactions)
        if problem is not None:
            return _unprocessable({"transactions": [problem]})
        note = refund.get("note")
        created = self._refund(order, items, note, str(note or "refund"), transactions)
        return web.json_response({"refund": created}, status=201)

    # --- Admin REST: fulfillments --------------------------------------------------------------

    async def _list_fulfillments(self, request: web.Request) -> web.Response:
        order = self._order_or_404(request)
        if isinstance(order, web.Response):
            return order
        return web.json_response({"fulfillments": order.get("fulfillments", [])})

    async def _create_fulfillment(self, request: web.Request) -> web.Response:
        order = self._order_or_404(request)
        if isinstance(order, web.Response):
            return order
        try:
            body = (await request.json())["fulfillment"]
            if not isinstance(body, dict):
                raise TypeError("fulfillment must be an object")
            items = _fulfillment_items(order, body.get("line_items"))
        except (ValueError, TypeError, KeyError, AttributeError):
            return web.json_response({"errors": "Bad Request"}, status=400)
        problem = self._fulfillment_problem(order, body, items)
        if problem is not None:
            return _unprocessable({"base": [problem]})
        numbers = [str(n) for n in body.get("tracking_numbers") or
                   ([body["tracking_number"]] if body.get("tracking_number") else [])]
        company = body.get("tracking_company")
        urls = [str(u) for u in body.get("tracking_urls") or
                ([body["tracking_url"]] if body.get("tracking_url") else [])]
        if not urls and company in TRACKING_URLS:
            urls = [TRACKING_URLS[company].format(n) for n in numbers]
        self._next_fulfillment_id += 1000
        created = add_fulfillment(order, items, fulfillment_id=self._next_fulfillment_id,
                                  location_id=self.config.location_id, tracking_company=company,
                                  tracking_numbers=numbers, tracking_urls=urls)
        return web.json_response({"fulfillment": created}, status=201)

    def _fulfillment_problem(self, order: JSON, body: JSON, items: list[tuple[int, int]]) -> str | None:
        if order["cancelled_at"] is not None:
            return "Order is cancelled and cannot be fulfilled"
        if str(body.get("location_id", self.config.location_id)) != str(self.config.location_id):
            return "Location not found"
        if not items:
            return "Line items are already fulfilled"
        left = fulfillable_quantities(order)
        asked: dict[int, int] = {}
        for line_id, qty in items:
            if line_id not in left:
                return f"Line item {line_id} does not belong to this order"
            if qty < 1:
                return f"Line item {line_id}: quantity must be greater than 0"
            asked[line_id] = asked.get(line_id, 0) + qty
        over = [i for i, q in asked.items() if q > left[i]]
        if over:
            return f"Invalid fulfillment quantity for line item {over[0]}: exceeds fulfillable quantity"
        return None

    # --- the shop's side: buyer cancellations and merchant refunds -----------------------------

    async def cancel_by_buyer(self, order_id: str) -> JSON:
        """The buyer cancels (the merchant does it in Shopify admin, reason ``customer``) an order
        nothing of which was fulfilled; then the ``orders/cancelled`` webhook is sent (retried
        like any other). Returns the order. KeyError for an unknown order, ValueError when it is
        already cancelled or (partly) fulfilled."""
        order = self.orders[str(order_id)]
        if order["cancelled_at"] is not None:
            raise ValueError(f"order {order_id} has already been cancelled")
        if any(fulfilled_quantities(order).values()):
            raise ValueError(f"order {order_id} is (partly) fulfilled and cannot be cancelled")
        left = [(i, q, "cancel") for i, q in remaining_quantities(order).items() if q > 0]
        captured = order["financial_status"] in ("paid", "partially_paid", "partially_refunded")
        owed = Decimal(order["total_price"]) - refunded_amount(order)
        money_back = [{"kind": "refund", "amount": money(owed)}] if captured and owed > 0 else []
        if left or money_back:
            self._refund(order, left, "Order cancelled by the customer", "customer", money_back,
                         by_seller=False)
        if not captured:
            order["financial_status"] = "voided"
        mark_cancelled(order, "customer")
        self.buyer_cancellations.append({"order_id": str(order["id"]), "at": order["cancelled_at"]})
        await self.send_event(CANCELLED_TOPIC, order)
        return order

    async def edit_order(self, order_id: str, line_item_id: int, quantity: int) -> JSON:
        """The merchant edits the order: line ``line_item_id`` now wants ``quantity`` units (0
        removes it); then the ``orders/updated`` webhook is sent. Returns the order. KeyError for
        an unknown order or line, ValueError when Shopify would refuse the edit (a cancelled or
        closed order, more units than the line has now, fewer than were fulfilled)."""
        order = self.orders[str(order_id)]
        line = next((li for li in order["line_items"] if li["id"] == int(line_item_id)), None)
        if line is None:
            raise KeyError(line_item_id)
        if order["cancelled_at"] is not None or order.get("closed_at") is not None:
            raise ValueError(f"order {order_id} is cancelled or closed and cannot be edited")
        done = fulfilled_quantities(order).get(line["id"], 0)
        if not done <= quantity <= line["current_quantity"] or quantity == line["current_quantity"]:
            raise ValueError(f"line {line['id']} has {line['current_quantity']} unit(s), {done} "
                             f"fulfilled: an edit can make it {done}..{line['current_quantity'] - 1}")
        before, previous = line["current_quantity"], order["updated_at"]
        edit_quantity(order, line["id"], quantity)
        if order["updated_at"] <= previous:  # same second: Shopify's updated_at still moves on
            later = datetime.fromisoformat(previous).timestamp() + 1
            order["updated_at"] = shop_time(later)
        self.edits.append({"order_id": str(order["id"]), "line_item_id": line["id"],
                           "sku": line.get("sku"), "before": before, "after": quantity,
                           "at": order["updated_at"]})
        await self.send_event(UPDATED_TOPIC, order)
        return order

    async def refund_by_merchant(
        self, order_id: str, lines: list[tuple[int, int]], amount: str | Decimal, *,
        restock_type: str = "return", note: str | None = None,
    ) -> JSON:
        """The merchant refunds ``lines`` ``[(line_item_id, quantity)]`` and ``amount`` in Shopify
        admin; the ``refunds/create`` webhook (body: the refund) is sent. Returns the refund.
        KeyError for an unknown order, ValueError for what the Admin API would refuse."""
        order = self.orders[str(order_id)]
        items = [(int(i), int(q), restock_type) for i, q in lines]
        transactions = _transactions([{"kind": "refund", "amount": str(amount)}])
        problem = _refund_problem(order, items) or _money_problem(order, transactions)
        if problem is not None:
            raise ValueError(problem)
        refund = self._refund(order, items, note, note or "refund", transactions, by_seller=False)
        await self.send_event(REFUND_TOPIC, refund)
        return refund

    async def _sim_buyer_cancel(self, request: web.Request) -> web.Response:
        try:
            order = await self.cancel_by_buyer(request.match_info["order_id"])
        except KeyError:
            return web.json_response({"error": "no such order"}, status=404)
        except ValueError as exc:
            return web.json_response({"error": str(exc)}, status=422)
        return web.json_response({"order": order})

    async def _sim_merchant_refund(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
            lines = [(int(li["line_item_id"]), int(li["quantity"])) for li in body.get("lines", [])]
            amount, restock_type = str(body["amount"]), str(body.get("restock_type", "return"))
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            return web.json_response({"error": f"bad request: {exc}"}, status=400)
        try:
            refund = await self.refund_by_merchant(request.match_info["order_id"], lines, amount,
                                                   restock_type=restock_type, note=body.get("note"))
        except KeyError:
            return web.json_response({"error": "no such order"}, status=404)
        except (ValueError, ArithmeticError) as exc:
            return web.json_response({"error": str(exc)}, status=422)
        return web.json_response({"refund": refund}, status=201)

    async def _sim_edit(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
            line_id, quantity = int(body["line_item_id"]), int(body["quantity"])
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            return web.json_response({"error": f"bad request: {exc}"}, status=400)
        try:
            order = await self.edit_order(request.match_info["order_id"], line_id, quantity)
        except KeyError:
            return web.json_response({"error": "no such order or line"}, status=404)
        except ValueError as exc:
            return web.json_response({"error": str(exc)}, status=422)
        return web.json_response({"order": order})

    async def _sim_edits(self, _request: web.Request) -> web.Response:
        return web.json_response(self.edits)

    async def _sim_buyer_cancellations(self, _request: web.Request) -> web.Response:
        return web.json_response(self.buyer_cancellations)

    async def stop(self) -> None:
        self.stop_sending()
        await super().stop()


def _unprocessable(errors: Any) -> web.Response:
    return web.json_response({"errors": errors}, status=422)


def _refund_problem(order: JSON, items: list[tuple[int, int, str]]) -> str | None:
    """Why Shopify would refuse refunding ``items`` of ``order``, or None: more than is left of
    a line, ``cancel`` beyond its unfulfilled units, ``return`` beyond its fulfilled units not
    yet returned."""
    left = remaining_quantities(order)
    asked: dict[tuple[int, str], int] = {}
    for line_id, qty, kind in items:
        if line_id not in left:
            return f"Line item {line_id} does not belong to this order"
        if qty < 1 or kind not in RESTOCK_TYPES:
            return f"Line item {line_id}: quantity must be >= 1 and restock_type one of {RESTOCK_TYPES}"
        asked[line_id, kind] = asked.get((line_id, kind), 0) + qty
    total: dict[int, int] = {}
    for (line_id, _), qty in asked.items():
        total[line_id] = total.get(line_id, 0) + qty
    over = [i for i, q in total.items() if q > left[i]]
    if over:
        return f"Quantity cannot refund more items than were purchased (line {over[0]})"
    unshipped, shipped = fulfillable_quantities(order), fulfilled_quantities(order)
    returned = refunded_by_type(order, "return")
    for (line_id, kind), qty in asked.items():
        if kind == "cancel" and qty > unshipped[line_id]:
            return f"Line item {line_id}: cannot cancel more than {unshipped[line_id]} unfulfilled unit(s)"
        back = shipped.get(line_id, 0) - returned.get(line_id, 0)
        if kind == "return" and qty > back:
            return f"Line item {line_id}: cannot return more than the {back} fulfilled unit(s)"
    return None


def _fulfillment_items(order: JSON, raw: Any) -> list[tuple[int, int]]:
    """``[(line_item_id, quantity)]`` of a fulfillment request; none given: everything left."""
    left = fulfillable_quantities(order)
    if raw is None:
        return [(i, q) for i, q in left.items() if q > 0]
    if not isinstance(raw, list):
        raise ValueError("line_items must be a list")
    items = [(int(li["id"]), li.get("quantity")) for li in raw]
    return [(i, left.get(i, 0) if q is None else int(q)) for i, q in items]  # no quantity: all left


def _transactions(raw: Any) -> list[JSON]:
    """The refund transactions of a request (ValueError / ArithmeticError when malformed)."""
    if not isinstance(raw, list):
        raise ValueError("transactions must be a list")
    parsed = []
    for t in raw:
        amount = Decimal(str(t["amount"]))
        if not amount.is_finite():
            raise ValueError("amount must be a number")
        parsed.append({"kind": str(t.get("kind", "refund")), "amount": amount,
                       "gateway": t.get("gateway"), "parent_id": t.get("parent_id")})
    return parsed


def _money_problem(order: JSON, transactions: list[JSON]) -> str | None:
    """Why Shopify would refuse these refund transactions, or None."""
    if any(t["kind"] != "refund" or t["amount"] <= 0 for t in transactions):
        return "kind must be refund and amount greater than 0"
    if order.get("financial_status") == "voided" and transactions:
        return "Order has no captured payment to refund"
    asked = sum((t["amount"] for t in transactions), Decimal(0))
    available = Decimal(order["total_price"]) - refunded_amount(order)
    if asked > available:
        return f"Refund amount {money(asked)} exceeds the {money(available)} left to refund"
    return None


async def run_shopify_simulator(
    config: ShopifySimConfig, host: str = "127.0.0.1", port: int = 0
) -> ShopifySimulator:
    """Start the Admin API server and return the simulator (call ``send_orders`` to load)."""
    simulator = ShopifySimulator(config)
    await simulator.start(host, port)
    return simulator


__all__ = [
    "Delivery",
    "ShopifyOrderFactory",
    "ShopifySimConfig",
    "ShopifySimulator",
    "run_shopify_simulator",
    "sign",
]
