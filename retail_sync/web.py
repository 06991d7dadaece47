"""HTTP surface of a worker: inbound webhooks, order views, metrics and health.

Two listeners (ARCHITECTURE §10). The **ingress** listener (retail_sync/ingress.py,
RETAIL_SYNC_INGRESS_HOST/_PORT, public) serves only:

| POST   | /webhooks/shopify/{resource}/{event}   | Shopify webhook (receive_webhook below)         |

The **admin** listener (Faust's web server, RETAIL_SYNC_WEB_HOST/_PORT, 127.0.0.1 by default)
serves the rest; each view needs a token with the scope in brackets (retail_sync/admin_auth.py:
401 without, 403 with the wrong scope, 415 for a POST that is not application/json):

| method | path                                   | what                                            |
|--------|----------------------------------------|-------------------------------------------------|
| GET    | /orders/lookup?id=...                  | order(s) by any id (every worker's index asked) |
| GET    | /orders/{order_key}                    | one order's state and correlation ids           |
| POST   | /orders/{order_key}/cancel             | operator cancellation {"reason"}               |
| POST   | /orders/{order_key}/returns            | return/refund authorised here (customer        |
|        |                                        | service, the ERP): {"lines", "amount", ...}     |
| GET    | /exceptions?kind=&channel=&older_than_s=| sync exceptions, newest first, with a summary    |
| POST   | /exceptions/replay                     | {"ids": [...]} or {"kind": ...}: resend them     |
| POST   | /reconciliation/jobs                   | {"channels", "days"}: start a reconciliation job |
|        |                                        | (202 + job id; 409 while one runs for a channel) |
| GET    | /reconciliation/jobs[/{job_id}]        | jobs' status and kept reports                    |
| GET    | /reconciliation                        | 410: pointer to the job API                      |
| GET    | /audit?target=&actor=&since=&limit=    | admin actions' audit records, newest first       |
| GET    | /inventory/{sku}                       | on hand, reservations, safety stock, ATS per    |
|        |                                        | channel, what each channel was last told, when  |
| GET    | /metrics                               | Prometheus exposition [metrics]                 |
| GET    | /health                                | readiness: partitions assigned, broker reachable|
| GET    | /health/live                           | liveness: 200 while the worker runs             |
| GET    | /dashboard/ops, /finance, /search      | dashboards, order search (retail_sync/dashboard)|

[viewer]: GET /orders/..., /exceptions, /inventory/...; [operator]: cancel, returns, replay,
reconciliation (jobs: POST; their GETs and /audit: viewer). Actions answer X-Request-Id and are
audited before they take effect (retail_sync/admin_actions.py, audit.py). /health and
/health/live are open (orchestrators probe them; they show no order or customer data).

Order views are routed to the worker that owns the key (``app.table_route``). Faust's built-in
``/table/...`` view is disabled in the app factory because it exposes raw table data.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Mapping
from typing import Any

import aiohttp
import orjson
from faust.web import Request, Response, View
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from retail_sync import (
    admin_actions,
    admin_auth,
    archive,
    broker_watch,
    dashboard,
    exceptions_view,
    fetch_log,
    http_body,
    ingress,
    openapi,
    pii,
)
from retail_sync import query_params as qp
from retail_sync.agents import stock as stock_agent
from retail_sync.context import Context
from retail_sync.streams.models import (
    ExceptionKind,
    order_key,
    utcnow,
)
from retail_sync.streams.rules import stock as stock_rules
from retail_sync.streams.stock import StockState

log = logging.getLogger(__name__)

#: bounds of the views' query parameters (a bad value is a 400 naming the bound)
MAX_RECONCILE_DAYS = 3650.0
MAX_AGE_S = 10 * 365 * 86400.0
MAX_EXCEPTIONS_LIMIT = 10_000


def _json(view: View, body: Any, status: int = 200) -> Response:
    return view.bytes(orjson.dumps(body), content_type="application/json", status=status)


def register(ctx: Context) -> None:
    """Every view of the admin listener (the table in the module docstring), in this order."""
    app = ctx.app
    http_body.guard_faust_web(app, header_timeout_s=ctx.settings.web_header_timeout_s,
                              body_timeout_s=ctx.settings.web_body_timeout_s)
    admin_auth.install(app, admin_auth.TokenStore.from_settings(ctx.settings))
    ingress.register(ctx)  # the webhooks' own listener; none is served on this one
    _lookup_view(ctx)
    _order_view(ctx)
    _order_actions(ctx)
    _exception_views(ctx)
    _reconciliation_view(ctx)
    admin_actions.register(ctx)  # /audit, /reconciliation/jobs[/{id}], the audit topic
    openapi.register(ctx)  # GET /openapi.json (open): retail_sync/openapi.py
    dashboard.register(ctx)  # /dashboard/... pages, data and order search (issue 14)
    _inventory_view(ctx)
    _metrics_view(ctx)
    _health_views(ctx)


def _lookup_view(ctx: Context) -> None:
    """GET /orders/lookup?id=: the orders an id denotes. The index lives with the order states
    (tables/rocks.py), partitioned by order key, so this worker reads its own partitions and asks
    every other worker for theirs (``scope=local``: only this worker's keys, the fan-out's
    request)."""
    app = ctx.app

    @app.page("/orders/lookup")
    class OrderLookup(View):
        @admin_auth.requires("viewer")
        async def get(self, request: Request) -> Response:
            try:
                qp.required_text(request.query, "id", "a marketplace order id, an order key "
                                 "(channel:id) or an ERP sales order name")
                scope = qp.choice(request.query, "scope", ("all", "local")) or "all"
            except qp.BadParam as exc:
                return _json(self, {"error": str(exc)}, 400)
            external_id = request.query["id"]
            if scope == "local":  # another worker's fan-out: this worker's keys only
                return _json(self, {"id": external_id,
                                    "order_keys": ctx.tables.orders.lookup(external_id)})
            headers = admin_auth.authorization_of(request)
            indexed, unreached = await lookup_everywhere(ctx, external_id, headers)
            states = []
            for key in lookup_candidates(external_id, indexed, ctx.channels):
                state = await order_state(ctx, key, headers)
                if state is not None:
                    states.append(state)
            if not states:  # retired orders (tables/retention.py) are read from the archive
                states = await archive.archived_views(
                    ctx, lookup_candidates(external_id, indexed, ctx.channels))
            if not states and unreached:
                return _json(self, {"error": f"no order found by id {external_id!r} on the "
                                             f"workers that answered; not answering: {unreached}",
                                    "unreached_workers": unreached}, 503)
            if not states:
                return _json(self, {"error": f"no order is known by id {external_id!r}"}, 404)
            body: dict[str, Any] = {"id": external_id, "orders": states}
            if unreached:
                body["unreached_workers"] = unreached
            return _json(self, pii.for_caller(request, body))


async def lookup_everywhere(ctx: Context, external_id: str,
                            headers: dict[str, str] | None = None,
                            timeout_s: float = 5.0) -> tuple[list[str], list[str]]:
    """The order keys the index of every worker holds for ``external_id``, and the workers that
    did not answer (each asked with ``scope=local`` and the caller's ``headers``)."""
    keys = list(ctx.tables.orders.lookup(external_id))
    me = ctx.settings.web_url.rstrip("/")
    try:
        hosts = ctx.app.router.table_metadata(ctx.tables.orders.name)
    except (KeyError, TypeError):  # no assignment yet: this worker's partitions only
        hosts = {}
    others = sorted({str(url).rstrip("/") for url, topics in hosts.items()
                     if any(topics.values())} - {me})
    unreached: list[str] = []
    if others:
        timeout = aiohttp.ClientTimeout(total=timeout_s)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            async def ask(host: str) -> list[str]:
                async with session.get(f"{host}/orders/lookup", headers=headers,
                                       params={"id": external_id, "scope": "local"}) as resp:
                    body = await resp.json(content_type=None)
                    if resp.status != 200:
                        raise RuntimeError(f"{host} answered {resp.status}: {body}")
                    return [str(k) for k in body.get("order_keys", [])]
            answers = await asyncio.gather(*(ask(h) for h in others), return_exceptions=True)
        for host, answer in zip(others, answers, strict=True):
            if isinstance(answer, BaseException):
                log.warning("order lookup: %s did not answer: %r", host, answer)
                unreached.append(host)
            else:
                keys += answer
    return list(dict.fromkeys(keys)), unreached


def _order_view(ctx: Context) -> None:
    """GET /orders/{order_key}: one order, routed to the key's owner (or from the archive)."""
    app = ctx.app
    orders = ctx.tables.orders

    @app.page("/orders/{order_key}")
    class OrderView(View):
        @admin_auth.requires("viewer")
        @app.table_route(table=orders, match_info="order_key")  # type: ignore[arg-type]  # Faust types the handler on View
        async def get(self, request: Request, order_key: str) -> Response:
            state = orders.get(order_key)
            if state is None:  # a retired order (tables/retention.py): from the archive
                archived = await archive.archived_views(ctx, [order_key])
                if archived:
                    return _json(self, pii.for_caller(request, archived[0]))
                return _json(self, {"error": f"no order {order_key!r}"}, 404)
            return self.bytes(pii.json_for_caller(request, state), content_type="application/json")


def _order_actions(ctx: Context) -> None:
    """POST /orders/{order_key}/cancel and /returns (retail_sync/admin_actions.py)."""
    app = ctx.app

    @app.page("/orders/{order_key}/cancel")
    class CancelOrder(View):
        @admin_auth.requires("operator")
        async def post(self, request: Request, order_key: str) -> Response:
            # validated (404, 409), audited, then sent: retail_sync/admin_actions.py
            return await admin_actions.cancel(ctx, self, request, order_key)

    @app.page("/orders/{order_key}/returns")
    class AuthoriseReturn(View):
        @admin_auth.requires("operator")
        async def post(self, request: Request, order_key: str) -> Response:
            # validated (404, 422: aftersale.return_refusal), audited, then sent
            return await admin_actions.authorise_return(ctx, self, request, order_key)


def _exception_views(ctx: Context) -> None:
    """GET /exceptions and POST /exceptions/replay."""
    app = ctx.app

    def _bootstrap() -> str:
        return exceptions_view.bootstrap_of(app.conf.broker)

    @app.page("/exceptions")
    class Exceptions(View):
        @admin_auth.requires("viewer")
        async def get(self, request: Request) -> Response:
            q = request.query
            try:
                kind = qp.choice(q, "kind", (k.value for k in ExceptionKind))
                older = qp.number(q, "older_than_s", None, minimum=0, maximum=MAX_AGE_S,
                                  unit="seconds")
                newer = qp.number(q, "newer_than_s", None, minimum=0, maximum=MAX_AGE_S,
                                  unit="seconds")
                limit = qp.integer(q, "limit", 200, minimum=0, maximum=MAX_EXCEPTIONS_LIMIT)
            except qp.BadParam as exc:
                return _json(self, {"error": str(exc)}, 400)
            records, notes = await exceptions_view.load_exceptions(
                _bootstrap(), ctx.topics.sync_exceptions.get_topic_name())
            now = utcnow()
            matched = exceptions_view.filter_records(records, kind, q.get("channel") or None,
                                                     older, newer, now)
            return _json(self, pii.for_caller(request, {  # payloads' personal data masked
                "summary": exceptions_view.summarise(records, now), "matched": len(matched),
                "notes": notes, "exceptions": exceptions_view.as_view(matched, now, limit)}))

    @app.page("/exceptions/replay")
    class ExceptionsReplay(View):
        @admin_auth.requires("operator")
        async def post(self, request: Request) -> Response:
            return await admin_actions.replay(ctx, self, request)  # audited, then replayed


def _reconciliation_view(ctx: Context) -> None:
    """GET /reconciliation: 410, the jobs are at /reconciliation/jobs (admin_actions)."""
    app = ctx.app

    @app.page("/reconciliation")
    class Reconciliation(View):
        @admin_auth.requires("operator")  # it spends every marketplace's API budget
        async def get(self, request: Request) -> Response:
            # no longer synchronous: 410 pointing at the job API (POST /reconciliation/jobs)
            return await admin_actions.reconciliation_gone(ctx, self, request)


def _inventory_view(ctx: Context) -> None:
    """GET /inventory/{sku}: the stock rules' view of one SKU, routed to its owner."""
    app = ctx.app

    @app.page("/inventory/{sku}")
    class InventoryView(View):
        @admin_auth.requires("viewer")
        @app.table_route(table=ctx.tables.stock, match_info="sku")  # type: ignore[arg-type]  # Faust types the handler on View
        async def get(self, request: Request, sku: str) -> Response:
            state = ctx.tables.stock.get(sku)
            if not isinstance(state, StockState):  # unknown, or an order line's key
                return _json(self, {"sku": sku, "tracked": False, "error": (
                    f"no stock is known for {sku!r}: the ERP has reported no position for it "
                    "(a non-stock item; its orders are accepted without reservation)")}, 404)
            return _json(self, stock_rules.view(state, stock_agent.rules_for(ctx, sku),
                                                list(ctx.channels), _Lines(ctx)))


def _metrics_view(ctx: Context) -> None:
    """GET /metrics: the Prometheus exposition."""
    app = ctx.app

    @app.page("/metrics")
    class MetricsView(View):
        @admin_auth.requires("metrics")
        async def get(self, request: Request) -> Response:
            return self.bytes(generate_latest(ctx.metrics.registry),
                              content_type=CONTENT_TYPE_LATEST.split(";")[0])


def _health_views(ctx: Context) -> None:
    """GET /health (readiness) and /health/live (liveness), both open."""
    app = ctx.app

    @app.page("/health")
    class Health(View):
        async def get(self, request: Request) -> Response:
            consumer = getattr(app, "_consumer", None)
            tps = consumer.assignment() if consumer is not None else set()
            sources = {t.get_topic_name() for t in ctx.topics.all()}
            inputs = sum(1 for tp in tps if tp.topic in sources)
            ready = not app.rebalancing and len(tps) > 0
            status = "ok" if ready else "starting"
            watch = broker_watch.watch_of(app)
            if watch is not None and not watch.accepting(app):  # readiness: webhooks get 503
                ready, status = False, watch.state(app)
            return _json(self, {
                "status": status, "app_id": app.conf.id, "assigned_partitions": len(tps),
                # of which: our input topics' partitions, and table changelogs (active tables and
                # standby copies); the input partitions assigned and not read now
                "input_partitions": inputs, "changelog_partitions": len(tps) - inputs,
                "not_fetching": fetch_log.not_fetching(consumer, sources) if tps else [],
                "broker": watch.as_json() if watch is not None else None,
            }, 200 if ready else 503)

    @app.page("/health/live")
    class Liveness(View):
        """Liveness, apart from readiness: 200 while the worker runs, broker or not (restarting
        it would not bring the broker back); 503 once it crashed or is stopping."""

        async def get(self, request: Request) -> Response:
            alive = not (app.crashed or app.should_stop)
            return _json(self, {"status": "alive" if alive else "stopping", "app_id": app.conf.id},
                         200 if alive else 503)


class _Lines:
    """Reservation records read for the view: a view runs outside stream iteration, so each key
    is looked up in every partition this worker holds (Faust's table get does that)."""

    def __init__(self, ctx: Context) -> None:
        self.table: Mapping[Any, Any] = ctx.tables.stock

    def get(self, key: str, default: Any = None) -> Any:
        return self.table.get(key, default)

    def __contains__(self, key: object) -> bool:
        return self.table.get(key) is not None

    def __getitem__(self, key: str) -> Any:
        value = self.table.get(key)
        if value is None:
            raise KeyError(key)
        return value


def lookup_candidates(external_id: str, indexed: list[str], channels: Iterable[str]) -> list[str]:
    """Order keys an id may denote: an order key itself, ``channel:id`` for every channel we map
    (marketplace order ids are not indexed: the key is derived from them), and what the index
    holds for ids of other systems (ERP sales-order numbers)."""
    derived = [order_key(channel, external_id) for channel in channels]
    own = [external_id] if ":" in external_id else []
    return list(dict.fromkeys([*own, *derived, *indexed]))


async def order_state(ctx: Context, key: str,
                      headers: dict[str, str] | None = None) -> Any | None:
    """The order's state as JSON-able data, from this worker or the one that owns the key
    (asked on its admin listener with ``headers``: the caller's Authorization, checked there)."""
    table = ctx.tables.orders
    try:
        owner = str(ctx.app.router.key_store(table.name, key)).rstrip("/")
    except (KeyError, TypeError):  # no assignment / metadata yet: answer from here
        owner = ctx.settings.web_url
    if owner == ctx.settings.web_url.rstrip("/"):
        state = table.get(key)
        return orjson.loads(state.model_dump_json()) if state is not None else None
    async with aiohttp.ClientSession() as session, session.get(f"{owner}/orders/{key}",
                                                               headers=headers) as resp:
        return await resp.json() if resp.status == 200 else None


async def _json_body(request: Request) -> dict[str, Any] | None:
    body = await _read_body(request, 64 * 1024)
    try:
        value = orjson.loads(body or b"{}")
    except orjson.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


async def _read_body(request: Request, limit: int) -> bytes:
    """The whole raw body, Content-Length or chunked, however it is split; raises
    ``http_body.BodyRejected`` (a Faust WebError: 413 over ``limit``, 408 past the listener's body
    time, 400 broken framing), and the connection is closed after that answer."""
    # Faust's aiohttp driver hands over aiohttp's own request (typed as Faust's Request)
    return await http_body.read_body(request, limit)  # type: ignore[arg-type]
