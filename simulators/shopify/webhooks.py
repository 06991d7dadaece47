"""The Shopify simulator's webhook side: signed deliveries with Shopify's retries, paced sending.

``WebhookSender`` is a mixin of ``ShopifySimulator`` (simulator.py): it builds each delivery
(``orders/create`` for generated orders, malformed and unmappable bodies at their configured
rates, other topics through ``send_event``), posts it with Shopify's retry schedule (same
webhook id on every attempt, duplicates re-sent at ``duplicate_rate``) and keeps the statistics.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import random
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import aiohttp

from retail_sync.simulators.listings import Listings
from retail_sync.simulators.shopify.config import ShopifySimConfig
from retail_sync.simulators.shopify.orders import ShopifyOrderFactory, fulfilled_quantities

JSON = dict[str, Any]
TOPIC = "orders/create"
CANCELLED_TOPIC, REFUND_TOPIC = "orders/cancelled", "refunds/create"
UPDATED_TOPIC = "orders/updated"
GOOD, MALFORMED, UNMAPPABLE, DUPLICATE = "good", "malformed", "unmappable", "duplicate"
EVENT = "event"  # a webhook of another topic (cancellation, refund): not an order delivery


def sign(body: bytes, secret: str) -> str:
    """``X-Shopify-Hmac-Sha256``: base64 of HMAC-SHA256 over the raw body, keyed by the secret."""
    digest = hmac.new(secret.encode(), body, hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


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
    orders_refused: int = 0  # good orders not created: the listing refused the sale
    unmappable_sent: int = 0
    failed_deliveries: int = 0
    api_throttled_429: int = 0  # Admin API calls refused: the call-limit bucket was full
    status_counts: Counter[str] = field(default_factory=Counter)  # every attempt
    final_status_by_kind: dict[str, Counter[str]] = field(default_factory=dict)

    def as_dict(self) -> JSON:
        plain = {k: v for k, v in self.__dict__.items() if not isinstance(v, dict)}
        return {
            **plain,
            "status_counts": dict(self.status_counts),
            "final_status_by_kind": {k: dict(v) for k, v in self.final_status_by_kind.items()},
        }


class WebhookSender:
    """The webhook half of ``ShopifySimulator``; the attributes below are set by its ``__init__``."""

    config: ShopifySimConfig
    factory: ShopifyOrderFactory
    rng: random.Random
    listings: Listings
    orders: dict[str, JSON]
    first_sent_at: dict[str, float]
    _accepted: set[str]
    _stats: SenderStats
    _stop: asyncio.Event

    def _ensure_product(self, sku: str) -> JSON:
        raise NotImplementedError

    async def edit_order(self, order_id: str, line_item_id: int, quantity: int) -> JSON:
        raise NotImplementedError

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

    def _headers(self, body: bytes, topic: str = TOPIC) -> dict[str, str]:
        cfg = self.config
        return {
            "Content-Type": "application/json",
            "User-Agent": "Shopify-Captain-Hook",
            "X-Shopify-Topic": topic,
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

    def next_delivery(self, lines: list[tuple[str, int]] | None = None) -> Delivery | None:
        """The next event to send; good orders are registered for the Admin API and stats.

        ``lines`` makes it a good order with exactly those lines. None when the buyer's order
        was refused (not enough stock on a listing in ``refuse`` mode): nothing is sent."""
        kind = self._pick_kind() if lines is None else GOOD
        if kind == MALFORMED:
            self._stats.malformed_sent += 1
            body = self.factory.malformed_body()
            return Delivery(kind, body, self._headers(body), None)
        order = self.factory.order(lines) if kind == GOOD else self.factory.unmappable_order()
        if kind == GOOD and not self._sell(order):
            return None
        body = json.dumps(order, separators=(",", ":")).encode()
        if kind == UNMAPPABLE:
            self._stats.unmappable_sent += 1
            return Delivery(kind, body, self._headers(body), None)
        order_id = str(order["id"])
        self.orders[order_id] = order
        self._stats.orders_generated += 1
        return Delivery(kind, body, self._headers(body), order_id)

    def _sell(self, order: JSON) -> bool:
        stocked = [li for li in order["line_items"] if li.get("sku")]  # custom items: no stock
        sold = self.listings.sell([(li["sku"], li["quantity"]) for li in stocked])
        if not sold:
            self._stats.orders_refused += 1
        for line in stocked:
            self._ensure_product(line["sku"])
        return sold

    # --- delivering ----------------------------------------------------------------------------

    async def _attempt(self, session: aiohttp.ClientSession, delivery: Delivery) -> str:
        """One POST; returns the status code as text, or "timeout" / "connection_error"."""
        self._stats.deliveries_attempted += 1
        try:
            url = self.topic_url(delivery.headers["X-Shopify-Topic"])
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
        ok = False
        try:
            ok = await self.deliver(session, delivery)
            if ok and self.rng.random() < self.config.duplicate_rate:
                self._stats.duplicates_sent += 1
                await self.deliver(session, delivery, duplicate=True)
        finally:
            slots.release()
        if ok and delivery.kind == GOOD and delivery.order_id and self.config.edit_rate \
                and self.rng.random() < self.config.edit_rate:
            await asyncio.sleep(self.config.edit_delay_s)
            await self._edit_some_line(delivery.order_id)

    async def _edit_some_line(self, order_id: str) -> None:
        """The merchant's edit ``edit_rate`` asks for: one unit less of a line with several, else
        one of several lines removed; nothing for a one-unit order or one that moved on."""
        order = self.orders[order_id]
        fulfilled = fulfilled_quantities(order)
        open_lines = [li for li in order["line_items"] if li["current_quantity"] > 0]
        several = [li for li in open_lines if li["current_quantity"] > 1 + fulfilled.get(li["id"], 0)]
        if several:
            line, quantity = several[0], several[0]["current_quantity"] - 1
        elif len(open_lines) > 1 and not fulfilled.get(open_lines[-1]["id"]):
            line, quantity = open_lines[-1], 0
        else:
            return
        try:
            await self.edit_order(order_id, line["id"], quantity)
        except ValueError:  # cancelled or fulfilled meanwhile: the merchant no longer edits it
            return

    def _session(self) -> aiohttp.ClientSession:
        timeout = aiohttp.ClientTimeout(total=self.config.request_timeout_s, connect=1.0)
        connector = aiohttp.TCPConnector(limit=self.config.concurrency)
        return aiohttp.ClientSession(timeout=timeout, connector=connector)

    def topic_url(self, topic: str) -> str:
        """Where webhooks of ``topic`` go: ``webhook_url`` with its last two path segments
        (the orders/create topic) replaced by ``topic``."""
        url = self.config.webhook_url
        if topic == TOPIC:
            return url
        base, _, query = url.partition("?")
        parts = base.rstrip("/").rsplit("/", 2)
        return f"{parts[0]}/{topic}" + (f"?{query}" if query else "")

    async def send_event(self, topic: str, payload: JSON) -> bool:
        """Sign and deliver one webhook of ``topic`` (with retries); True if answered 2xx."""
        body = json.dumps(payload, separators=(",", ":")).encode()
        async with self._session() as session:
            return await self.deliver(session, Delivery(EVENT, body, self._headers(body, topic), None))

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
                sent += 1
                delivery = self.next_delivery()
                if delivery is None:
                    continue
                await slots.acquire()
                task = asyncio.create_task(self._deliver_event(session, delivery, slots))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            await asyncio.gather(*tasks)
        return self.stats()

    async def send_order(self, lines: list[tuple[str, int]]) -> JSON | None:
        """Create one order with exactly ``lines`` ``[(sku, quantity)]`` and deliver its webhook
        (with retries). Returns the order, or None when the listings refused the sale."""
        delivery = self.next_delivery(lines)
        if delivery is None:
            return None
        async with self._session() as session:
            await self.deliver(session, delivery)
        return self.orders[str(delivery.order_id)]

    async def _pace(self, start: float, sent: int) -> None:
        """Sleep until event number ``sent`` is due, or until stop_sending is called."""
        delay = start + sent / self.config.rate_per_s - time.monotonic()
        if delay > 0:
            try:
                await asyncio.wait_for(self._stop.wait(), delay)
            except TimeoutError:
                pass


__all__ = [
    "CANCELLED_TOPIC",
    "DUPLICATE",
    "EVENT",
    "GOOD",
    "MALFORMED",
    "REFUND_TOPIC",
    "TOPIC",
    "UNMAPPABLE",
    "UPDATED_TOPIC",
    "Delivery",
    "SenderStats",
    "WebhookSender",
    "sign",
]
