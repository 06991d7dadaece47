"""An ERPNext-flavoured ERP simulator: a real aiohttp server speaking Frappe's REST dialect.

What it mirrors (ERPNext v15 / Frappe):

* ``POST /api/resource/Sales Order`` creates a draft Sales Order (``docstatus`` 0, status "Draft")
  named from the ``SAL-ORD-.YYYY.-`` series and answers ``{"data": doc}``.
* ``GET /api/resource/Sales Order/{name}`` and ``GET /api/resource/Sales Order?filters=...`` read
  them back (``fields``, ``filters``, ``limit_start``, ``limit_page_length`` as in Frappe).
* Auth is ``Authorization: token <api_key>:<api_secret>``; failures are 401 AuthenticationError.
* Validation failures are HTTP 417 ``ValidationError`` with ``_server_messages``, as Frappe does.

What it adds, as a test double: idempotency on ``po_no`` (a repeat post answers the existing
document with ``X-Idempotent-Replay: true``), fault injection (latency, 5xx, slow answers) and
test-only control endpoints under ``/_sim``.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from dataclasses import asdict, dataclass, fields
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from simulators.erp_docs import (
    DocValidationError,
    build_sales_order,
    list_documents,
    server_messages,
)
from simulators.server import SimulatorServer

DOCTYPE = "Sales Order"
JSON = dict[str, Any]


@dataclass
class ErpSimConfig:
    """Fault injection and credentials; every field can be changed at runtime (PUT /_sim/config)."""

    latency_ms: float = 0
    latency_jitter_ms: float = 0
    error_rate: float = 0.0
    error_status: int = 503
    slow_rate: float = 0.0
    slow_ms: float = 0
    api_key: str = "demo-key"
    api_secret: str = "demo-secret"  # noqa: S105 - demo credential of a simulator
    seed: int | None = None

    def updated(self, changes: JSON) -> ErpSimConfig:
        """A copy with ``changes`` applied; unknown fields or wrong types raise ValueError."""
        known = {f.name: f for f in fields(self)}
        unknown = set(changes) - set(known)
        if unknown:
            raise ValueError(f"unknown config fields: {sorted(unknown)}")
        merged = {**asdict(self), **changes}
        for name in ("latency_ms", "latency_jitter_ms", "error_rate", "slow_rate", "slow_ms"):
            merged[name] = float(merged[name])
        merged["error_status"] = int(merged["error_status"])
        return ErpSimConfig(**merged)


@dataclass
class StoredOrder:
    """One created Sales Order plus the wall-clock and monotonic instants it was created."""

    doc: JSON
    received_at: float  # time.time() when the first post created it
    created_monotonic: float

    def summary(self) -> JSON:
        return {
            "name": self.doc["name"],
            "po_no": self.doc["po_no"],
            "received_at": datetime.fromtimestamp(self.received_at, UTC).isoformat(),
            "received_at_epoch": self.received_at,
            "created_at_monotonic": self.created_monotonic,
        }


_STAT_KEYS = (
    "posts_received",
    "orders_created",
    "idempotent_replays",
    "errors_injected",
    "validation_errors",
    "auth_failures",
    "slow_injected",
)


def frappe_error(status: int, exc_type: str, message: str, **extra: Any) -> web.Response:
    """A Frappe-shaped error body: ``exc_type`` plus ``exception`` ("module.Class: message")."""
    body = {"exc_type": exc_type, "exception": f"frappe.exceptions.{exc_type}: {message}", **extra}
    return web.json_response(body, status=status)


class ErpSimulator(SimulatorServer):
    """The ERP as a real HTTP server; ``orders`` and ``stats()`` give tests in-process access."""

    def __init__(self, config: ErpSimConfig | None = None) -> None:
        self.config = config or ErpSimConfig()
        self._rng = random.Random(self.config.seed)
        self.reset()

    # --- state ----------------------------------------------------------------------------

    def reset(self) -> None:
        """Forget every order and zero the counters (the naming series restarts too)."""
        self.orders: dict[str, StoredOrder] = {}
        self._by_po_no: dict[str, str] = {}
        self._series: dict[int, int] = {}
        self._stats = dict.fromkeys(_STAT_KEYS, 0)

    def stats(self) -> dict[str, int]:
        return dict(self._stats)

    def order_by_po_no(self, po_no: str) -> StoredOrder | None:
        name = self._by_po_no.get(po_no)
        return self.orders[name] if name else None

    def set_config(self, changes: JSON) -> ErpSimConfig:
        new = self.config.updated(changes)
        if new.seed != self.config.seed:
            self._rng = random.Random(new.seed)
        self.config = new
        return new

    def _next_name(self, now: datetime) -> str:
        """``SAL-ORD-.YYYY.-`` naming series: a five-digit counter per year."""
        counter = self._series.get(now.year, 0) + 1
        self._series[now.year] = counter
        return f"SAL-ORD-{now.year}-{counter:05d}"

    # --- server lifecycle -----------------------------------------------------------------

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/api/resource/{doctype}", self._create)
        app.router.add_get("/api/resource/{doctype}", self._list)
        app.router.add_get("/api/resource/{doctype}/{name}", self._read)
        app.router.add_get("/_sim/stats", self._sim_stats)
        app.router.add_get("/_sim/orders", self._sim_orders)
        app.router.add_put("/_sim/config", self._sim_config)
        app.router.add_post("/_sim/reset", self._sim_reset)
        return app


    async def _inject_latency(self) -> None:
        cfg = self.config
        delay_ms = cfg.latency_ms + self._rng.uniform(-1, 1) * cfg.latency_jitter_ms
        if cfg.slow_rate and self._rng.random() < cfg.slow_rate:
            self._stats["slow_injected"] += 1
            delay_ms += cfg.slow_ms
        if delay_ms > 0:
            await asyncio.sleep(delay_ms / 1000)

    def _injected_error(self) -> web.Response | None:
        cfg = self.config
        if not (cfg.error_rate and self._rng.random() < cfg.error_rate):
            return None
        self._stats["errors_injected"] += 1
        if cfg.error_status == 429:
            resp = frappe_error(429, "TooManyRequestsError", "Too many requests (injected)")
            resp.headers["Retry-After"] = "1"
            return resp
        return frappe_error(cfg.error_status, "ServerError", "Service unavailable (injected fault)")

    def _auth_error(self, request: web.Request) -> web.Response | None:
        expected = f"token {self.config.api_key}:{self.config.api_secret}"
        if request.headers.get("Authorization") == expected:
            return None
        self._stats["auth_failures"] += 1
        return frappe_error(401, "AuthenticationError", "Invalid API key or secret")

    async def _guard(self, request: web.Request, *, inject_errors: bool) -> web.Response | None:
        """Latency, injected errors, auth and doctype checks shared by the /api routes."""
        await self._inject_latency()
        error = self._injected_error() if inject_errors else None
        error = error or self._auth_error(request)
        if error is None and request.match_info["doctype"] != DOCTYPE:
            doctype = request.match_info["doctype"]
            error = frappe_error(404, "DoesNotExistError", f"DocType {doctype} not found")
        return error

    # --- /api/resource handlers -----------------------------------------------------------

    async def _create(self, request: web.Request) -> web.Response:
        self._stats["posts_received"] += 1
        error = await self._guard(request, inject_errors=True)
        if error is not None:
            return error
        try:
            body = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            return self._validation_error("Request body is not valid JSON")
        return self._create_or_replay(body)

    def _create_or_replay(self, body: Any) -> web.Response:
        """Idempotent on ``po_no``; no await between lookup and insert, so it is race-free."""
        po_no = body.get("po_no") if isinstance(body, dict) else None
        known = self.order_by_po_no(po_no) if isinstance(po_no, str) else None
        if known is not None:
            self._stats["idempotent_replays"] += 1
            return web.json_response({"data": known.doc}, headers={"X-Idempotent-Replay": "true"})
        now = datetime.now(UTC)
        try:
            doc = build_sales_order(body, now=now)
        except DocValidationError as exc:
            return self._validation_error(str(exc))
        doc = {**doc, "name": self._next_name(now)}
        for item in doc["items"]:
            item["parent"] = doc["name"]
        self.orders[doc["name"]] = StoredOrder(doc, time.time(), time.monotonic())
        self._by_po_no[doc["po_no"]] = doc["name"]
        self._stats["orders_created"] += 1
        return web.json_response({"data": doc})

    def _validation_error(self, reason: str) -> web.Response:
        self._stats["validation_errors"] += 1
        return frappe_error(
            417, "ValidationError", reason, _server_messages=server_messages(reason)
        )

    async def _read(self, request: web.Request) -> web.Response:
        error = await self._guard(request, inject_errors=False)
        if error is not None:
            return error
        name = request.match_info["name"]
        stored = self.orders.get(name)
        if stored is None:
            return frappe_error(404, "DoesNotExistError", f"{DOCTYPE} {name} not found")
        return web.json_response({"data": stored.doc})

    async def _list(self, request: web.Request) -> web.Response:
        error = await self._guard(request, inject_errors=False)
        if error is not None:
            return error
        docs = [stored.doc for stored in reversed(self.orders.values())]  # newest first
        try:
            rows = list_documents(docs, dict(request.query), doctype=DOCTYPE)
        except DocValidationError as exc:
            return self._validation_error(str(exc))
        return web.json_response({"data": rows})

    # --- /_sim control endpoints (test-only) ----------------------------------------------

    async def _sim_stats(self, _request: web.Request) -> web.Response:
        return web.json_response(self.stats())

    async def _sim_orders(self, _request: web.Request) -> web.Response:
        return web.json_response([stored.summary() for stored in self.orders.values()])

    async def _sim_config(self, request: web.Request) -> web.Response:
        try:
            changes = await request.json()
            if not isinstance(changes, dict):
                raise ValueError("config must be a JSON object")
            config = self.set_config(changes)
        except (ValueError, TypeError) as exc:
            return web.json_response({"error": str(exc)}, status=400)
        return web.json_response(asdict(config))

    async def _sim_reset(self, _request: web.Request) -> web.Response:
        self.reset()
        return web.json_response({"ok": True})


async def run_erp_simulator(
    host: str = "127.0.0.1", port: int = 0, config: ErpSimConfig | None = None
) -> ErpSimulator:
    """Start an ERP simulator and return it (its ``base_url`` says where it listens)."""
    simulator = ErpSimulator(config)
    await simulator.start(host, port)
    return simulator
