"""The HTTP contract of a worker as OpenAPI 3.1 (issue 13), served at ``GET /openapi.json``.

The document is built from the code at run time: the paths and methods are the routes actually
registered on the admin listener (Faust's web server) and on the ingress listener
(``retail_sync.ingress``), each operation's security is the scope its view method requires
(``admin_auth.requires`` marks it ``required_scope``), and the record schemas come from the
pydantic models (``OrderState``, ``SyncException``). What the code cannot say (summaries,
parameters, bodies, the answers' shapes) is kept here beside it, in ``OPERATIONS``;
``tests/unit/test_openapi.py`` fails when a registered route is not documented here or a
documented one is not registered. ``HEAD`` (Faust's automatic companion of every view: ``GET``
without the body, same token) is not listed.

``/openapi.json`` itself is open (no token): the contract holds no data. The ingress operation
carries its own ``servers`` entry (the ingress listener, ``RETAIL_SYNC_INGRESS_PORT``); every other
operation is on the admin listener (``RETAIL_SYNC_WEB_PORT``).

Long module: the hand-written part of the contract (every operation's summary, parameters, body
and answers) beside the code that joins it to the registered routes; split, a route's code and
its contract would drift apart in two places instead of one.
"""

from __future__ import annotations

import copy
from typing import Any

import orjson
from pydantic.json_schema import models_json_schema

from retail_sync.streams.models import ExceptionKind, SyncException
from retail_sync.streams.state import OrderState

OPENAPI_VERSION = "3.1.0"
INGRESS = "ingress"
ADMIN = "admin"
#: routes registered only in special builds, not part of the contract
UNDOCUMENTED = {"/debug/memory": "test-only memory probe (RETAIL_SYNC_TEST_MEMDEBUG)"}

_REF = "#/components/schemas/{model}"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _error(description: str) -> dict[str, Any]:
    return _json(_ref("Error"), description)


def _query(name: str, schema: dict[str, Any], description: str,
           required: bool = False) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": required, "schema": schema,
            "description": description}


def _path(name: str, description: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True,
            "schema": {"type": "string", "minLength": 1}, "description": description}


def _body(schema: dict[str, Any], required: bool = False) -> dict[str, Any]:
    return {"required": required, "content": {"application/json": {"schema": schema}}}


_KINDS = [k.value for k in ExceptionKind]
_ORDER_KEY = _path("order_key", "the order's key, ``channel:marketplace order id``")
_ACCEPTED = {"type": "object", "required": ["status"],
             "properties": {"status": {"const": "accepted"}, "request_id": {"type": "string"},
                            "see": {"type": "string"}}}
_ACTION_ERRORS = {"400": _error("the body is not a JSON object of the documented shape"),
                  "404": _error("no such order"),
                  "503": _error("the audit record was not acknowledged: nothing was done")}

_HTML = {"description": "an HTML page (no data: it asks /dashboard/data with the token "
                      "given as #token=... in the URL fragment)",
         "content": {"text/html": {"schema": {"type": "string"}}}}
_OBJ = {"type": "object"}
#: the dashboards and order search (issue 14, retail_sync/dashboard.py)
DASHBOARD_OPERATIONS: dict[tuple[str, str], dict[str, Any]] = {
    ("GET", "/dashboard/ops"): {"summary": "Operations dashboard (HTML, open)",
                                "responses": {"200": _HTML}},
    ("GET", "/dashboard/finance"): {"summary": "Finance/executive dashboard (HTML, open)",
                                    "responses": {"200": _HTML}},
    ("GET", "/dashboard/search"): {"summary": "Order search for support (HTML, open)",
                                   "responses": {"200": _HTML}},
    ("GET", "/dashboard/static/{name}"): {
        "summary": "The pages' script, style and vendored Chart.js (open)",
        "parameters": [_path("name", "dashboard.js, dashboard.css or chart.umd.min.js")],
        "responses": {"200": {"description": "the file", "content": {
            "application/javascript": {"schema": {"type": "string"}},
            "text/css": {"schema": {"type": "string"}}}}, "404": _error("no such file")}},
    ("GET", "/dashboard/data"): {
        "summary": "Every dashboard figure of the whole group (scope=local: this worker's part)",
        "parameters": [_query("scope", {"enum": ["group", "local"]},
                              "local: only this worker's part (what the fan-out asks)")],
        "responses": {"200": _json(_OBJ, "backlog, latency, throughput, exceptions, "
                                         "reconciliation, inventory accuracy, cancellation, "
                                         "order-to-ship, failed transactions, traceability")}},
    ("GET", "/dashboard/orders"): {
        "summary": "An order's journey, found by marketplace id, order name, customer email, "
                   "ERP sales order, tracking number, invoice or credit note",
        "parameters": [_query("q", {"type": "string", "minLength": 1, "maxLength": 256},
                              "what support has", True)],
        "responses": {"200": _json(_OBJ, "the orders with timeline, systems and open "
                                         "exceptions (personal data masked without pii)"),
                      "400": _error("no q"), "404": _error("no order is known by it")}},
}

#: (METHOD, path) -> what the code does not say: summary, parameters, body, answers
OPERATIONS: dict[tuple[str, str], dict[str, Any]] = {
    ("POST", "/webhooks/shopify/{resource}/{event}"): {
        "listener": INGRESS, "summary": "Shopify webhook (HMAC-signed), persisted to Kafka",
        "parameters": [_path("resource", "orders or refunds"),
                       _path("event", "create, updated, cancelled")],
        "requestBody": {"required": True, "content": {"application/json": {"schema": {}}}},
        "security": [{"shopifyHmac": []}],
        "responses": {
            "200": _json(_ref("WebhookOutcome"), "received (or a duplicate delivery)"),
            "400": _json(_ref("WebhookOutcome"), "no X-Shopify-Webhook-Id, bad framing, not JSON"),
            "401": _json(_ref("WebhookOutcome"), "missing or invalid X-Shopify-Hmac-Sha256"),
            "404": _json(_ref("WebhookOutcome"), "a topic not handled here"),
            "408": _json(_ref("WebhookOutcome"), "the body did not arrive in time"),
            "413": _json(_ref("WebhookOutcome"), "body over RETAIL_SYNC_WEBHOOK_MAX_BODY_BYTES"),
            "503": _json(_ref("WebhookOutcome"), "broker away or worker stopping: retry"),
        }},
    ("GET", "/orders/lookup"): {
        "summary": "Orders by marketplace id, order key or ERP sales order name",
        "parameters": [_query("id", {"type": "string", "minLength": 1}, "an order id or key", True),
                       _query("scope", {"enum": ["all", "local"]}, "local: this worker's only")],
        "responses": {
            "200": _json({"type": "object", "required": ["id"], "properties": {
                "id": {"type": "string"}, "orders": {"type": "array", "items": _ref("OrderView")},
                **{k: {"type": "array", "items": {"type": "string"}}
                   for k in ("order_keys", "unreached_workers")}}},
                "the orders it names (personal data masked without the pii scope)"),
            "400": _error("no id, or a bad scope"), "404": _error("no order is known by that id"),
            "503": _error("not found; workers away")}},
    ("GET", "/orders/{order_key}"): {
        "summary": "One order's state, timeline and correlation ids",
        "parameters": [_ORDER_KEY],
        "responses": {"200": _json(_ref("OrderView"), "the order (personal data masked "
                                                      "without the pii scope)"),
                      "404": _error("no such order")}},
    ("POST", "/orders/{order_key}/cancel"): {
        "summary": "Cancel an order (operator)", "parameters": [_ORDER_KEY],
        "requestBody": _body({"type": "object", "properties": {"reason": {"type": "string"}}}),
        "responses": {"202": _json(_ACCEPTED, "accepted: see the order's timeline"),
                      **_ACTION_ERRORS,
                      "409": _error("the order cannot be cancelled in its state")}},
    ("POST", "/orders/{order_key}/returns"): {
        "summary": "Authorise a return/refund of shipped units (operator)",
        "parameters": [_ORDER_KEY],
        "requestBody": _body({"type": "object", "required": ["lines"], "properties": {
            "lines": {"type": "object", "additionalProperties": {"type": "integer"},
                      "description": "line id -> units"},
            "amount": {"type": ["number", "string"], "description": "default: what was paid"},
            "reason": {"type": "string"}, "restock": {"type": "boolean"},
            "refund_id": {"type": "string"}}}, required=True),
        "responses": {"202": _json(_ACCEPTED, "accepted: see the order's timeline"),
                      **_ACTION_ERRORS,
                      "422": _error("lines, units or amount the order does not allow")}},
    ("GET", "/exceptions"): {
        "summary": "Sync exceptions, newest first, with a summary",
        "parameters": [
            _query("kind", {"type": "string", "enum": _KINDS}, "only this kind"),
            _query("channel", {"type": "string"}, "only this channel"),
            _query("older_than_s", {"type": "number", "minimum": 0}, "at least this old"),
            _query("newer_than_s", {"type": "number", "minimum": 0}, "at most this old"),
            _query("limit", {"type": "integer", "minimum": 0, "maximum": 10_000},
                   "at most this many (default 200)")],
        "responses": {
            "200": _json({"type": "object", "required": ["summary", "matched", "exceptions"],
                          "properties": {
                              "summary": {"type": "object"}, "matched": {"type": "integer"},
                              "notes": {"type": "array", "items": {"type": "string"}},
                              "exceptions": {"type": "array",
                                             "items": _ref("ExceptionView")}}},
                         "the records (payloads' personal data masked without the pii scope; "
                         "the stored records are unchanged)"),
            "400": _error("a bad filter")}},
    ("POST", "/exceptions/replay"): {
        "summary": "Resend exception records to their topics (operator)",
        "requestBody": _body({"type": "object", "properties": {
            "ids": {"type": "array", "items": {"type": "string"}},
            "kind": {"type": "string", "enum": _KINDS}, "channel": {"type": "string"}}},
            required=True),
        "responses": {
            "200": _json({"type": "object", "required": ["replayed", "skipped", "results"],
                          "properties": {"replayed": {"type": "integer"},
                                         "skipped": {"type": "integer"},
                                         "results": {"type": "array", "items": {"type": "object"}},
                                         "request_id": {"type": "string"}}},
                         "what was resent and what was not, with why"),
            "400": _error("neither ids nor kind, or a bad kind"),
            "503": _error("the audit record was not acknowledged: nothing was done")}},
    ("GET", "/reconciliation"): {
        "summary": "Gone: reconciliation runs as a job (POST /reconciliation/jobs)",
        "responses": {"410": _json({"type": "object", "required": ["error"], "properties": {
            "error": {"type": "string"}, "start": {"type": "string"},
            "jobs": {"type": "string"}, "last": {"type": ["string", "null"]}}},
            "use the job API")}},
    ("GET", "/reconciliation/jobs"): {
        "summary": "Reconciliation jobs, running and kept",
        "responses": {"200": _json({"type": "object", "required": ["jobs"], "properties": {
            "running": {"type": "integer"}, "kept": {"type": "integer"},
            "jobs": {"type": "array", "items": _ref("ReconciliationJob")}}}, "the jobs")}},
    ("POST", "/reconciliation/jobs"): {
        "summary": "Start a reconciliation job (operator; one at a time per channel)",
        "requestBody": _body({"type": "object", "properties": {
            "channels": {"type": "array", "items": {"type": "string"}},
            "days": {"type": "number", "exclusiveMinimum": 0, "maximum": 3650}}}),
        "responses": {"202": _json(_ref("ReconciliationJob"), "started"),
                      "400": _error("the body is not a JSON object"),
                      "409": _error("a job for one of these channels is running"),
                      "422": _error("unknown channels or bad days"),
                      "503": _error("the audit record was not acknowledged: nothing was done")}},
    ("GET", "/reconciliation/jobs/{job_id}"): {
        "summary": "One reconciliation job and its result",
        "parameters": [_path("job_id", "as answered when it was started")],
        "responses": {"200": _json(_ref("ReconciliationJob"), "the job"),
                      "404": _error("no such job (kept in memory until a restart)")}},
    ("GET", "/audit"): {
        "summary": "The audit trail of admin actions, newest first",
        "parameters": [_query("target", {"type": "string"}, "an order key, exceptions, ..."),
                       _query("actor", {"type": "string"}, "a token name"),
                       _query("since", {"type": "string", "format": "date-time"},
                              "ISO-8601 with a time zone"),
                       _query("limit", {"type": "integer", "minimum": 0, "maximum": 10_000},
                              "at most this many (default 100)")],
        "responses": {"200": _json({"type": "object", "required": ["records"], "properties": {
            "matched": {"type": "integer"}, "notes": {"type": "array"},
            "retention_days": {"type": "number"},
            "records": {"type": "array", "items": {"type": "object"}}}}, "the records"),
            "400": _error("a bad filter")}},
    ("GET", "/inventory/{sku}"): {
        "summary": "A SKU's stock: on hand, reservations, ATS per channel, what each was told",
        "parameters": [_path("sku", "the SKU")],
        "responses": {"200": _json({"type": "object", "required": ["sku", "tracked"],
                                    "properties": {"sku": {"type": "string"},
                                                   "tracked": {"type": "boolean"},
                                                   "ats": {"type": "object"}}}, "the position"),
                      "404": _json({"type": "object", "required": ["error"], "properties": {
                          "sku": {"type": "string"}, "tracked": {"const": False},
                          "error": {"type": "string"}}}, "no stock is known for it")}},
    ("GET", "/metrics"): {
        "summary": "Prometheus exposition",
        "responses": {"200": {"description": "metrics", "content": {
            "text/plain": {"schema": {"type": "string"}}}}}},
    ("GET", "/health"): {
        "summary": "Readiness: partitions assigned, broker reachable (open)",
        "responses": {"200": _json(_ref("Health"), "ready"),
                      "503": _json(_ref("Health"), "starting, rebalancing or broker away")}},
    ("GET", "/health/live"): {
        "summary": "Liveness: 200 while the worker runs (open)",
        "responses": {"200": _json(_ref("Liveness"), "alive"),
                      "503": _json(_ref("Liveness"), "crashed or stopping")}},
    ("GET", "/"): {
        "summary": "Faust's index (open): {\"status\": \"OK\"}",
        "responses": {"200": _json({"type": "object", "properties": {
            "status": {"type": "string"}}}, "the worker answers")}},
    ("GET", "/openapi.json"): {
        "summary": "This document (open)",
        "responses": {"200": _json({"type": "object", "required": ["openapi", "paths"]},
                                   "OpenAPI 3.1")}},
}
OPERATIONS.update(DASHBOARD_OPERATIONS)

_HAND_SCHEMAS: dict[str, Any] = {
    "Error": {"type": "object", "required": ["error"],
              "properties": {"error": {"type": "string"}, "request_id": {"type": "string"}}},
    "WebhookOutcome": {"type": "object", "required": ["status", "message"], "properties": {
        "status": {"type": "string"}, "message": {"type": "string"}}},
    "Health": {"type": "object", "required": ["status", "app_id"], "properties": {
        "status": {"type": "string"}, "app_id": {"type": "string"},
        "assigned_partitions": {"type": "integer"}, "input_partitions": {"type": "integer"},
        "changelog_partitions": {"type": "integer"}, "not_fetching": {"type": "array", "items": {
            "type": "object", "properties": {"topic": {"type": "string"}, "partition": {
                "type": "integer"}, "state": {"enum": [
                    "no position", "awaiting reset", "paused", "paused by Faust", "buffer full",
                    "not active"]}}}},
        "broker": {"type": ["object", "null"]}}},
    "Liveness": {"type": "object", "required": ["status", "app_id"], "properties": {
        "status": {"enum": ["alive", "stopping"]}, "app_id": {"type": "string"}}},
    "ReconciliationJob": {"type": "object", "required": ["job_id", "status"], "properties": {
        "job_id": {"type": "string"}, "status": {"type": "string"},
        "channels": {"type": "array", "items": {"type": "string"}}}},
}


def _open(schema: Any) -> Any:
    """Answers may grow fields (additive changes): no ``additionalProperties: false``."""
    if isinstance(schema, dict):
        return {k: _open(v) for k, v in schema.items()
                if not (k == "additionalProperties" and v is False)}
    if isinstance(schema, list):
        return [_open(v) for v in schema]
    return schema


def component_schemas() -> dict[str, Any]:
    """Record schemas from the models (as serialized) plus the hand-kept ones."""
    _, doc = models_json_schema([(OrderState, "serialization"), (SyncException, "serialization")],
                                ref_template=_REF)
    schemas = _open(doc.get("$defs", {}))
    view = copy.deepcopy(schemas["OrderState"])
    view["properties"]["archived"] = {"type": "boolean",
                                      "description": "a retired order, read from the archive"}
    view["title"] = "OrderView"
    schemas["OrderView"] = view
    exc = copy.deepcopy(schemas["SyncException"])
    exc["properties"]["age_s"] = {"type": "number"}
    exc["title"] = "ExceptionView"
    schemas["ExceptionView"] = exc
    return {**schemas, **_HAND_SCHEMAS}


def registered_routes(app: Any) -> dict[tuple[str, str], str | None]:
    """(METHOD, path) -> required scope of every route of the admin listener (Faust's views;
    HEAD left out) and of the ingress listener (scope None)."""
    from retail_sync.ingress import ingress_app

    routes: dict[tuple[str, str], str | None] = {}
    for path, view in app.web.views.items():
        for method in view.get_methods():
            if method.upper() == "HEAD":
                continue
            handler = getattr(type(view), method.lower(), None)
            routes[(method.upper(), path)] = getattr(handler, "required_scope", None)
    for route in ingress_app(None).router.routes():
        if route.resource is not None:  # every add_post route has its resource
            routes[(route.method.upper(), route.resource.canonical)] = None
    return routes


def build(app: Any, settings: Any = None) -> dict[str, Any]:
    """The OpenAPI 3.1 document of this worker's two listeners."""
    admin_url = str(getattr(settings, "web_url", "") or "http://127.0.0.1:6066").rstrip("/")
    ingress_port = getattr(settings, "ingress_port", 6065)
    paths: dict[str, dict[str, Any]] = {}
    for (method, path), scope in sorted(registered_routes(app).items()):
        if path in UNDOCUMENTED:
            continue
        spec = copy.deepcopy(OPERATIONS.get((method, path)))
        if spec is None:
            spec = {"summary": "undocumented", "responses": {"default": {"description": "?"}}}
        listener = spec.pop("listener", ADMIN)
        op: dict[str, Any] = {"operationId": _operation_id(method, path), "tags": [listener],
                              **spec}
        if scope is not None:
            op["security"] = [{"adminToken": [scope]}]
            op["responses"]["401"] = _error("no token, or an unknown one")
            op["responses"]["403"] = _error(f"the token lacks the {scope!r} scope")
            if method in ("POST", "PUT", "PATCH", "DELETE"):
                op["responses"]["415"] = _error("Content-Type is not application/json")
                op["responses"].setdefault("413", _error("body too large"))
        elif listener == ADMIN:
            op["security"] = []  # open
        if listener == INGRESS:
            op["servers"] = [{"url": f"http://{{host}}:{ingress_port}", "description":
                              "the ingress listener (public, webhooks only)",
                              "variables": {"host": {"default": "127.0.0.1"}}}]
        paths.setdefault(path, {})[method.lower()] = op
    return {
        "openapi": OPENAPI_VERSION,
        "info": {"title": "retail-sync worker", "version": "1",
                 "description": "Two listeners: ingress (webhooks, public, HMAC-signed) and "
                                "admin (views and actions, bearer tokens with scopes viewer, "
                                "operator, pii, metrics). Without the pii scope, customer "
                                "names, emails, phones and addresses are masked."},
        "servers": [{"url": admin_url, "description": "the admin listener"}],
        "tags": [{"name": ADMIN, "description": "admin listener"},
                 {"name": INGRESS, "description": "ingress listener"}],
        "paths": paths,
        "components": {
            "schemas": component_schemas(),
            "securitySchemes": {
                "adminToken": {"type": "http", "scheme": "bearer",
                               "description": "a named admin token (retail-sync admin-token "
                                              "create); its scopes are listed per operation"},
                "shopifyHmac": {"type": "apiKey", "in": "header",
                                "name": "X-Shopify-Hmac-Sha256",
                                "description": "base64 HMAC-SHA256 of the body with the shared "
                                               "secret"}}},
    }


def _operation_id(method: str, path: str) -> str:
    words = [p.strip("{}").replace(".", "_") for p in path.strip("/").split("/") if p]
    return method.lower() + "_" + "_".join(words or ["root"])


def register(ctx: Any) -> None:
    """``GET /openapi.json`` on the admin listener (open: the contract holds no data)."""
    from faust.web import Request, Response, View

    app = ctx.app
    cache: dict[str, bytes] = {}

    @app.page("/openapi.json")
    class OpenApi(View):
        async def get(self, request: Request) -> Response:
            if "doc" not in cache:
                cache["doc"] = orjson.dumps(build(app, ctx.settings))
            return self.bytes(cache["doc"], content_type="application/json")
