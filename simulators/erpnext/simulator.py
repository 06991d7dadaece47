"""An ERPNext-flavoured ERP simulator: a real aiohttp server speaking Frappe's REST dialect.

What it mirrors (ERPNext v15 / Frappe):

* ``POST /api/resource/Sales Order`` creates a Sales Order named from the ``SAL-ORD-.YYYY.-``
  series and answers ``{"data": doc}``: a draft (``docstatus`` 0, status "Draft"), or inserted
  and submitted when the body says ``"docstatus": 1``; submitting reserves stock on its Bins.
* Stock, as ERPNext models it (see ``simulators.erpnext.stock``): ``POST`` of ``Stock Entry``
  (Material Receipt / Material Issue), ``Stock Reconciliation`` and ``Delivery Note`` move stock;
  ``Bin`` and ``Stock Ledger Entry`` are read-only. Integrations poll Bins by ``modified``:
  ``GET /api/resource/Bin?filters=[["Bin","modified",">=",ts]]&order_by=modified asc``.
* ``GET /api/resource/{doctype}/{name}`` and ``GET /api/resource/{doctype}?filters=...`` read them
  back (``fields``, ``filters``, ``order_by``, ``limit_start``, ``limit_page_length`` as in Frappe).
* Auth is ``Authorization: token <api_key>:<api_secret>``; failures are 401 AuthenticationError.
* Validation failures are HTTP 417 ``ValidationError`` with ``_server_messages``, as Frappe does.

After the order (see ``simulators.erpnext.finance`` for the money side):

* ``POST /api/resource/Delivery Note`` submitted, rows with ``against_sales_order`` and
  ``so_detail``: ships (stock leaves, the order's reservation is freed), raises the rows'
  ``delivered_qty`` and the order's ``per_delivered``/``delivery_status``/``status``, refuses
  (417) shipping more than an item has left, and raises a submitted ``Sales Invoice`` for the
  shipped rows, whose name the note carries in ``custom_sales_invoice`` (what an ERPNext server
  script "invoice on delivery" would set). Idempotent on ``custom_shipment_id``.
* A return Delivery Note (``is_return`` 1, negative quantities, ``return_against`` the original,
  rows with ``dn_detail``) puts goods back on hand and raises the original rows' and the order
  items' ``returned_qty``; idempotent on ``custom_return_id``. The ERP raises no credit note for
  it: the integration posts one (``POST /api/resource/Sales Invoice`` with ``is_return`` 1).
* ``POST /api/method/frappe.client.cancel`` ``{"doctype": "Sales Order", "name", "reason"?}``
  cancels a submitted order (``docstatus`` 2, "Cancelled", its reservation freed; ``reason``, an
  extension of the simulator, lands in ``custom_cancel_reason``) and answers ``{"message": doc}``;
  refused (417) once anything was delivered; cancelling a cancelled order answers it again.
  ERP-side changes (fraud, no stock): ``cancel_order`` / ``close_order`` in process and
  ``POST /_sim/orders/{name}/cancel|close`` ``{"reason"}``. Every change of an order bumps its
  ``modified``, so ``Sales Order`` can be polled by ``modified`` like Bins.

Duplicates, as ERPNext answers them (no replay header, no idempotency of its own):

* ``po_no`` is not unique. A second Sales Order with the ``po_no`` of an open one *for the same
  customer* is refused with 417 ValidationError "Sales Order X already exists against Customer's
  Purchase Order Y ..." (ERPNext v15 ``validate_po`` with the Selling Setting
  ``allow_against_multiple_purchase_orders`` off, config of the same name) or, with it on,
  created with a warning in ``_server_messages``.
* Unique Custom Fields (``site.CUSTOM_FIELDS``: ``custom_marketplace_order_key``
  on Sales Order, ``custom_shipment_id``/``custom_return_id`` on Delivery Note,
  ``custom_return_id`` on Sales Invoice) refuse a second document with the same value: 417
  ``UniqueValidationError`` "<Label> must be unique", what Frappe raises on the database's unique
  index. Nothing is created or moved by a refused post.
* Fields a doctype does not define are dropped, links (Customer, Company, Warehouse, Item) are
  checked, and foreign currencies are converted, see ``simulators.erpnext.meta``; totals follow
  ERPNext's discounts (``simulators.erpnext.docs._totals``).

What it adds, as a test double: fault injection (latency, 5xx, slow answers, on posts only), an
oversold-units counter and test-only control endpoints under ``/_sim`` (``stats``, ``orders``,
``stock``, ``finance``, ``config``, ``reset``). ``stats()["duplicates_refused"]`` counts the
posts refused as duplicates (``idempotent_replays`` is the same number, kept for older readers).
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from retail_sync.simulators.erpnext.docs import (
    DocValidationError,
    LinkValidationError,
    UniqueValidationError,
    _number,
    apply_billing,
    apply_delivery,
    apply_return,
    build_sales_order,
    check_delivery,
    conditions_of,
    end_order,
    fully_delivered,
    list_documents,
    order_item,
    server_messages,
)
from retail_sync.simulators.erpnext.finance import SALES_INVOICE, FinanceBook
from retail_sync.simulators.erpnext.meta import MASTER_DOCTYPES, Masters, keep_defined
from retail_sync.simulators.erpnext.site import CUSTOM_FIELDS, unique_fields
from retail_sync.simulators.erpnext.stock import (
    BIN,
    DEFAULT_WAREHOUSE,
    DELIVERY_NOTE,
    LEDGER,
    RECONCILIATION,
    STOCK_DOCTYPES,
    STOCK_ENTRY,
    FrappeClock,
    StockBook,
)
from retail_sync.simulators.server import SimulatorServer

DOCTYPE = "Sales Order"
CREATABLE = (DOCTYPE, *STOCK_DOCTYPES, SALES_INVOICE, *MASTER_DOCTYPES)
CUSTOM_FIELD = "Custom Field"
READABLE = (*CREATABLE, BIN, LEDGER, CUSTOM_FIELD)
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
    #: the first this many requests that can fail (or be slow) do, whatever the rates: faults a
    #: test can count on however its requests are batched; then the rates apply
    error_first: int = 0
    slow_first: int = 0
    #: an injected 429 or 5xx says ``Retry-After: <this many seconds>`` (a proxy in front of
    #: Frappe or a rate limiter does); 0: a 429 says 1, a 5xx none
    error_retry_after_s: int = 0
    api_key: str = "demo-key"
    api_secret: str = "demo-secret"  # noqa: S105 - demo credential of a simulator
    seed: int | None = None
    #: Selling Settings: allow a second Sales Order for the same customer and po_no (with a
    #: warning) instead of refusing it
    allow_against_multiple_purchase_orders: bool = False
    #: an Item the ERP does not know: "refuse" (417 LinkValidationError, as ERPNext) or "create"
    #: it on first sight (for worker tests that do not model the item master)
    unknown_items: str = "refuse"
    #: the site's Custom Fields (``GET /api/resource/Custom Field``) are ``CUSTOM_FIELDS`` but
    #: these ("Doctype.fieldname"), missing or not unique: a site set up wrong, for the
    #: worker's start-up check (the documents the simulator stores do not change)
    missing_custom_fields: list[str] = field(default_factory=list)
    non_unique_custom_fields: list[str] = field(default_factory=list)

    def updated(self, changes: JSON) -> ErpSimConfig:
        """A copy with ``changes`` applied; unknown fields or wrong types raise ValueError."""
        known = {f.name: f for f in fields(self)}
        unknown = set(changes) - set(known)
        if unknown:
            raise ValueError(f"unknown config fields: {sorted(unknown)}")
        merged = {**asdict(self), **changes}
        for name in ("latency_ms", "latency_jitter_ms", "error_rate", "slow_rate", "slow_ms"):
            merged[name] = float(merged[name])
        for name in ("error_status", "error_first", "slow_first", "error_retry_after_s"):
            merged[name] = int(merged[name])
        merged["allow_against_multiple_purchase_orders"] = bool(
            merged["allow_against_multiple_purchase_orders"])
        if merged["unknown_items"] not in ("refuse", "create"):
            raise ValueError("unknown_items must be 'refuse' or 'create'")
        for name in ("missing_custom_fields", "non_unique_custom_fields"):
            value = merged[name]
            if not isinstance(value, list) or not all(isinstance(v, str) and "." in v for v in value):
                raise ValueError(f"{name} must be a list of 'Doctype.fieldname'")
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
    "duplicates_refused",
    "errors_injected",
    "validation_errors",
    "auth_failures",
    "slow_injected",
    "stock_documents",
    "cancellations",
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
        self.clock = FrappeClock()  # kept across resets: timestamps never go back
        self.reset()

    # --- state ----------------------------------------------------------------------------

    def reset(self) -> None:
        """Forget every order and all stock, zero the counters (the naming series restart too)."""
        self.orders: dict[str, StoredOrder] = {}
        self._by_po_no: dict[str, str] = {}
        #: po_no -> the Sales Orders with it, oldest first (the database's index on po_no)
        self._po_nos: dict[str, list[str]] = {}
        self._created_seq: dict[str, int] = {}  # name -> its place in creation order
        self._series: dict[int, int] = {}
        self._stats = dict.fromkeys(_STAT_KEYS, 0)
        self.stock = StockBook(self.clock)
        self.finance = FinanceBook()
        self.masters = Masters(create_unknown_items=self.config.unknown_items == "create")
        #: (doctype, unique custom field) -> value -> document name: the unique index
        self._unique: dict[tuple[str, str], dict[str, str]] = {}

    def stats(self) -> dict[str, int]:
        invoices, credit_notes = self.finance.counts()
        notes = [d for d in self.stock.documents[DELIVERY_NOTE].values() if d["docstatus"] == 1]
        returns = sum(1 for d in notes if d.get("is_return"))
        return {**self._stats, "idempotent_replays": self._stats["duplicates_refused"],
                "items_created_on_sight": self.masters.items_created_on_sight,
                "oversold_units": self.stock.oversold_units(),
                "invoices": invoices, "credit_notes": credit_notes,
                "delivery_notes": len(notes) - returns, "returns": returns}  # fmt: skip

    # --- stock, in process (tests) ---------------------------------------------------------

    def set_stock(self, item_code: str, qty: int, *, warehouse: str = DEFAULT_WAREHOUSE) -> JSON:
        """Set on hand through a Stock Reconciliation (a ledger entry, a ``modified`` bump);
        answers the Bin. Raises DocValidationError for a bad quantity."""
        self.add_item(item_code, warehouse=warehouse)
        row = {"item_code": item_code, "warehouse": warehouse, "qty": qty}
        self._submit_stock(RECONCILIATION, {"purpose": "Stock Reconciliation", "items": [row]})
        return self.stock.bins[item_code, warehouse].doc()

    def receive(self, item_code: str, qty: int, *, warehouse: str = DEFAULT_WAREHOUSE) -> JSON:
        """Add ``qty`` on hand through a Material Receipt (creating the Bin); answers the Bin."""
        self.add_item(item_code, warehouse=warehouse)
        row = {"item_code": item_code, "t_warehouse": warehouse, "qty": qty}
        self._submit_stock(STOCK_ENTRY, {"stock_entry_type": "Material Receipt", "items": [row]})
        return self.stock.bins[item_code, warehouse].doc()

    def add_item(self, item_code: str, *, warehouse: str | None = None) -> None:
        """Create the Item (and the Warehouse) master record, as a seller does before selling or
        receiving it; known ones are left as they are."""
        self.masters.items.add(item_code)
        if warehouse:
            self.masters.warehouses.add(warehouse)

    def bins(self) -> list[JSON]:
        """Every Bin (a copy), by item and warehouse."""
        return [b.doc() for _, b in sorted(self.stock.bins.items())]

    def stock_report(self) -> JSON:
        """What ``GET /_sim/stock`` answers: every Bin and the oversold units per item."""
        return {
            "bins": [
                {k: b[k] for k in ("name", "item_code", "warehouse", "actual_qty", "reserved_qty",
                                   "projected_qty", "modified")}
                for b in self.bins()
            ],
            "oversold": dict(sorted(self.stock.oversold.items())),
            "oversold_units": self.stock.oversold_units(),
        }  # fmt: skip

    def _submit_stock(self, doctype: str, body: Any) -> JSON:
        doc = self.stock.submit(doctype, {"docstatus": 1, **body} if isinstance(body, dict) else body)
        self._stats["stock_documents"] += 1
        return doc

    def order_by_po_no(self, po_no: str) -> StoredOrder | None:
        """The first Sales Order created with ``po_no`` (there may be more: see the module doc)."""
        name = self._by_po_no.get(po_no)
        return self.orders[name] if name else None

    def set_config(self, changes: JSON) -> ErpSimConfig:
        new = self.config.updated(changes)
        self.masters.create_unknown_items = new.unknown_items == "create"
        if new.seed != self.config.seed:
            self._rng = random.Random(new.seed)
        self.config = new
        return new

    def _next_name(self, year: int) -> str:
        """``SAL-ORD-.YYYY.-`` naming series: a five-digit counter per year (of the creation)."""
        counter = self._series.get(year, 0) + 1
        self._series[year] = counter
        return f"SAL-ORD-{year}-{counter:05d}"

    # --- server lifecycle -----------------------------------------------------------------

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/api/resource/{doctype}", self._create)
        app.router.add_get("/api/resource/{doctype}", self._list)
        app.router.add_get("/api/resource/{doctype}/{name}", self._read)
        app.router.add_post("/api/method/frappe.client.cancel", self._method_cancel)
        app.router.add_post("/api/method/frappe.client.insert_many", self._method_insert_many)
        app.router.add_get("/_sim/stats", self._sim_stats)
        app.router.add_get("/_sim/orders", self._sim_orders)
        app.router.add_post("/_sim/orders/{name}/{action:cancel|close}", self._sim_end_order)
        app.router.add_get("/_sim/finance", self._sim_finance)
        app.router.add_get("/_sim/stock", self._sim_stock)
        app.router.add_post("/_sim/stock", self._sim_set_stock)
        app.router.add_put("/_sim/config", self._sim_config)
        app.router.add_post("/_sim/reset", self._sim_reset)
        return app

    async def _inject_latency(self, *, slow: bool = True) -> None:
        cfg = self.config
        delay_ms = cfg.latency_ms + self._rng.uniform(-1, 1) * cfg.latency_jitter_ms
        if slow:
            delay_ms += self._slow_ms()
        if delay_ms > 0:
            await asyncio.sleep(delay_ms / 1000)

    def _slow_ms(self) -> float:
        cfg = self.config
        first = self._stats["slow_injected"] < cfg.slow_first
        if first or (cfg.slow_rate and self._rng.random() < cfg.slow_rate):
            self._stats["slow_injected"] += 1
            return cfg.slow_ms
        return 0.0

    def _injected_error(self) -> web.Response | None:
        cfg = self.config
        first = self._stats["errors_injected"] < cfg.error_first
        if not (first or (cfg.error_rate and self._rng.random() < cfg.error_rate)):
            return None
        self._stats["errors_injected"] += 1
        if cfg.error_status == 429:
            resp = frappe_error(429, "TooManyRequestsError", "Too many requests (injected)")
            resp.headers["Retry-After"] = str(cfg.error_retry_after_s or 1)
            return resp
        resp = frappe_error(cfg.error_status, "ServerError", "Service unavailable (injected fault)")
        if cfg.error_retry_after_s:
            resp.headers["Retry-After"] = str(cfg.error_retry_after_s)
        return resp

    def _auth_error(self, request: web.Request) -> web.Response | None:
        expected = f"token {self.config.api_key}:{self.config.api_secret}"
        if request.headers.get("Authorization") == expected:
            return None
        self._stats["auth_failures"] += 1
        return frappe_error(401, "AuthenticationError", "Invalid API key or secret")

    async def _guard(
        self, request: web.Request, *, inject_errors: bool, doctype: str | None = None,
        slow: bool = True,
    ) -> web.Response | None:
        """Latency, injected errors, auth and doctype checks shared by the /api routes."""
        await self._inject_latency(slow=slow)
        error = self._injected_error() if inject_errors else None
        error = error or self._auth_error(request)
        doctype = doctype or request.match_info["doctype"]
        if error is None and doctype not in READABLE:
            error = frappe_error(404, "DoesNotExistError", f"DocType {doctype} not found")
        if error is None and request.method == "POST" and doctype not in CREATABLE:
            error = frappe_error(403, "PermissionError", f"Not permitted to insert {doctype}")
        return error

    # --- /api/resource handlers -----------------------------------------------------------

    async def _create(self, request: web.Request) -> web.Response:
        self._stats["posts_received"] += 1
        error = await self._guard(request, inject_errors=True, slow=False)
        if error is not None:
            return error
        answer = await self._insert(request)
        # a slow answer comes after the commit: the document exists even when the client has
        # given up waiting (a post that "timed out" may well have created it)
        slow_ms = self._slow_ms()
        if slow_ms:
            await asyncio.sleep(slow_ms / 1000)
        return answer

    async def _insert(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            return self._validation_error("Request body is not valid JSON")
        doctype = request.match_info["doctype"]
        # no await from here to the answer: checks and insert are atomic, like a transaction
        try:
            if doctype == DOCTYPE:
                return self._create_sales_order(body)
            if doctype in MASTER_DOCTYPES:
                doc = self.masters.create(doctype, body if isinstance(body, dict) else {})
            elif doctype == DELIVERY_NOTE:
                self._check_unique(DELIVERY_NOTE, body)
                doc = self.submit_delivery(body)
                self._index_unique(DELIVERY_NOTE, doc)
                self._stats["stock_documents"] += 1
            elif doctype == SALES_INVOICE:
                self._check_unique(SALES_INVOICE, body)
                body = keep_defined(SALES_INVOICE, body) if isinstance(body, dict) else body
                doc = self.finance.credit_note(body, self._order_of, self.clock.tick())
                self._index_unique(SALES_INVOICE, doc)
            else:
                doc = self.stock.submit(doctype, body)
                self._stats["stock_documents"] += 1
        except DocValidationError as exc:
            return self._validation_error(exc)
        return web.json_response({"data": doc})

    def _check_unique(self, doctype: str, body: Any) -> None:
        """Frappe's unique index: a unique Custom Field's value may be stored once per doctype
        (empty values are NULL and never clash)."""
        if not isinstance(body, dict):
            return
        for name in unique_fields(doctype):
            value = body.get(name)
            if isinstance(value, str) and value.strip() and value in self._unique.get(
                    (doctype, name), {}):
                self._stats["duplicates_refused"] += 1
                label = CUSTOM_FIELDS[doctype][name]["label"]
                raise UniqueValidationError(f"{label} must be unique")

    def _index_unique(self, doctype: str, doc: JSON) -> None:
        for name in unique_fields(doctype):
            value = doc.get(name)
            if isinstance(value, str) and value.strip():
                self._unique.setdefault((doctype, name), {})[value] = doc["name"]

    def _same_po_no(self, body: JSON) -> str | None:
        """An open (draft or submitted) Sales Order of the same customer with this po_no."""
        same = (self.orders.get(name) for name in self._po_nos.get(body.get("po_no") or "", []))
        return next((stored.doc["name"] for stored in same
                     if stored is not None and stored.doc["customer"] == body.get("customer")
                     and stored.doc["docstatus"] < 2), None)  # fmt: skip

    def _create_sales_order(self, body: Any) -> web.Response:
        """Insert a Sales Order as ERPNext does: validate (links, po_no per customer), then the
        unique index, then store and (submitted) reserve."""
        doc, warning = self._checked_sales_order(body)
        doc = self._store_sales_order(doc)
        answer: JSON = {"data": doc}
        if warning:
            answer["_server_messages"] = json.dumps([json.dumps(
                {"message": warning, "title": "Message", "indicator": "orange"})])
        return web.json_response(answer)

    def _checked_sales_order(self, body: Any) -> tuple[JSON, str | None]:
        """The Sales Order ``body`` makes, validated against what is stored (and a warning), or
        DocValidationError; stores nothing."""
        now = self.clock.tick()
        doc = build_sales_order(body, now=now, masters=self.masters)
        warning = None
        existing = self._same_po_no(doc)
        if existing is not None:
            if not self.config.allow_against_multiple_purchase_orders:
                self._stats["duplicates_refused"] += 1
                raise DocValidationError(
                    f"Sales Order {existing} already exists against Customer's Purchase Order "
                    f"{doc['po_no']}. To allow multiple Sales Orders, Enable 'Allow Multiple "
                    "Sales Orders Against a Customer's Purchase Order' in Selling Settings"
                )
            warning = (f"Warning: Sales Order {existing} already exists against Customer's "
                       f"Purchase Order {doc['po_no']}")  # fmt: skip
        self._check_unique(DOCTYPE, doc)
        return doc, warning

    def _store_sales_order(self, doc: JSON) -> JSON:
        """Name, store, index and (submitted) reserve a checked Sales Order."""
        doc = {**doc, "name": self._next_name(int(str(doc["creation"])[:4]))}
        for row in (*doc["items"], *doc["taxes"]):
            row["parent"] = doc["name"]
        self.orders[doc["name"]] = StoredOrder(doc, time.time(), time.monotonic())
        self._by_po_no.setdefault(doc["po_no"], doc["name"])
        self._po_nos.setdefault(doc["po_no"], []).append(doc["name"])
        self._created_seq[doc["name"]] = len(self._created_seq)
        self._index_unique(DOCTYPE, doc)
        self._stats["orders_created"] += 1
        if doc["docstatus"] == 1:
            self.stock.submit_sales_order(doc)  # Bins modified after the order's creation
        return doc

    async def _method_insert_many(self, request: web.Request) -> web.Response:
        """Frappe's ``frappe.client.insert_many``: ``{"docs": [...]}`` (a list, or its JSON
        text), at most 200, inserted in one request's transaction: every one, or none (the first
        refusal is the answer). ``{"message": [names, in the order of the docs]}``. The
        simulator inserts Sales Orders this way (its other doctypes: one POST each)."""
        self._stats["posts_received"] += 1
        error = await self._guard(request, inject_errors=True, doctype=DOCTYPE, slow=False)
        if error is not None:
            return error
        try:
            body = await request.json()
            docs = body.get("docs") if isinstance(body, dict) else None
            docs = json.loads(docs) if isinstance(docs, str) else docs
        except (json.JSONDecodeError, UnicodeDecodeError):
            return self._validation_error("Request body is not valid JSON")
        if not isinstance(docs, list) or not all(isinstance(d, dict) for d in docs):
            return self._validation_error("docs must be a list of documents")
        if len(docs) > 200:
            return self._validation_error("Only 200 inserts allowed in one request")
        if any(d.get("doctype") != DOCTYPE for d in docs):
            return self._validation_error(
                "The simulator inserts only Sales Orders with insert_many")
        # no await from here to the answer: all checks first, then all inserts (the transaction)
        checked: list[JSON] = []
        try:
            for body_doc in docs:
                doc, _ = self._checked_sales_order(body_doc)
                self._check_within(doc, checked)
                checked.append(doc)
        except DocValidationError as exc:
            return self._validation_error(exc)
        names = [self._store_sales_order(doc)["name"] for doc in checked]
        slow_ms = self._slow_ms()
        if slow_ms:
            await asyncio.sleep(slow_ms / 1000)
        return web.json_response({"message": names})

    def _check_within(self, doc: JSON, earlier: list[JSON]) -> None:
        """What one request's earlier inserts would refuse ``doc`` for: the unique index and the
        same po_no for the same customer (not yet stored, so ``_checked_sales_order`` cannot)."""
        for name in unique_fields(DOCTYPE):
            value = doc.get(name)
            if isinstance(value, str) and value.strip() and any(e.get(name) == value
                                                                for e in earlier):
                self._stats["duplicates_refused"] += 1
                raise UniqueValidationError(f"{CUSTOM_FIELDS[DOCTYPE][name]['label']} must be unique")
        if not self.config.allow_against_multiple_purchase_orders and any(
                e["po_no"] == doc["po_no"] and e["customer"] == doc["customer"] for e in earlier):
            self._stats["duplicates_refused"] += 1
            raise DocValidationError(f"Sales Order against Customer's Purchase Order {doc['po_no']} "
                                     "is inserted twice in one request")

    def _validation_error(self, exc: DocValidationError | str) -> web.Response:
        self._stats["validation_errors"] += 1
        reason = str(exc)
        exc_type = exc.exc_type if isinstance(exc, DocValidationError) else "ValidationError"
        status = exc.status if isinstance(exc, DocValidationError) else 417
        return frappe_error(status, exc_type, reason, _server_messages=server_messages(reason))

    # --- after the order: shipments, returns, credit notes, cancellations -------------------

    def submit_delivery(self, body: Any) -> JSON:
        """Insert a Delivery Note (a return when ``is_return``); submitted against Sales Orders it
        moves them on and raises their invoices. Raises DocValidationError, changing nothing."""
        if not isinstance(body, dict):
            raise DocValidationError("Request body must be a JSON object")
        body = keep_defined(DELIVERY_NOTE, body)
        self._check_links(body)
        if body.get("is_return"):
            return self._submit_return(body)
        shipped = self._against_orders(body) if body.get("docstatus") == 1 else []
        note = self.stock.submit(DELIVERY_NOTE, body)
        invoices = [self._bill(order, note, rows) for order, rows in _by_order(shipped)]
        if invoices:
            note.update(custom_sales_invoice=invoices[0], per_billed=100.0, status="Completed")
        return note

    def _against_orders(self, body: JSON) -> list[tuple[JSON, int, JSON, float]]:
        """(order, row index, order item, qty) for every row shipping against a Sales Order,
        checked against what each order item has left to deliver."""
        shipped = []
        for idx, row in enumerate(body.get("items") or [], start=1):
            name = row.get("against_sales_order") if isinstance(row, dict) else None
            if not name:
                continue
            stored = self.orders.get(name)
            if stored is None:
                raise DocValidationError(f"Row #{idx}: Sales Order {name} not found")
            qty = float(_number(row.get("qty"), f"Row #{idx}: Quantity"))
            shipped.append((stored.doc, idx - 1, order_item(stored.doc, row, idx), qty))
        for order, rows in _by_order(shipped):
            check_delivery(order, [(item, qty) for _, item, qty in rows])
        return shipped

    def _bill(self, order: JSON, note: JSON, rows: list[tuple[int, JSON, float]]) -> str:
        """Move the order on for ``rows`` of ``note`` and raise their invoice; its name."""
        apply_delivery(order, [(item, qty) for _, item, qty in rows], self.clock.stamp())
        pairs = [(item, note["items"][idx]) for idx, item, _ in rows]
        invoice, billed = self.finance.invoice_delivery(
            order, note, pairs, self.clock.tick(), completes=fully_delivered(order)
        )
        apply_billing(order, billed, self.clock.stamp())
        return str(invoice["name"])

    def _submit_return(self, body: JSON) -> JSON:
        original = self._return_against(body.get("return_against"))
        returned = [self._returned_row(original, row, idx)
                    for idx, row in enumerate(body.get("items") or [], start=1)]  # fmt: skip
        note = self.stock.submit(DELIVERY_NOTE, body)
        if note["docstatus"] != 1:
            return note
        for row, qty in (r for r in returned if r is not None):
            row["returned_qty"] = row.get("returned_qty", 0.0) + qty
            self._mark_returned(row["parent"])
            stored = self.orders.get(row.get("against_sales_order") or "")
            if stored is not None:
                item = order_item(stored.doc, row, row["idx"])
                apply_return(stored.doc, [(item, qty)], self.clock.stamp())
        return note

    def _return_against(self, name: Any) -> JSON | None:
        if name in (None, ""):
            return None
        original = self.stock.find(DELIVERY_NOTE, name) if isinstance(name, str) else None
        if original is None or original.get("is_return") or original["docstatus"] != 1:
            raise DocValidationError(f"Return Against: Delivery Note {name!r} not found")
        return original

    def _returned_row(
        self, original: JSON | None, row: Any, idx: int
    ) -> tuple[JSON, float] | None:
        """The original Delivery Note row a return row sends back (by ``dn_detail``, else by
        item in ``return_against``) and the units, checked against what is left to return."""
        if not isinstance(row, dict):
            return None
        notes = [original] if original else list(self.stock.documents[DELIVERY_NOTE].values())
        rows = [r for n in notes if not n.get("is_return") for r in n["items"]]
        detail = row.get("dn_detail")
        match = next((r for r in rows if r["name"] == detail), None) if detail else None
        if match is None and original is not None:
            match = next((r for r in rows if r["item_code"] == row.get("item_code")), None)
        if match is None:
            if detail or original is not None:
                raise DocValidationError(f"Row #{idx}: the returned row is not in {detail!r}")
            return None
        qty = -float(_number(row.get("qty"), f"Row #{idx}: Quantity"))
        left = match["qty"] - match.get("returned_qty", 0.0)
        if qty > left:
            raise DocValidationError(
                f"Row #{idx}: Returned Qty {qty:g} of Item {match['item_code']} exceeds the "
                f"{left:g} delivered and not yet returned"
            )
        return match, qty

    def _mark_returned(self, name: str) -> None:
        note = self.stock.documents[DELIVERY_NOTE][name]
        shipped = sum(r["qty"] for r in note["items"])
        back = sum(r.get("returned_qty", 0.0) for r in note["items"])
        note["per_returned"] = round(100.0 * back / shipped, 2) if shipped else 0.0
        if back >= shipped:
            note["status"] = "Return Issued"
        note["modified"] = self.clock.stamp()

    def _check_links(self, body: JSON) -> None:
        """Customer, Company, Warehouse and Item links of a posted document (LinkValidationError)."""
        masters = self.masters
        checks = [("Customer", body.get("customer"), masters.customers),
                  ("Company", body.get("company"), masters.companies),
                  ("Set Source Warehouse", body.get("set_warehouse"), masters.warehouses)]
        for idx, row in enumerate(body.get("items") or [], start=1):
            if isinstance(row, dict):
                code = row.get("item_code")
                if isinstance(code, str) and code and not masters.has_item(code):
                    raise LinkValidationError(f"Could not find Row #{idx}: Item Code: {code}")
                checks.append((f"Row #{idx}: Warehouse", row.get("warehouse"), masters.warehouses))
        for label, value, known in checks:
            if isinstance(value, str) and value and value not in known:
                raise LinkValidationError(f"Could not find {label}: {value}")

    def _order_of(self, sales_order: str | None, po_no: str | None) -> JSON | None:
        stored = self.orders.get(sales_order or "") or self.order_by_po_no(po_no or "")
        return stored.doc if stored else None

    def cancel_order(self, name: str, reason: str | None = None) -> JSON:
        """Cancel a submitted Sales Order (its reservation freed); a cancelled one is answered
        as is. LookupError if unknown, DocValidationError if a draft or anything was delivered."""
        doc = self._order_doc(name)
        if doc["docstatus"] == 2:
            return doc
        if doc["docstatus"] == 0:
            raise DocValidationError(f"Cannot cancel Sales Order {name} before submitting")
        notes = [n["name"] for n in self.stock.documents[DELIVERY_NOTE].values()
                 if n["docstatus"] == 1 and not n.get("is_return")
                 and any(r.get("against_sales_order") == name for r in n["items"])]  # fmt: skip
        if notes or any(item["delivered_qty"] for item in doc["items"]):
            raise DocValidationError(
                f"Cannot cancel because submitted Delivery Note {', '.join(notes)} exists"
            )
        end_order(doc, cancel=True, reason=reason, stamp=self.clock.stamp())
        self.stock.release_sales_order(name)
        self._stats["cancellations"] += 1
        return doc

    def close_order(self, name: str, reason: str | None = None) -> JSON:
        """Close a submitted Sales Order (nothing more ships; what it still reserves is freed)."""
        doc = self._order_doc(name)
        if doc["status"] == "Closed":
            return doc
        if doc["docstatus"] != 1 or doc["status"] == "Completed":
            raise DocValidationError(f"Sales Order {name} is {doc['status']}; it cannot be closed")
        end_order(doc, cancel=False, reason=reason, stamp=self.clock.stamp())
        self.stock.release_sales_order(name)
        return doc

    def _order_doc(self, name: str) -> JSON:
        stored = self.orders.get(name)
        if stored is None:
            raise LookupError(name)
        return stored.doc

    async def _method_cancel(self, request: web.Request) -> web.Response:
        """Frappe's ``frappe.client.cancel`` for Sales Orders: ``{"doctype", "name", "reason"?}``."""
        error = await self._guard(request, inject_errors=True, doctype=DOCTYPE)
        if error is not None:
            return error
        try:
            body = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            return self._validation_error("Request body is not valid JSON")
        if not isinstance(body, dict) or body.get("doctype") != DOCTYPE:
            return self._validation_error("Only a Sales Order can be cancelled here")
        name, reason = str(body.get("name")), body.get("reason")
        try:
            doc = self.cancel_order(name, reason if isinstance(reason, str) else None)
        except LookupError:
            return frappe_error(404, "DoesNotExistError", f"Sales Order {name} not found")
        except DocValidationError as exc:
            return self._validation_error(exc)
        return web.json_response({"message": doc})

    def _master_docs(self, doctype: str) -> list[JSON]:
        masters = self.masters
        names = {"Item": masters.items, "Customer": masters.customers,
                 "Warehouse": masters.warehouses}[doctype]  # fmt: skip
        return [{"doctype": doctype, "name": n} for n in sorted(names)]

    async def _read(self, request: web.Request) -> web.Response:
        error = await self._guard(request, inject_errors=False, slow=False)
        if error is not None:
            return error
        doctype, name = request.match_info["doctype"], request.match_info["name"]
        if doctype == DOCTYPE:
            stored = self.orders.get(name)
            doc = stored.doc if stored else None
        elif doctype == SALES_INVOICE:
            doc = self.finance.find(name)
        elif doctype in MASTER_DOCTYPES:
            doc = next((d for d in self._master_docs(doctype) if d["name"] == name), None)
        else:
            doc = self.stock.find(doctype, name)
        if doc is None:
            return frappe_error(404, "DoesNotExistError", f"{doctype} {name} not found")
        return web.json_response({"data": doc})

    def custom_field_docs(self) -> list[JSON]:
        """The site's Custom Field documents: ``CUSTOM_FIELDS`` as ERPNext stores them (name
        ``<dt>-<fieldname>``, ``unique`` 0/1), less ``missing_custom_fields``, with
        ``non_unique_custom_fields`` not unique."""
        missing, plain = set(self.config.missing_custom_fields), set(self.config.non_unique_custom_fields)
        return [{"name": f"{dt}-{name}", "doctype": CUSTOM_FIELD, "dt": dt, "fieldname": name,
                 **df, "unique": 0 if f"{dt}.{name}" in plain else int(df.get("unique", 0))}
                for dt, defined in CUSTOM_FIELDS.items() for name, df in defined.items()
                if f"{dt}.{name}" not in missing]  # fmt: skip

    async def _list(self, request: web.Request) -> web.Response:
        error = await self._guard(request, inject_errors=False, slow=False)
        if error is not None:
            return error
        doctype = request.match_info["doctype"]
        if doctype == DOCTYPE:
            docs = self._sales_orders_for(request.query.get("filters"))
        elif doctype == SALES_INVOICE:
            docs = self.finance.docs()
        elif doctype in MASTER_DOCTYPES:
            docs = self._master_docs(doctype)
        elif doctype == CUSTOM_FIELD:
            docs = self.custom_field_docs()
        else:
            docs = self.stock.docs(doctype)
        try:
            rows = list_documents(docs, dict(request.query), doctype=doctype)
        except DocValidationError as exc:
            return self._validation_error(str(exc))
        return web.json_response({"data": rows})

    def _sales_orders_for(self, filters: str | None) -> list[JSON]:
        """The Sales Orders a list request's filters can match, newest first: through an index
        (the name, ``po_no``, a unique Custom Field) when the filters test one of them for
        equality, as the database would use it; else all of them. ``list_documents`` applies
        every filter either way: the index only spares a scan of every order."""
        names: list[str] | None = None
        try:
            conditions = conditions_of(json.loads(filters), DOCTYPE) if filters else []
        except (ValueError, DocValidationError):
            conditions = []  # list_documents answers the error
        for field_name, op, value in conditions:
            values = [value] if op == "=" else value if op == "in" else None
            if not (isinstance(values, list) and all(isinstance(v, str) for v in values)):
                continue
            if field_name == "name":
                names = list(values)
            elif field_name == "po_no":
                names = [n for v in values for n in self._po_nos.get(v, [])]
            elif field_name in unique_fields(DOCTYPE):
                index = self._unique.get((DOCTYPE, field_name), {})
                names = [index[v] for v in values if v in index]
            if names is not None:
                found = sorted({n for n in names if n in self.orders},
                               key=self._created_order, reverse=True)
                return [self.orders[n].doc for n in found]
        return [stored.doc for stored in reversed(self.orders.values())]  # newest first

    def _created_order(self, name: str) -> int:
        """A stored Sales Order's place in creation order (the list's default order)."""
        return self._created_seq[name]

    # --- /_sim control endpoints (test-only) ----------------------------------------------

    async def _sim_stats(self, _request: web.Request) -> web.Response:
        return web.json_response(self.stats())

    async def _sim_orders(self, _request: web.Request) -> web.Response:
        return web.json_response([stored.summary() for stored in self.orders.values()])

    async def _sim_finance(self, _request: web.Request) -> web.Response:
        return web.json_response(self.finance.summaries())

    async def _sim_end_order(self, request: web.Request) -> web.Response:
        """``{"reason"?}``: the ERP itself cancels (or closes) the order."""
        name, action = request.match_info["name"], request.match_info["action"]
        try:
            body = await request.json() if request.can_read_body else {}
            reason = body.get("reason") if isinstance(body, dict) else None
            end = self.cancel_order if action == "cancel" else self.close_order
            doc = end(name, reason)
        except LookupError:
            return web.json_response({"error": f"Sales Order {name} not found"}, status=404)
        except (ValueError, TypeError) as exc:  # DocValidationError is a ValueError
            return web.json_response({"error": str(exc)}, status=400)
        return web.json_response(doc)

    async def _sim_stock(self, _request: web.Request) -> web.Response:
        return web.json_response(self.stock_report())

    async def _sim_set_stock(self, request: web.Request) -> web.Response:
        """``{"item_code", "qty", "warehouse"?}``: set on hand through a Stock Reconciliation."""
        try:
            body = await request.json()
            if not isinstance(body, dict) or not isinstance(body.get("item_code"), str):
                raise ValueError("body must be a JSON object with item_code and qty")
            warehouse = body.get("warehouse") or DEFAULT_WAREHOUSE
            qty: Any = body.get("qty")  # the reconciliation validates it
            row = self.set_stock(body["item_code"], qty, warehouse=warehouse)
        except (ValueError, TypeError) as exc:  # DocValidationError is a ValueError
            return web.json_response({"error": str(exc)}, status=400)
        return web.json_response(row)

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


def _by_order(
    shipped: list[tuple[JSON, int, JSON, float]],
) -> list[tuple[JSON, list[tuple[int, JSON, float]]]]:
    """Shipped rows grouped by their order, in first-seen order."""
    groups: dict[str, tuple[JSON, list[tuple[int, JSON, float]]]] = {}
    for order, idx, item, qty in shipped:
        groups.setdefault(order["name"], (order, []))[1].append((idx, item, qty))
    return list(groups.values())


async def run_erp_simulator(
    host: str = "127.0.0.1", port: int = 0, config: ErpSimConfig | None = None
) -> ErpSimulator:
    """Start an ERP simulator and return it (its ``base_url`` says where it listens)."""
    simulator = ErpSimulator(config)
    await simulator.start(host, port)
    return simulator
