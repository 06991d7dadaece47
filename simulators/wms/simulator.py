"""A warehouse (3PL / WMS) simulator: a real aiohttp server that ships what it is given.

There is no public WMS spec in ../shared/specs; this API is *modelled* on how 3PL/WMS REST APIs
commonly look (ShipBob, ShipHero, Logiwa style), not copied from any of them:

* JSON over REST, ``Authorization: Bearer <api_key>`` on every ``/api`` call (401 otherwise).
  Validation failures are 422 ``{"errors": ["..."]}``; injected faults are 5xx (or 429 with
  ``Retry-After``) ``{"errors": [...]}``.
* ``POST /api/v1/fulfillment-orders`` ``{"reference", "erp_sales_order", "lines": [{"line_id",
  "sku", "quantity"[, "title", "properties": [{"name", "value"}], "condition"]}], "ship_to":
  {...} | null[, "shipping": {"method", "ship_by", "deliver_by", "priority", "gift", ...}]}``
  (what the picker and the carrier need; kept and answered back) -> 201 the order ``{"id": "FO-000001",
  "reference", "status": "released", ...}``; idempotent on ``reference`` (a repeat answers 200
  with the stored order). ``GET /api/v1/fulfillment-orders/{reference}`` reads it (404 unknown).
* ``POST /api/v1/fulfillment-orders/{reference}/cancel`` -> 200 ``{"cancelled": true}`` while
  nothing has shipped (it then never ships; repeats answer the same), 409 ``{"cancelled": false,
  "reason": "already shipped"}`` once anything has, 404 for an unknown reference.
* ``POST /api/v1/returns`` ``{"id", "reference", "lines"}`` -> 201 (idempotent on ``id``: 200);
  ``return_delay_ms`` later the goods are received. The reference need not be a known order.
* ``GET /api/v1/events?after=<cursor>&limit=N`` (limit default 100, at most 500) -> ``{"events":
  [...], "next": <cursor>}``, oldest first. An event is ``{"sequence", "kind", "occurred_at",
  "data"}``: kind ``shipment`` (data: ``{"id": "SHP-000001", "fulfillment_order_id", "reference",
  "lines", "carrier": UPS|USPS|FEDEX|DHL, "tracking_number", "shipped_at"}``) or
  ``return_received`` (data: ``{"return_id", "reference", "lines", "received_at"}``). The cursor
  is an opaque, monotonically increasing sequence string; ``next`` is the last event's sequence
  (the ``after`` given when the page is empty), so resuming from it neither skips nor repeats.

How it fulfils: each released order ships ``ship_delay_ms`` (+- ``ship_jitter_ms``) after its
creation, all in one shipment, or with probability ``partial_rate`` in two (a subset of its lines,
or part of a single line's units, then the rest one delay later). ``hold`` stops all automatic
shipping while true. Test-only endpoints under ``/_sim``: ``GET stats``, ``GET orders``, ``PUT
config`` and ``POST ship/{reference}`` (ship the rest now, or ``{"lines": [{"line_id",
"quantity"}]}`` only those units, whatever ``hold`` says); ``ship_now``, ``orders`` and ``events``
do the same in process. The RNG is seeded (``seed``); background tasks end with ``stop()``.
"""

from __future__ import annotations

import asyncio
import json
import random
import string
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from retail_sync.simulators.server import Handler, SimulatorServer

JSON = dict[str, Any]
CARRIERS = ("UPS", "USPS", "FEDEX", "DHL")
DEFAULT_LIMIT, MAX_LIMIT = 100, 500
HOLD_POLL_S = 0.02
API = "/api/v1"

_STAT_KEYS = (
    "orders_created", "idempotent_replays", "shipments", "units_shipped", "cancellations",
    "cancels_refused", "returns_expected", "returns_received", "validation_errors",
    "auth_failures", "errors_injected",
)  # fmt: skip


@dataclass
class WmsSimConfig:
    """Timing, faults and credentials; every field can be changed at runtime (PUT /_sim/config)."""

    ship_delay_ms: float = 300
    ship_jitter_ms: float = 0
    partial_rate: float = 0.0
    return_delay_ms: float = 300
    hold: bool = False
    error_rate: float = 0.0
    error_status: int = 503
    api_key: str = "demo-wms-key"
    seed: int | None = None

    def updated(self, changes: Mapping[str, Any]) -> WmsSimConfig:
        """A copy with ``changes`` applied; unknown fields or wrong values raise ValueError."""
        unknown = set(changes) - {f.name for f in fields(self)}
        if unknown:
            raise ValueError(f"unknown config fields: {sorted(unknown)}")
        merged = {**asdict(self), **changes}
        for name in ("ship_delay_ms", "ship_jitter_ms", "partial_rate", "return_delay_ms", "error_rate"):
            merged[name] = float(merged[name])
        merged["error_status"] = int(merged["error_status"])
        if not isinstance(merged["hold"], bool):
            raise ValueError("hold must be true or false")
        if not (0 <= merged["partial_rate"] <= 1 and 0 <= merged["error_rate"] <= 1):
            raise ValueError("partial_rate and error_rate must be within 0..1")
        return WmsSimConfig(**merged)


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def validate_lines(lines: Any, errors: list[str]) -> list[JSON]:
    """``[{"line_id", "sku", "quantity"}]``: non-empty, unique line ids, positive whole units."""
    if not isinstance(lines, list) or not lines:
        errors.append("lines must be a non-empty list")
        return []
    clean: list[JSON] = []
    for i, line in enumerate(lines):
        if not isinstance(line, dict):
            errors.append(f"lines[{i}] must be an object")
            continue
        line_id, sku, qty = line.get("line_id"), line.get("sku"), line.get("quantity")
        if not (isinstance(line_id, str) and line_id and isinstance(sku, str) and sku):
            errors.append(f"lines[{i}] needs a line_id and a sku")
        elif isinstance(qty, bool) or not isinstance(qty, int) or qty <= 0:
            errors.append(f"lines[{i}].quantity must be a positive integer")
        else:
            properties = line.get("properties", [])
            if not isinstance(properties, list) or not all(
                    isinstance(p, dict) and isinstance(p.get("name"), str) for p in properties):
                errors.append(f"lines[{i}].properties must be a list of {{name, value}}")
                continue
            clean.append({"line_id": line_id, "sku": sku, "quantity": qty,
                          **{k: line[k] for k in ("title", "properties", "condition")
                             if line.get(k) not in (None, "", [])}})
    if len({line["line_id"] for line in clean}) != len(clean):
        errors.append("line_id values must be unique")
    return clean


def _text(body: Mapping[str, Any], key: str, errors: list[str]) -> str:
    value = body.get(key)
    if not isinstance(value, str) or not value.strip():
        errors.append(f"{key} must be a non-empty string")
        return ""
    return value


def tracking_number(carrier: str, rng: random.Random) -> str:
    """A number shaped like the carrier's: UPS 1Z..., USPS 22 digits, FedEx 12, DHL 10."""

    def digits(n: int) -> str:
        return "".join(rng.choices(string.digits, k=n))

    if carrier == "UPS":
        return "1Z" + "".join(rng.choices(string.ascii_uppercase + string.digits, k=6)) + "03" + digits(8)
    if carrier == "USPS":
        return "9400" + digits(18)
    return digits(12) if carrier == "FEDEX" else digits(10)


@dataclass
class FulfilmentOrder:
    """One fulfilment order, its units still to ship and its shipments."""

    id: str
    reference: str
    erp_sales_order: str
    lines: list[JSON]
    ship_to: JSON | None
    created_at: str
    shipping: JSON | None = None
    cancelled: bool = False
    shipped: dict[str, int] = field(default_factory=dict)  # line_id -> units shipped
    shipments: list[JSON] = field(default_factory=list)

    def remaining(self) -> dict[str, int]:
        left = {ln["line_id"]: ln["quantity"] - self.shipped.get(ln["line_id"], 0) for ln in self.lines}
        return {line_id: qty for line_id, qty in left.items() if qty > 0}

    @property
    def status(self) -> str:
        if self.cancelled:
            return "cancelled"
        if not self.shipped:
            return "released"
        return "partially_shipped" if self.remaining() else "shipped"

    def doc(self, *, with_shipments: bool = False) -> JSON:
        doc: JSON = {
            "id": self.id, "reference": self.reference, "erp_sales_order": self.erp_sales_order,
            "status": self.status, "lines": self.lines, "ship_to": self.ship_to,
            "shipping": self.shipping, "created_at": self.created_at,
            "shipment_ids": [s["id"] for s in self.shipments],
        }  # fmt: skip
        if with_shipments:
            doc["shipments"] = self.shipments
        return doc


def error_response(status: int, *errors: str) -> web.Response:
    return web.json_response({"errors": list(errors)}, status=status)


class WmsSimulator(SimulatorServer):
    """The warehouse as a real HTTP server; ``orders``, ``events`` and ``ship_now`` give tests
    in-process access."""

    def __init__(self, config: WmsSimConfig | None = None) -> None:
        self.config = config or WmsSimConfig()
        self._rng = random.Random(self.config.seed)
        self._orders: dict[str, FulfilmentOrder] = {}  # by reference
        self._returns: dict[str, JSON] = {}  # by return id
        self._events: list[JSON] = []
        self._stats = dict.fromkeys(_STAT_KEYS, 0)
        self._tasks: set[asyncio.Task[None]] = set()
        self._order_tasks: dict[str, asyncio.Task[None]] = {}

    # --- in-process access -----------------------------------------------------------------

    @property
    def orders(self) -> list[JSON]:
        """Every fulfilment order with its status and shipments, in creation order."""
        return [order.doc(with_shipments=True) for order in self._orders.values()]

    @property
    def events(self) -> list[JSON]:
        return list(self._events)

    def stats(self) -> dict[str, int]:
        return {**self._stats, "events": len(self._events), "pending_tasks": len(self._tasks)}

    def set_config(self, changes: Mapping[str, Any]) -> WmsSimConfig:
        new = self.config.updated(changes)
        if new.seed != self.config.seed:
            self._rng = random.Random(new.seed)
        self.config = new
        return new

    def ship_now(self, reference: str, lines: Sequence[Mapping[str, Any]] | None = None) -> JSON | None:
        """Ship the rest of ``reference`` now, or only ``lines`` (``{"line_id", "quantity"}``);
        answers the shipment, or None when nothing is left. KeyError for an unknown reference,
        ValueError for a cancelled order or units it does not have left."""
        order = self._orders[reference]
        if order.cancelled:
            raise ValueError(f"{reference} is cancelled")
        left = order.remaining()
        if lines is None:
            return self._ship(order, left) if left else None
        wanted: dict[str, int] = {}
        for line in lines:
            line_id, qty = line.get("line_id"), line.get("quantity")
            if not isinstance(line_id, str) or not isinstance(qty, int) or isinstance(qty, bool):
                raise ValueError(f"bad line {line!r}")
            wanted[line_id] = wanted.get(line_id, 0) + qty
        if any(qty <= 0 or qty > left.get(line_id, 0) for line_id, qty in wanted.items()):
            raise ValueError(f"{reference} has not those units left to ship: {left}")
        return self._ship(order, wanted) if wanted else None

    # --- state changes (synchronous: no await between check and change) --------------------

    def _event(self, kind: str, data: JSON, at: str) -> None:
        sequence = f"{len(self._events) + 1:012d}"
        self._events.append({"sequence": sequence, "kind": kind, "occurred_at": at, "data": data})

    def _ship(self, order: FulfilmentOrder, quantities: Mapping[str, int]) -> JSON:
        carrier = self._rng.choice(CARRIERS)
        skus = {ln["line_id"]: ln["sku"] for ln in order.lines}
        lines = [{"line_id": lid, "sku": skus[lid], "quantity": q} for lid, q in quantities.items()]
        shipped_at = utc_now()
        shipment = {
            "id": f"SHP-{self._stats['shipments'] + 1:06d}", "fulfillment_order_id": order.id,
            "reference": order.reference, "lines": lines, "carrier": carrier,
            "tracking_number": tracking_number(carrier, self._rng), "shipped_at": shipped_at,
        }  # fmt: skip
        for line_id, qty in quantities.items():
            order.shipped[line_id] = order.shipped.get(line_id, 0) + qty
        order.shipments.append(shipment)
        self._stats["shipments"] += 1
        self._stats["units_shipped"] += sum(quantities.values())
        self._event("shipment", shipment, shipped_at)
        return shipment

    def _first_part(self, left: dict[str, int]) -> dict[str, int]:
        """The first of two shipments: a proper subset of the lines, or part of a single line."""
        if len(left) > 1:
            ids = list(left)
            chosen = self._rng.sample(ids, self._rng.randint(1, len(ids) - 1))
            return {line_id: left[line_id] for line_id in ids if line_id in chosen}
        ((line_id, qty),) = left.items()
        return {line_id: self._rng.randint(1, qty - 1)} if qty > 1 else dict(left)

    # --- background work -------------------------------------------------------------------

    def _spawn(self, coro: Any, reference: str | None = None) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        if reference is not None:
            self._order_tasks[reference] = task
            task.add_done_callback(lambda _t: self._order_tasks.pop(reference, None))

    async def _ship_delay(self) -> None:
        cfg = self.config
        delay_ms = cfg.ship_delay_ms + self._rng.uniform(-1, 1) * cfg.ship_jitter_ms
        await asyncio.sleep(max(delay_ms, 0) / 1000)
        while self.config.hold:
            await asyncio.sleep(HOLD_POLL_S)

    async def _fulfil(self, order: FulfilmentOrder) -> None:
        split = self._rng.random() < self.config.partial_rate
        await self._ship_delay()
        if split and not order.cancelled and order.remaining():
            self._ship(order, self._first_part(order.remaining()))
            await self._ship_delay()
        if not order.cancelled and order.remaining():
            self._ship(order, order.remaining())

    async def _receive(self, ret: JSON) -> None:
        await asyncio.sleep(self.config.return_delay_ms / 1000)
        received_at = utc_now()
        ret.update(status="received", received_at=received_at)
        data = {"return_id": ret["id"], "reference": ret["reference"], "lines": ret["lines"],
                "received_at": received_at}  # fmt: skip
        self._stats["returns_received"] += 1
        self._event("return_received", data, received_at)

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await super().stop()

    # --- server ----------------------------------------------------------------------------

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._guard])
        app.router.add_post(f"{API}/fulfillment-orders", self._create)
        app.router.add_get(f"{API}/fulfillment-orders/{{reference}}", self._read)
        app.router.add_post(f"{API}/fulfillment-orders/{{reference}}/cancel", self._cancel)
        app.router.add_post(f"{API}/returns", self._expect_return)
        app.router.add_get(f"{API}/events", self._list_events)
        app.router.add_get("/_sim/stats", self._sim_stats)
        app.router.add_get("/_sim/orders", self._sim_orders)
        app.router.add_put("/_sim/config", self._sim_config)
        app.router.add_post("/_sim/ship/{reference}", self._sim_ship)
        return app

    @web.middleware
    async def _guard(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Injected faults, then auth, for every /api route (never for /_sim)."""
        if not request.path.startswith("/api/"):
            return await handler(request)
        cfg = self.config
        if cfg.error_rate and self._rng.random() < cfg.error_rate:
            self._stats["errors_injected"] += 1
            resp = error_response(cfg.error_status, "injected fault")
            if cfg.error_status == 429:
                resp.headers["Retry-After"] = "1"
            return resp
        if request.headers.get("Authorization") != f"Bearer {cfg.api_key}":
            self._stats["auth_failures"] += 1
            return error_response(401, "missing or invalid API key")
        return await handler(request)

    async def _json_body(self, request: web.Request) -> JSON | web.Response:
        try:
            body = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            body = None
        if not isinstance(body, dict):
            self._stats["validation_errors"] += 1
            return error_response(422, "body must be a JSON object")
        return body

    def _invalid(self, errors: list[str]) -> web.Response:
        self._stats["validation_errors"] += 1
        return error_response(422, *errors)

    async def _create(self, request: web.Request) -> web.Response:
        body = await self._json_body(request)
        if isinstance(body, web.Response):
            return body
        ref = body.get("reference")
        known = self._orders.get(ref) if isinstance(ref, str) else None
        if known is not None:
            self._stats["idempotent_replays"] += 1
            return web.json_response(known.doc(), status=200)
        errors: list[str] = []
        reference, erp_so = _text(body, "reference", errors), _text(body, "erp_sales_order", errors)
        lines = validate_lines(body.get("lines"), errors)
        ship_to = body.get("ship_to")
        if ship_to is not None and not isinstance(ship_to, dict):
            errors.append("ship_to must be an object or null")
        shipping = body.get("shipping")
        if shipping is not None and not isinstance(shipping, dict):
            errors.append("shipping must be an object or null")
        if errors:
            return self._invalid(errors)
        self._stats["orders_created"] += 1
        order = FulfilmentOrder(f"FO-{self._stats['orders_created']:06d}", reference, erp_so,
                                lines, ship_to, utc_now(), shipping)  # fmt: skip
        self._orders[reference] = order
        self._spawn(self._fulfil(order), reference)
        return web.json_response(order.doc(), status=201)

    async def _read(self, request: web.Request) -> web.Response:
        order = self._orders.get(request.match_info["reference"])
        if order is None:
            return error_response(404, "fulfillment order not found")
        return web.json_response(order.doc(with_shipments=True))

    async def _cancel(self, request: web.Request) -> web.Response:
        order = self._orders.get(request.match_info["reference"])
        if order is None:
            return error_response(404, "fulfillment order not found")
        if order.shipped:
            self._stats["cancels_refused"] += 1
            return web.json_response({"cancelled": False, "reason": "already shipped"}, status=409)
        if not order.cancelled:
            order.cancelled = True
            self._stats["cancellations"] += 1
            task = self._order_tasks.get(order.reference)
            if task is not None:
                task.cancel()
        return web.json_response({"cancelled": True, "id": order.id, "reference": order.reference})

    async def _expect_return(self, request: web.Request) -> web.Response:
        body = await self._json_body(request)
        if isinstance(body, web.Response):
            return body
        key = body.get("id")
        known = self._returns.get(key) if isinstance(key, str) else None
        if known is not None:
            return web.json_response(known, status=200)
        errors: list[str] = []
        return_id, reference = _text(body, "id", errors), _text(body, "reference", errors)
        lines = validate_lines(body.get("lines"), errors)
        if errors:
            return self._invalid(errors)
        ret = {"id": return_id, "reference": reference, "lines": lines, "status": "expected",
               "created_at": utc_now(), "received_at": None}  # fmt: skip
        self._returns[return_id] = ret
        self._stats["returns_expected"] += 1
        self._spawn(self._receive(ret))
        return web.json_response(ret, status=201)

    async def _list_events(self, request: web.Request) -> web.Response:
        after, limit = request.query.get("after", ""), request.query.get("limit", str(DEFAULT_LIMIT))
        if not (after == "" or after.isdigit()) or not limit.isdigit() or int(limit) < 1:
            return self._invalid(["after must be a cursor from this feed, limit a positive integer"])
        start = int(after or 0)  # sequence n is self._events[n - 1]
        page = self._events[start : start + min(int(limit), MAX_LIMIT)]
        return web.json_response({"events": page, "next": page[-1]["sequence"] if page else after or None})

    # --- /_sim control endpoints (test-only) ----------------------------------------------

    async def _sim_stats(self, _request: web.Request) -> web.Response:
        return web.json_response(self.stats())

    async def _sim_orders(self, _request: web.Request) -> web.Response:
        return web.json_response(self.orders)

    async def _sim_config(self, request: web.Request) -> web.Response:
        try:
            changes = await request.json()
            if not isinstance(changes, dict):
                raise ValueError("config must be a JSON object")
            config = self.set_config(changes)
        except (ValueError, TypeError) as exc:
            return web.json_response({"error": str(exc)}, status=400)
        return web.json_response(asdict(config))

    async def _sim_ship(self, request: web.Request) -> web.Response:
        try:
            body = await request.json() if request.can_read_body else {}
            lines = body.get("lines") if isinstance(body, dict) else None
            shipment = self.ship_now(request.match_info["reference"], lines)
        except KeyError:
            return web.json_response({"error": "fulfillment order not found"}, status=404)
        except (ValueError, TypeError, AttributeError) as exc:  # JSONDecodeError is a ValueError
            return web.json_response({"error": str(exc)}, status=409)
        return web.json_response({"shipment": shipment})


async def run_wms_simulator(
    host: str = "127.0.0.1", port: int = 0, config: WmsSimConfig | None = None
) -> WmsSimulator:
    """Start a WMS simulator and return it (its ``base_url`` says where it listens)."""
    simulator = WmsSimulator(config)
    await simulator.start(host, port)
    return simulator


__all__ = ["CARRIERS", "WmsSimConfig", "WmsSimulator", "run_wms_simulator", "tracking_number"]
