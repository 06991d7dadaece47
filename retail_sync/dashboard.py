"""Dashboards for people and order search for support (issue 14 §1), on the admin listener.

| method | path                         | scope  | what                                             |
|--------|------------------------------|--------|--------------------------------------------------|
| GET    | /dashboard/ops               | open   | operations page (HTML + JS, holds no data)       |
| GET    | /dashboard/finance           | open   | finance/executive page (HTML + JS, no data)      |
| GET    | /dashboard/search            | open   | order search page (HTML + JS, no data)           |
| GET    | /dashboard/static/{name}     | open   | the pages' JS/CSS and vendored Chart.js          |
| GET    | /dashboard/data              | viewer | every figure of both pages, whole group (JSON)   |
| GET    | /dashboard/data?scope=local  | viewer | this worker's part (what the fan-out asks peers) |
| GET    | /dashboard/orders?q=...      | viewer | an order's journey found by any id or the email  |

**Auth in a browser.** The admin listener is bearer-token only (no cookies, hence no CSRF). The
HTML pages and static files are open: they contain no data. The page is opened once as
``/dashboard/ops#token=<token>``: the fragment never leaves the browser (it is not sent in the
request, not logged by the server), the page's script moves it into ``sessionStorage`` (this tab
only, gone when it is closed), removes it from the address bar, and calls the JSON views with
``Authorization: Bearer``. A token with only ``viewer`` is enough; ``pii`` unmasks customer data
in search results; the exceptions panel's replay button needs ``operator`` (refused otherwise).

**Whole group.** ``/dashboard/data`` asks every worker of the consumer group (the URLs the
partition assignor publishes for the order table, ``app.router.table_metadata``) for its local
part with the caller's token, and merges: consumer lag per topic, counters, latency histogram
samples (summed bucket by bucket at aligned sample times, so the group's p50/p99 are real
quantiles, not averages of workers' quantiles), order-table figures (each worker counts the
partitions it holds active). Exceptions are read once from the sync-exception topic (as
``/exceptions`` does), the reconciliation backlog from the job API. ``workers`` in the answer
says who answered and who did not.

**Latency over time.** Each worker samples its histograms every ``RETAIL_SYNC_DASHBOARD_SAMPLE_S``
(5 s, at wall-clock-aligned times) and keeps ``RETAIL_SYNC_DASHBOARD_SAMPLES_KEPT`` samples (10
min). A point of the p50/p99 chart is the quantile (Prometheus' ``histogram_quantile``
interpolation) of what was observed in the minute before it.

Long module: the figures of the pages, of /dashboard/data and of /metrics (`TableFiguresCollector`)
are computed here from the same samples and tables so the three cannot disagree; the pages
themselves are static files (retail_sync/static/).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections import Counter, defaultdict, deque
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from faust.web import Request, Response, View

from retail_sync import admin_auth, exceptions_view, pii
from retail_sync.metrics import TableFiguresCollector
from retail_sync.streams.models import OrderStatus, utcnow
from retail_sync.streams.state import OrderState
from retail_sync.streams.stock import StockState
from retail_sync.tables import figures, order_search

log = logging.getLogger(__name__)

STATIC = Path(__file__).resolve().parent / "static"
#: the only files /dashboard/static/{name} serves: name -> (file under static/, content type)
STATIC_FILES = {
    "dashboard.js": ("dashboard.js", "application/javascript"),
    "dashboard.css": ("dashboard.css", "text/css"),
    "chart.umd.min.js": ("vendor/chart.umd.min.js", "application/javascript"),
}
PAGES = {"ops": "ops.html", "finance": "finance.html", "search": "search.html"}
#: latency series: (metric name, label naming the flow or None, fixed flow name)
LATENCY_SOURCES = (("retail_sync_flow_seconds", "flow", None),
                   ("retail_sync_stock_propagation_seconds", None, "stock_propagation"))
WINDOW_S = 60.0  # a latency point covers the observations of this many seconds before it
#: order-to-ship cycle time buckets (seconds; merged across workers)
CYCLE_BUCKETS = (60, 300, 900, 3600, 4 * 3600, 12 * 3600, 86400, 2 * 86400, 4 * 86400,
                 7 * 86400, math.inf)
AGE_BUCKETS = (("< 5 min", 300), ("< 1 h", 3600), ("< 1 day", 86400), (">= 1 day", math.inf))
FAILED_OUTCOMES = {"permanent", "exhausted", "failed", "error", "refused", "rejected"}
NEUTRAL_OUTCOMES = {"retry"}  # an attempt that will be made again: neither success nor failure
TRANSACTION_COUNTERS = ("retail_sync_erp_posts_total", "retail_sync_inventory_pushes_total",
                        "retail_sync_marketplace_commands_total")
WAITING = (OrderStatus.RECEIVED, OrderStatus.STOCK_PENDING, OrderStatus.ERP_PENDING,
           OrderStatus.ERP_FAILED, OrderStatus.ERP_CONFIRMED, OrderStatus.CANCEL_PENDING,
           OrderStatus.PARTIALLY_SHIPPED)
CACHE_S = 2.0
MICROSECOND = timedelta(microseconds=1)
PEER_TIMEOUT_S = 5.0


def _json(view: View, body: Any, status: int = 200) -> Response:
    return view.bytes(orjson.dumps(body), content_type="application/json", status=status)


# --- metric reading ---------------------------------------------------------------------------


def families(registry: Any) -> dict[str, list[tuple[str, dict[str, str], float]]]:
    """name -> [(sample name, labels, value)] of every metric in ``registry``."""
    out: dict[str, list[tuple[str, dict[str, str], float]]] = {}
    for fam in registry.collect():
        out[fam.name] = [(s.name, dict(s.labels), float(s.value)) for s in fam.samples]
    return out


def histogram_buckets(fams: dict[str, Any]) -> dict[str, dict[str, float]]:
    """``flow|channel`` -> {le: cumulative count} for every latency series."""
    series: dict[str, dict[str, float]] = {}
    for name, flow_label, fixed in LATENCY_SOURCES:
        base = name.removesuffix("_seconds")
        for sample, labels, value in fams.get(name, fams.get(base, [])):
            if not sample.endswith("_bucket"):
                continue
            flow = labels.get(flow_label, "") if flow_label else fixed
            key = f"{flow}|{labels.get('channel', '-')}"
            bucket = series.setdefault(key, {})
            bucket[labels["le"]] = bucket.get(labels["le"], 0.0) + value
    return series


def quantile(q: float, buckets: dict[str, float]) -> float | None:
    """``histogram_quantile`` over cumulative ``{le: count}`` (None: nothing observed)."""
    bounds = sorted(((math.inf if le == "+Inf" else float(le)), c) for le, c in buckets.items())
    if not bounds or bounds[-1][1] <= 0:
        return None
    rank = q * bounds[-1][1]
    prev_bound, prev_count = 0.0, 0.0
    for bound, count in bounds:
        if count >= rank:
            if math.isinf(bound):
                return prev_bound  # above the top finite bucket: its bound (as Prometheus)
            if count == prev_count:
                return bound
            return prev_bound + (bound - prev_bound) * (rank - prev_count) / (count - prev_count)
        prev_bound, prev_count = bound, count
    return prev_bound


def counter_totals(fams: dict[str, Any], name: str, *labels: str) -> dict[str, float]:
    """A counter's value summed by ``labels`` ("a|b" keys)."""
    out: dict[str, float] = defaultdict(float)
    for sample, lab, value in fams.get(name.removesuffix("_total"), []):
        if sample.endswith("_total"):
            out["|".join(lab.get(x, "-") for x in labels)] += value
    return dict(out)


# --- per-worker sampling ---------------------------------------------------------------------


class Sampler:
    """A ring of this worker's histogram and throughput samples at aligned times."""

    def __init__(self, registry: Any, every_s: float, kept: int) -> None:
        self.registry, self.every_s = registry, every_s
        self.samples: deque[dict[str, Any]] = deque(maxlen=kept)

    def sample(self, now: float | None = None) -> None:
        now = time.time() if now is None else now
        tick = math.floor(now / self.every_s) * self.every_s
        if self.samples and self.samples[-1]["t"] >= tick:
            return
        fams = families(self.registry)
        self.samples.append({
            "t": tick, "h": histogram_buckets(fams),
            "ingested": counter_totals(fams, "retail_sync_orders_ingested_total", "channel")})

    async def run(self) -> None:
        while True:
            try:
                self.sample()
            except Exception:  # noqa: BLE001 - a sample missed is not worth the worker
                log.exception("dashboard sample failed")
            await asyncio.sleep(self.every_s - (time.time() % self.every_s) + 0.01)


def merge_samples(parts: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Workers' rings summed at each tick (a worker's latest sample at or before the tick)."""
    ticks = sorted({s["t"] for part in parts for s in part})
    merged = []
    for tick in ticks:
        h: dict[str, dict[str, float]] = {}
        ingested: Counter[str] = Counter()
        for part in parts:
            last = None
            for s in part:
                if s["t"] <= tick:
                    last = s
            if last is None:
                continue
            for key, buckets in last["h"].items():
                acc = h.setdefault(key, {})
                for le, c in buckets.items():
                    acc[le] = acc.get(le, 0.0) + c
            ingested.update(last["ingested"])
        merged.append({"t": tick, "h": h, "ingested": dict(ingested)})
    return merged


def latency_series(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """``flow|channel`` -> {t, p50, p99, count} per tick, over the WINDOW_S before it; and the
    channel throughput (orders per minute) per tick."""
    out: dict[str, list[dict[str, Any]]] = defaultdict(list)
    throughput: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for i, s in enumerate(samples):
        base = None
        for prev in samples[:i]:
            if s["t"] - prev["t"] >= WINDOW_S - 1e-6:
                base = prev
        if base is None:
            base = samples[0] if i else {"t": s["t"], "h": {}, "ingested": {}}
        span = max(1.0, s["t"] - base["t"])
        for key, buckets in s["h"].items():
            before = base["h"].get(key, {})
            delta = {le: c - before.get(le, 0.0) for le, c in buckets.items()}
            p50, p99 = quantile(0.5, delta), quantile(0.99, delta)
            out[key].append({"t": s["t"], "p50": p50, "p99": p99,
                             "count": max(delta.values(), default=0.0)})
        for channel, n in s["ingested"].items():
            per_min = (n - base["ingested"].get(channel, 0.0)) * 60.0 / span if i else 0.0
            throughput[channel].append({"t": s["t"], "per_min": round(per_min, 3)})
    return {"latency": dict(out), "throughput": dict(throughput)}


# --- order-table figures ----------------------------------------------------------------------


def cancellation_cause(state: OrderState) -> str:
    if state.stock_decision == "cancelled":
        return "stock"
    if state.order.buyer_cancel_request is not None:
        return "customer"
    if state.order.cancelled_at is not None:
        return "marketplace"
    return "operator_or_erp"


def traceable(state: OrderState) -> bool:
    """Marketplace id, ERP order, warehouse reference and finance document all linked."""
    c = state.correlation
    warehouse = c.wms_fulfilment_id or any(s.shipment_id for s in state.shipments.values())
    finance = any(s.sales_invoice for s in state.shipments.values()) or any(
        r.credit_note for r in state.refunds.values())
    return bool(c.marketplace_order_id and c.erp_sales_order and warehouse and finance)


def order_contribution(_key: Any, state: Any) -> dict[Any, int]:
    """What one order state adds to ``order_figures`` (flat, summable; nothing for a value that
    is not an order state). Integers only, so sums do not depend on the order of the records:
    the cycle time in microseconds."""
    if not isinstance(state, OrderState):
        return {}
    out: dict[Any, int] = {("orders",): 1, ("by_status", state.channel, state.status.value): 1}
    ok = int(traceable(state))
    if state.status == OrderStatus.CANCELLED:
        out[("cancelled_by_cause", cancellation_cause(state))] = 1
    else:  # the share is of non-cancelled orders: a cancelled one counts in neither
        out[("not_cancelled",)] = 1
        out[("traceable",)] = ok
        out[("not_cancelled_by_channel", state.channel)] = 1
        out[("traceable_by_channel", state.channel)] = ok
    if state.shipments:
        out[("shipped",)] = 1
        out[("traceable_shipped",)] = ok
        first = min(s.shipped_at for s in state.shipments.values())
        took_us = max(0, (first - state.order.created_at) // MICROSECOND)
        out[("cycle_buckets", next(i for i, b in enumerate(CYCLE_BUCKETS)
                                   if took_us <= b * 1_000_000))] = 1
        out[("cycle_sum_us",)] = took_us
    return out


def render_order_figures(sums: dict[Any, int]) -> dict[str, Any]:
    """``order_figures``' answer from the summed contributions."""
    by_status: dict[str, dict[str, int]] = defaultdict(dict)
    cancelled: dict[str, int] = {}
    tracked: dict[str, int] = {}
    traced: dict[str, int] = {}
    cycle = [0] * len(CYCLE_BUCKETS)
    for name, n in sums.items():
        kind = name[0]
        if kind == "by_status":
            by_status[name[1]][name[2]] = n
        elif kind == "cancelled_by_cause":
            cancelled[name[1]] = n
        elif kind == "not_cancelled_by_channel":
            tracked[name[1]] = n
        elif kind == "traceable_by_channel":
            traced[name[1]] = n
        elif kind == "cycle_buckets":
            cycle[name[1]] = n
    return {"orders": sums.get(("orders",), 0), "by_status": dict(by_status),
            "cancelled_by_cause": cancelled, "shipped": sums.get(("shipped",), 0),
            "traceable_shipped": sums.get(("traceable_shipped",), 0),
            "traceable": sums.get(("traceable",), 0),
            "not_cancelled": sums.get(("not_cancelled",), 0), "cycle_buckets": cycle,
            "cycle_sum_s": sums.get(("cycle_sum_us",), 0) / 1e6,
            "not_cancelled_by_channel": tracked,
            # a channel with tracked orders shows its traceable count, 0 included
            "traceable_by_channel": {c: traced.get(c, 0) for c in tracked}}


def order_figures(states: Any) -> dict[str, Any]:
    """Counts over order states (one worker's active partitions); summable across workers."""
    return render_order_figures(figures.scan(order_contribution, ((None, s) for s in states)))


def stock_contribution(ats_of: Any) -> Any:
    """What one stock record adds to ``stock_figures`` (``ats_of(sku, state)``: the ATS per
    channel, a function of the record and the settings only)."""
    def contribution(sku: Any, state: Any) -> dict[Any, int]:
        if not isinstance(state, StockState):
            return {}
        ats = ats_of(sku, state)
        out: dict[Any, int] = {}
        for channel, told in state.told.items():
            if channel not in ats:
                continue
            out[("listed", channel)] = 1
            out[("accurate", channel)] = int(told.ok and told.quantity == ats[channel])
        return out
    return contribution


def render_stock_figures(sums: dict[Any, int]) -> dict[str, Any]:
    listed = {name[1]: n for name, n in sums.items() if name[0] == "listed"}
    return {"listed": listed,
            "accurate": {c: sums.get(("accurate", c), 0) for c in listed}}


def stock_figures(items: Any, ats_of: Any) -> dict[str, Any]:
    """Listings (SKU x channel) whose last told quantity equals the ATS now, per channel."""
    return render_stock_figures(figures.scan(stock_contribution(ats_of), items))


def _sum_nested(into: dict[str, Any], part: dict[str, Any]) -> None:
    for k, v in part.items():
        if isinstance(v, dict):
            _sum_nested(into.setdefault(k, {}), v)
        elif isinstance(v, list):
            acc = into.setdefault(k, [0] * len(v))
            for i, x in enumerate(v):
                acc[i] += x
        else:
            into[k] = into.get(k, 0) + v


def _ats_of(ctx: Any) -> Any:
    from retail_sync.agents import stock as stock_agent
    from retail_sync.streams.rules import stock as stock_rules

    channels = list(ctx.channels)

    def ats_of(sku: str, state: StockState) -> dict[str, int]:
        return stock_rules.ats(state, stock_agent.rules_for(ctx, sku), channels)
    return ats_of


class TableFigures:
    """The order-table and stock-table figures kept up to date by the tables' writes, per
    partition (tables/figures.py; issue 16: a scan of both tables per dashboard sample and
    /metrics scrape grew with the tables, 30 days of orders)."""

    def __init__(self, ctx: Any) -> None:
        self.orders = figures.PartitionFigures(order_contribution)
        self.stock = figures.PartitionFigures(stock_contribution(_ats_of(ctx)))
        self.tables = (ctx.tables.orders, ctx.tables.stock)
        ctx.tables.orders.data.watch(self.orders)
        ctx.tables.stock.data.watch(self.stock)

    def watches(self, ctx: Any) -> bool:
        """These are ``ctx``'s tables (tests swap them for fakes)."""
        return self.tables[0] is ctx.tables.orders and self.tables[1] is ctx.tables.stock

    def read(self, ctx: Any) -> dict[str, Any]:
        return {"orders": render_order_figures(ctx.tables.orders.data.figures_total(self.orders)),
                "stock": render_stock_figures(ctx.tables.stock.data.figures_total(self.stock))}


def watch_tables(ctx: Any) -> TableFigures | None:
    """Incremental figures when the tables' store supports them (RocksDB, tables/rocks.py; the
    unit tests' memory store does not: a scan then)."""
    if all(hasattr(t.data, "watch") for t in (ctx.tables.orders, ctx.tables.stock)):
        return TableFigures(ctx)
    return None


def table_figures(ctx: Any) -> dict[str, Any]:
    """Order-table and stock-table figures of this worker's active partitions: the pages' part
    and what ``metrics.TableFiguresCollector`` exports at scrape time."""
    kept = getattr(ctx, "table_figures", None)
    if isinstance(kept, TableFigures) and kept.watches(ctx):
        return kept.read(ctx)
    return {"orders": order_figures(v for _, v in ctx.tables.orders.items()),
            "stock": stock_figures(ctx.tables.stock.items(), _ats_of(ctx))}


def local_part(ctx: Any, sampler: Sampler) -> dict[str, Any]:
    """What this worker knows: lag, counters, samples, its active partitions' tables."""
    fams = families(ctx.metrics.registry)
    lag = counter_lag(fams)
    counters = {name: counter_totals(fams, name, *labels) for name, labels in (
        ("retail_sync_orders_ingested_total", ("channel",)),
        ("retail_sync_order_transitions_total", ("channel", "status")),
        ("retail_sync_sync_exceptions_total", ("kind", "channel")),
        ("retail_sync_erp_posts_total", ("outcome",)),
        ("retail_sync_inventory_pushes_total", ("channel", "outcome")),
        ("retail_sync_marketplace_commands_total", ("channel", "outcome")),
        ("retail_sync_webhooks_total", ("channel", "outcome")))}
    return {"worker": ctx.settings.web_url.rstrip("/"), "lag": lag, "counters": counters,
            "samples": list(sampler.samples), **table_figures(ctx)}


def counter_lag(fams: dict[str, Any]) -> dict[str, float]:
    lag: dict[str, float] = defaultdict(float)
    for _, labels, value in fams.get("retail_sync_consumer_lag", []):
        lag[labels.get("topic", "-")] += value
    return dict(lag)


# --- the group's figures ----------------------------------------------------------------------


def peers(ctx: Any) -> list[str]:
    """Admin URLs of every worker of the group (from the assignor's table metadata)."""
    urls = {ctx.settings.web_url.rstrip("/")}
    with contextlib.suppress(Exception):  # no assignment yet: this worker alone
        urls |= {str(u).rstrip("/") for u in ctx.app.router.table_metadata(ctx.tables.orders.name)}
    return sorted(urls)


def ratio(num: float, den: float) -> float | None:
    return round(num / den, 4) if den else None


def derive(parts: list[dict[str, Any]], exceptions: list[Any], notes: list[str],
           recon: dict[str, Any] | None, now: Any) -> dict[str, Any]:
    """The pages' figures from the workers' parts, the exception records and the recon job."""
    lag: Counter[str] = Counter()
    counters: dict[str, Any] = {}
    orders: dict[str, Any] = {}
    stock: dict[str, Any] = {}
    for part in parts:
        lag.update(part["lag"])
        _sum_nested(counters, part["counters"])
        _sum_nested(orders, part["orders"])
        _sum_nested(stock, part["stock"])
    series = latency_series(merge_samples([p["samples"] for p in parts]))
    latency_now = {}
    for key, points in series["latency"].items():
        if points:
            latency_now[key] = points[-1]
    # transactions: attempts that succeeded vs failed (retries are neither)
    tx: dict[str, dict[str, float]] = {}
    for name in TRANSACTION_COUNTERS:
        ok = failed = 0.0
        for key, n in counters.get(name, {}).items():
            outcome = key.split("|")[-1]
            if outcome in NEUTRAL_OUTCOMES:
                continue
            if outcome in FAILED_OUTCOMES:
                failed += n
            else:
                ok += n
        tx[name.removeprefix("retail_sync_").removesuffix("_total")] = {"ok": ok, "failed": failed}
    tx_ok = sum(v["ok"] for v in tx.values())
    tx_failed = sum(v["failed"] for v in tx.values())
    waiting: dict[str, int] = Counter()
    for by in orders.get("by_status", {}).values():
        for status, n in by.items():
            if status in {s.value for s in WAITING}:
                waiting[status] += n
    # exceptions: by kind x channel, aging, newest records with their replay
    by_kind_channel: dict[str, Counter[str]] = defaultdict(Counter)
    aging: dict[str, Counter[str]] = defaultdict(Counter)
    for r in exceptions:
        age = max(0.0, (now - r.occurred_at).total_seconds())
        by_kind_channel[r.kind.value][r.channel or "-"] += 1
        aging[r.kind.value][next(name for name, top in AGE_BUCKETS if age < top)] += 1
    shipped = orders.get("shipped", 0)
    cycle = orders.get("cycle_buckets", [0] * len(CYCLE_BUCKETS))
    cycle_q = {f"p{int(q * 100)}": _cycle_quantile(q, cycle) for q in (0.5, 0.9)}
    listed = sum(stock.get("listed", {}).values())
    accurate = sum(stock.get("accurate", {}).values())
    total_orders = orders.get("orders", 0)
    cancelled = orders.get("cancelled_by_cause", {})
    return {
        "generated_at": now.isoformat(),
        "backlog": {"consumer_lag_by_topic": dict(sorted(lag.items())),
                    "consumer_lag_total": sum(lag.values()),
                    "orders_waiting_by_status": dict(waiting),
                    "orders_by_channel_status": orders.get("by_status", {})},
        "latency": {"series": series["latency"], "now": latency_now, "window_s": WINDOW_S},
        "throughput": {"ingested_total_by_channel": counters.get(
            "retail_sync_orders_ingested_total", {}), "per_min_series": series["throughput"]},
        "exceptions": {
            "summary": exceptions_view.summarise(exceptions, now), "notes": notes,
            "by_kind_channel": {k: dict(v) for k, v in by_kind_channel.items()},
            "aging_by_kind": {k: dict(v) for k, v in aging.items()},
            "age_buckets": [name for name, _ in AGE_BUCKETS],
            "recent": exceptions_view.as_view(exceptions, now, 25)},
        "reconciliation": recon,
        "inventory_accuracy": {"listed": listed, "accurate": accurate,
                               "share": ratio(accurate, listed),
                               "by_channel": {c: {"listed": n, "accurate": stock.get(
                                   "accurate", {}).get(c, 0)} for c, n in
                                   stock.get("listed", {}).items()}},
        "cancellation": {"orders": total_orders, "by_cause": cancelled,
                         "rate": ratio(sum(cancelled.values()), total_orders),
                         "rate_by_cause": {c: ratio(n, total_orders) for c, n in cancelled.items()}},
        "order_to_ship": {"shipped": shipped, "mean_s": (orders.get("cycle_sum_s", 0.0) / shipped
                                                         if shipped else None),
                          **cycle_q, "buckets_le_s": [b if math.isfinite(b) else "+Inf"
                                                      for b in CYCLE_BUCKETS],
                          "bucket_counts": cycle},
        "failed_transactions": {"by_kind": tx, "ok": tx_ok, "failed": tx_failed,
                                "rate": ratio(tx_failed, tx_ok + tx_failed)},
        "traceability": {"orders": total_orders, "traceable": orders.get("traceable", 0),
                         "share": ratio(orders.get("traceable", 0), orders.get("not_cancelled", 0)),
                         "shipped": shipped, "traceable_shipped": orders.get("traceable_shipped", 0),
                         "share_of_shipped": ratio(orders.get("traceable_shipped", 0), shipped)},
    }


def _cycle_quantile(q: float, counts: list[int]) -> float | None:
    cumulative: dict[str, float] = {}
    acc = 0
    for bound, n in zip(CYCLE_BUCKETS, counts, strict=True):
        acc += n
        cumulative["+Inf" if math.isinf(bound) else str(bound)] = acc
    return quantile(q, cumulative)


async def _fetch(session: aiohttp.ClientSession, url: str, headers: dict[str, str]) -> Any:
    async with session.get(url, headers=headers) as resp:
        if resp.status != 200:
            raise RuntimeError(f"{url}: HTTP {resp.status}")
        return await resp.json(content_type=None)


def recon_backlog(jobs: Any) -> dict[str, Any] | None:
    """The last finished reconciliation job's mismatches by cause (None: no job yet)."""
    done = [j for j in (jobs or {}).get("jobs", []) if j.get("status") != "running"]
    if not done:
        return None
    last = max(done, key=lambda j: j.get("finished_at") or "")
    result = last.get("result") or {}
    return {"job_id": last.get("job_id"), "finished_at": last.get("finished_at"),
            "status": last.get("status"), "ok": last.get("ok"),
            "mismatches": last.get("mismatches"),
            "mismatches_by_cause": result.get("mismatches_by_cause") or {},
            "running": [j.get("job_id") for j in jobs.get("jobs", [])
                        if j.get("status") == "running"]}


# --- views --------------------------------------------------------------------------------------


def register(ctx: Any) -> None:
    app, settings = ctx.app, ctx.settings
    sampler = Sampler(ctx.metrics.registry, settings.dashboard_sample_s,
                      settings.dashboard_samples_kept)
    ctx.dashboard_sampler = sampler
    ctx.table_figures = watch_tables(ctx)  # kept by the tables' writes, no scan per read
    # inventory accuracy and traceability on /metrics too, computed as the pages compute them
    ctx.metrics.registry.register(TableFiguresCollector(lambda: table_figures(ctx)))
    cache: dict[str, Any] = {}

    @app.task  # type: ignore[untyped-decorator]  # Faust: @no_type_check
    async def dashboard_sampler() -> None:
        await sampler.run()

    def page(name: str) -> type[View]:
        class Page(View):
            async def get(self, request: Request) -> Response:
                body = (STATIC / PAGES[name]).read_bytes()
                resp = self.bytes(body, content_type="text/html")
                resp.headers["Cache-Control"] = "no-store"
                resp.headers["Referrer-Policy"] = "no-referrer"
                resp.headers["X-Frame-Options"] = "DENY"
                resp.headers["Content-Security-Policy"] = (
                    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                    "connect-src 'self'; frame-ancestors 'none'")
                return resp
        Page.__name__ = Page.__qualname__ = f"Dashboard{name.title()}Page"
        return Page

    for name in PAGES:
        app.page(f"/dashboard/{name}")(page(name))

    @app.page("/dashboard/static/{name}")
    class DashboardStatic(View):
        async def get(self, request: Request, name: str) -> Response:
            known = STATIC_FILES.get(name)
            if known is None:  # a fixed list: no path from the request reaches the disk
                return _json(self, {"error": f"no static file {name!r}"}, 404)
            resp = self.bytes((STATIC / known[0]).read_bytes(), content_type=known[1])
            resp.headers["Cache-Control"] = "max-age=300"
            return resp

    @app.page("/dashboard/data")
    class DashboardData(View):
        @admin_auth.requires("viewer")
        async def get(self, request: Request) -> Response:
            # masked unless the caller has pii: the exceptions panel carries raw payloads
            if request.query.get("scope") == "local":
                sampler.sample()  # this tick's sample, if not taken yet
                return _json(self, pii.for_caller(request, local_part(ctx, sampler)))
            hit = cache.get("data")
            if hit is not None and time.monotonic() - hit[0] < CACHE_S:
                return _json(self, pii.for_caller(request, hit[1]))
            body = await group_data(ctx, sampler, admin_auth.authorization_of(request))
            cache["data"] = (time.monotonic(), body)
            return _json(self, pii.for_caller(request, body))

    @app.page("/dashboard/orders")
    class DashboardOrders(View):
        @admin_auth.requires("viewer")
        async def get(self, request: Request) -> Response:
            query = (request.query.get("q") or "").strip()
            if not query or len(query) > 256:
                return _json(self, {"error": "q: an order id, order name, email, ERP sales "
                                             "order, tracking number, invoice or credit note "
                                             "(1-256 characters)"}, 400)
            body, status = await journey(ctx, query, admin_auth.authorization_of(request))
            return _json(self, pii.for_caller(request, body), status)


async def group_data(ctx: Any, sampler: Sampler, headers: dict[str, str]) -> dict[str, Any]:
    sampler.sample()
    own = ctx.settings.web_url.rstrip("/")
    parts = [local_part(ctx, sampler)]
    workers = [{"url": own, "ok": True}]
    others = [u for u in peers(ctx) if u != own]
    timeout = aiohttp.ClientTimeout(total=PEER_TIMEOUT_S)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        results = await asyncio.gather(
            *(_fetch(session, f"{u}/dashboard/data?scope=local", headers) for u in others),
            return_exceptions=True)
        for url, result in zip(others, results, strict=True):
            if isinstance(result, BaseException):
                workers.append({"url": url, "ok": False, "error": str(result)[:200]})
            else:
                parts.append(result)
                workers.append({"url": url, "ok": True})
        try:
            jobs = await _fetch(session, f"{own}/reconciliation/jobs", headers)
            recon = recon_backlog(jobs)
            if recon is not None:  # the list leaves the reports out: the last one's in full
                detail = await _fetch(session, f"{own}/reconciliation/jobs/{recon['job_id']}",
                                      headers)
                recon = recon_backlog({"jobs": [detail, *(
                    j for j in jobs.get("jobs", []) if j.get("status") == "running")]})
        except Exception as exc:  # noqa: BLE001 - shown on the panel, not fatal
            recon = {"error": str(exc)[:200]}
    records, notes = await exceptions_view.load_exceptions(
        exceptions_view.bootstrap_of(ctx.app.conf.broker),
        ctx.topics.sync_exceptions.get_topic_name())
    body = derive(parts, records, notes, recon, utcnow())
    body["workers"] = workers
    return body


# --- order journey ----------------------------------------------------------------------------


def systems_of(state: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Current status of the order on each system, from its state (JSON form)."""
    order, corr = state.get("order") or {}, state.get("correlation") or {}
    shipments = list((state.get("shipments") or {}).values())
    refunds = list((state.get("refunds") or {}).values())
    return {
        "marketplace": {"system": state.get("channel"), "id": corr.get("marketplace_order_id"),
                        "name": corr.get("marketplace_order_name"),
                        "status": ("cancelled" if order.get("cancelled_at") else
                                   order.get("fulfillment_status") or order.get(
                                       "financial_status") or "open"),
                        "shipments_confirmed": sum(1 for s in shipments
                                                   if s.get("marketplace_confirmed_at"))},
        "erp": {"sales_order": corr.get("erp_sales_order"),
                "status": state.get("status"),
                "delivery_notes": [s.get("delivery_note") for s in shipments if s.get("delivery_note")]},
        "warehouse": {"fulfilment": corr.get("wms_fulfilment_id"),
                      "shipments": [{"id": s.get("shipment_id"), "carrier": s.get("carrier"),
                                     "tracking_number": s.get("tracking_number"),
                                     "shipped_at": s.get("shipped_at")} for s in shipments]},
        "finance": {"invoices": [s.get("sales_invoice") for s in shipments if s.get("sales_invoice")],
                    "credit_notes": [r.get("credit_note") for r in refunds if r.get("credit_note")]},
    }


async def journey(ctx: Any, query: str, headers: dict[str, str]) -> tuple[dict[str, Any], int]:
    """The orders a support query names, each with its timeline, systems and open exceptions.
    The lookup itself is ``GET /orders/lookup`` (which asks every worker's index) with the query
    turned into an index id (an email into its salted hash)."""
    index_id = order_search.index_id_for_query(query, order_search.salt_of(ctx.settings))
    own = ctx.settings.web_url.rstrip("/")
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15)) as session, \
            session.get(f"{own}/orders/lookup", params={"id": index_id}, headers=headers) as resp:
        found = await resp.json(content_type=None)
        if resp.status != 200:
            return {"query": query, "orders": [], "error": found.get("error")}, resp.status
    keys = {o.get("order_key") for o in found.get("orders", [])}
    records, _ = await exceptions_view.load_exceptions(
        exceptions_view.bootstrap_of(ctx.app.conf.broker),
        ctx.topics.sync_exceptions.get_topic_name())
    now = utcnow()
    mine = exceptions_view.as_view([r for r in records if r.order_key in keys], now)
    orders = []
    for state in found.get("orders", []):
        orders.append({"order_key": state.get("order_key"), "status": state.get("status"),
                       "channel": state.get("channel"), "systems": systems_of(state),
                       "timeline": state.get("timeline") or [],
                       "customer": (state.get("order") or {}).get("customer"),
                       "exceptions": [e for e in mine if e.get("order_key") == state.get("order_key")],
                       "state": state})
    return {"query": query, "matched_by": "email (hashed index)" if index_id != query else "id",
            "orders": orders}, 200
