"""A Shopify-like marketplace: an ``orders/create`` webhook sender and a read-only Admin REST API.

What it mirrors (see Shopify's webhook and REST docs):

* Webhook deliveries POST the bare order JSON with ``X-Shopify-Topic``, ``X-Shopify-Hmac-Sha256``
  (base64 HMAC-SHA256 of the raw body with the app secret), ``X-Shopify-Shop-Domain``,
  ``X-Shopify-API-Version``, ``X-Shopify-Webhook-Id`` (one per delivery, kept by retries),
  ``X-Shopify-Event-Id`` and ``X-Shopify-Triggered-At``.
* Shopify waits 1 s to connect and 5 s in total, and retries any non-2xx answer with backoff.
* The Admin API authenticates with ``X-Shopify-Access-Token`` and meters calls with a leaky bucket
  (40 calls, leaking 2/s), reported in ``X-Shopify-Shop-Api-Call-Limit``; full bucket -> 429.

Test-double extras: paced load generation, duplicate / malformed / unmappable injection, delivery
statistics and per-order send times (for end-to-end latency and loss checks).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import math
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import aiohttp
from aiohttp import web

from simulators.server import SimulatorServer
from simulators.shopify_orders import ShopifyOrderFactory

JSON = dict[str, Any]
TOPIC = "orders/create"
GOOD, MALFORMED, UNMAPPABLE, DUPLICATE = "good", "malformed", "unmappable", "duplicate"
UNAUTHORIZED = "[API] Invalid API key or access token (unrecognized login or wrong password)"
THROTTLED = (
    "Exceeded 2 calls per second for api client. "
    "Reduce request rates to resume uninterrupted service."
)


def sign(body: bytes, secret: str) -> str:
    """``X-Shopify-Hmac-Sha256``: base64 of HMAC-SHA256 over the raw body, keyed by the secret."""
    digest = hmac.new(secret.encode(), body, hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


@dataclass
class ShopifySimConfig:
    webhook_url: str
    secret: str
    shop_domain: str = "retail-sync-demo.myshopify.com"
    api_version: str = "2024-04"
    rate_per_s: float = 10
    duplicate_rate: float = 0.0
    malformed_rate: float = 0.0
    unmappable_rate: float = 0.0
    max_attempts: int = 5  # 1 + retries
    retry_backoff_s: float = 0.5  # doubled after every failed attempt
    request_timeout_s: float = 5.0  # Shopify's total timeout
    concurrency: int = 32
    seed: int | None = None
    access_token: str = "shpat_demo"  # noqa: S105 - demo credential of a simulator


@dataclass(frozen=True)
class Delivery:
    """One webhook delivery: retries and duplicate redeliveries reuse it unchanged."""

    kind: str
    body: bytes
    headers: dict[str, str]
    order_id: str | None  # only for good orders

    @property
    def webhook_id(self) -> str:
        return self.headers["X-Shopify-Webhook-Id"]


@dataclass
class SenderStats:
    orders_generated: int = 0
    deliveries_attempted: int = 0
    delivered_2xx: int = 0
    retries: int = 0
    duplicates_sent: int = 0
    malformed_sent: int = 0
    unmappable_sent: int = 0
    failed_deliveries: int = 0
    status_counts: Counter[str] = field(default_factory=Counter)  # every attempt
    final_status_by_kind: dict[str, Counter[str]] = field(default_factory=dict)

    def as_dict(self) -> JSON:
        plain = {k: v for k, v in self.__dict__.items() if not isinstance(v, dict)}
        return {
            **plain,
            "status_counts": dict(self.status_counts),
            "final_status_by_kind": {k: dict(v) for k, v in self.final_status_by_kind.items()},
        }


class LeakyBucket:
    """Shopify's REST call limit: ``capacity`` calls, leaking ``leak_per_s``; clock injectable."""

    def __init__(self, capacity: int = 40, leak_per_s: float = 2.0, clock: Any = time.monotonic):
        self.capacity, self.leak_per_s, self.clock = capacity, leak_per_s, clock
        self.level = 0.0
        self._at = clock()

    def _leak(self) -> None:
        now = self.clock()
        self.level = max(0.0, self.level - (now - self._at) * self.leak_per_s)
        self._at = now

    def take(self) -> bool:
        """Admit one call if it fits in the bucket."""
        self._leak()
        if self.level + 1 > self.capacity:
            return False
        self.level += 1
        return True

    def header(self) -> str:
        return f"{min(self.capacity, math.ceil(self.level))}/{self.capacity}"


class ShopifySimulator(SimulatorServer):
    """Sends webhooks to ``config.webhook_url`` and serves the orders it created over Admin REST."""

    def __init__(self, config: ShopifySimConfig, factory: ShopifyOrderFactory | None = None):
        self.config = config
        self.factory = factory or ShopifyOrderFactory(config.seed, config.shop_domain)
        self.rng = self.factory.rng
        self.orders: dict[str, JSON] = {}  # order id -> order resource, good orders only
        self.first_sent_at: dict[str, float] = {}  # order id -> time.time() of first attempt
        self._accepted: set[str] = set()
        self._stats = SenderStats()
        self._stop = asyncio.Event()
        self._bucket = LeakyBucket()

    # --- statistics ----------------------------------------------------------------------------

    def stats(self) -> JSON:
        return {**self._stats.as_dict(), "orders_accepted": len(self._accepted)}

    def accepted_order_ids(self) -> set[str]:
        """Good orders at least one delivery of which was answered 2xx."""
        return set(self._accepted)

    def failed_order_ids(self) -> set[str]:
        return set(self.orders) - self._accepted

    def stop_sending(self) -> None:
        """Stop generating new orders; deliveries already in flight finish (with their retries)."""
        self._stop.set()

    # --- building deliveries ---------------------------------------------------------------

    def _headers(self, body: bytes) -> dict[str, str]:
        cfg = self.config
        return {
            "Content-Type": "application/json",
            "User-Agent": "Shopify-Captain-Hook",
            "X-Shopify-Topic": TOPIC,
            "X-Shopify-Hmac-Sha256": sign(body, cfg.secret),
            "X-Shopify-Shop-Domain": cfg.shop_domain,
            "X-Shopify-API-Version": cfg.api_version,
            "X-Shopify-Webhook-Id": str(uuid.uuid4()),
            "X-Shopify-Event-Id": str(uuid.uuid4()),
            "X-Shopify-Triggered-At": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
        }

    def _pick_kind(self) -> str:
        roll = self.rng.random()
        if roll < self.config.malformed_rate:
            return MALFORMED
        if roll < self.config.malformed_rate + self.config.unmappable_rate:
            return UNMAPPABLE
        return GOOD

    def next_delivery(self) -> Delivery:
        """The next event to send; good orders are registered for the Admin API and stats."""
        kind = self._pick_kind()
        if kind == MALFORMED:
            self._stats.malformed_sent += 1
            body = self.factory.malformed_body()
            return Delivery(kind, body, self._headers(body), None)
        order = self.factory.order() if kind == GOOD else self.factory.unmappable_order()
        body = json.dumps(order, separators=(",", ":")).encode()
        if kind == UNMAPPABLE:
            self._stats.unmappable_sent += 1
            return Delivery(kind, body, self._headers(body), None)
        order_id = str(order["id"])
        self.orders[order_id] = order
        self._stats.orders_generated += 1
        return Delivery(kind, body, self._headers(body), order_id)

    # --- delivering ----------------------------------------------------------------------------

    async def _attempt(self, session: aiohttp.ClientSession, delivery: Delivery) -> str:
        """One POST; returns the status code as text, or "timeout" / "connection_error"."""
        self._stats.deliveries_attempted += 1
        try:
            url = self.config.webhook_url
            async with session.post(url, data=delivery.body, headers=delivery.headers) as resp:
                await resp.read()
                outcome = str(resp.status)
        except TimeoutError:
            outcome = "timeout"
        except aiohttp.ClientError:
            outcome = "connection_error"
        self._stats.status_counts[outcome] += 1
        return outcome

    async def deliver(
        self, session: aiohttp.ClientSession, delivery: Delivery, *, duplicate: bool = False
    ) -> bool:
        """Deliver with Shopify-style retries (same webhook id); True if answered 2xx."""
        if delivery.order_id and delivery.order_id not in self.first_sent_at:
            self.first_sent_at[delivery.order_id] = time.time()
        outcome = ""
        for attempt in range(1, self.config.max_attempts + 1):
            if attempt > 1:
                self._stats.retries += 1
                await asyncio.sleep(self.config.retry_backoff_s * 2 ** (attempt - 2))
            outcome = await self._attempt(session, delivery)
            if outcome.startswith("2"):
                break
        kind = DUPLICATE if duplicate else delivery.kind
        self._stats.final_status_by_kind.setdefault(kind, Counter())[outcome] += 1
        ok = outcome.startswith("2")
        self._record_outcome(delivery, ok)
        return ok

    def _record_outcome(self, delivery: Delivery, ok: bool) -> None:
        if ok:
            self._stats.delivered_2xx += 1
            if delivery.order_id:
                self._accepted.add(delivery.order_id)
        else:
            self._stats.failed_deliveries += 1

    async def _deliver_event(
        self, session: aiohttp.ClientSession, delivery: Delivery, slots: asyncio.Semaphore
    ) -> None:
        try:
            ok = await self.deliver(session, delivery)
            if ok and self.rng.random() < self.config.duplicate_rate:
                self._stats.duplicates_sent += 1
                await self.deliver(session, delivery, duplicate=True)
        finally:
            slots.release()

    def _session(self) -> aiohttp.ClientSession:
        timeout = aiohttp.ClientTimeout(total=self.config.request_timeout_s, connect=1.0)
        connector = aiohttp.TCPConnector(limit=self.config.concurrency)
        return aiohttp.ClientSession(timeout=timeout, connector=connector)

    def _should_continue(self, sent: int, count: int | None, deadline: float | None) -> bool:
        if self._stop.is_set() or (count is not None and sent >= count):
            return False
        return deadline is None or time.monotonic() < deadline

    async def send_orders(self, count: int | None = None, duration_s: float | None = None) -> JSON:
        """Send ``count`` events (or for ``duration_s``; neither: until ``stop_sending``).

        Events are paced at ``rate_per_s`` with at most ``concurrency`` in flight; ``count``
        includes malformed and unmappable events. Returns the stats once every delivery ended.
        """
        self._stop.clear()
        start = time.monotonic()
        deadline = start + duration_s if duration_s is not None else None
        slots, tasks, sent = asyncio.Semaphore(self.config.concurrency), set(), 0
        async with self._session() as session:
            while self._should_continue(sent, count, deadline):
                await self._pace(start, sent)
                await slots.acquire()
                task = asyncio.create_task(
                    self._deliver_event(session, self.next_delivery(), slots)
                )
                tasks.add(task)
                task.add_done_callback(tasks.discard)
                sent += 1
            await asyncio.gather(*tasks)
        return self.stats()

    async def _pace(self, start: float, sent: int) -> None:
        """Sleep until event number ``sent`` is due, or until stop_sending is called."""
        delay = start + sent / self.config.rate_per_s - time.monotonic()
        if delay > 0:
            try:
                await asyncio.wait_for(self._stop.wait(), delay)
            except TimeoutError:
                pass

    # --- Admin REST API (read-only) --------------------------------------------------------

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._admin_guard])
        app.router.add_get("/admin/api/{version}/orders.json", self._list_orders)
        app.router.add_get("/admin/api/{version}/orders/{order_id}.json", self._get_order)
        app.router.add_get("/_sim/stats", self._sim_stats)
        return app

    @web.middleware
    async def _admin_guard(self, request: web.Request, handler: Any) -> web.StreamResponse:
        """Access-token auth and the leaky-bucket call limit on every /admin response."""
        if not request.path.startswith("/admin/"):
            return await handler(request)
        headers: dict[str, str] = {}
        if request.headers.get("X-Shopify-Access-Token") != self.config.access_token:
            response: web.StreamResponse = web.json_response({"errors": UNAUTHORIZED}, status=401)
        elif not self._bucket.take():
            response = web.json_response({"errors": THROTTLED}, status=429)
            headers["Retry-After"] = "2.0"
        else:
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

    async def stop(self) -> None:
        self.stop_sending()
        await super().stop()


async def run_shopify_simulator(
    config: ShopifySimConfig, host: str = "127.0.0.1", port: int = 0
) -> ShopifySimulator:
    """Start the Admin API server and return the simulator (call ``send_orders`` to load)."""
    simulator = ShopifySimulator(config)
    await simulator.start(host, port)
    return simulator


__all__ = [
    "Delivery",
    "LeakyBucket",
    "ShopifyOrderFactory",
    "ShopifySimConfig",
    "ShopifySimulator",
    "run_shopify_simulator",
    "sign",
]
