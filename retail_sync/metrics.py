"""Prometheus metrics of one worker, served at ``GET /metrics``.

Faust's own Prometheus sensor exports offsets but no lag; `ConsumerLagCollector` computes lag per
assigned partition at scrape time as (end offset - committed offset), which is what the alert
rules in deploy/alerts.yml watch.

Besides ours, the registry carries what people expect of any Python service: ``process_*``
(CPU, memory, open files), ``python_info`` and ``python_gc_*`` (prometheus_client's own
collectors), ``retail_sync_build_info{version,commit}``, and Faust's view of itself
(``FaustSensor``, ``register_faust_metrics``): events per agent, rebalances, commit latency.
Faust ships a Prometheus monitor (``faust.sensors.prometheus``) that can take our registry, but it
replaces ``app.monitor``, updates ~10 series per message and names streams by their repr; the
sensor here counts only what the dashboard and alerts use.

Long module: every metric of the worker is declared in `Metrics` (names, labels, buckets, help) so
they are read in one place; the scrape-time collectors sit beside the registry they fill.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterable, Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

from faust.sensors import Sensor
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.registry import Collector

# the *_created series only double the exposition size (prometheus_client leaves it unannotated)
disable_created_metrics()  # type: ignore[no-untyped-call]

LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)
#: flows after the order can take minutes (a marketplace down, a refund waiting for the ERP): the
#: top finite bucket is above FlowLatencyHigh's 300 s, or the alert could never see "slower"
FLOW_BUCKETS = (*LATENCY_BUCKETS, 600, 1800, 3600)
#: Faust's commits and rebalances
FAUST_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
#: a backorder waits for a delivery: seconds in a demo, days in a shop
BACKORDER_BUCKETS = (1, 10, 60, 600, 3600, 6 * 3600, 86400, 3 * 86400, 7 * 86400, 30 * 86400)
#: order created -> first shipment: minutes in a demo, days in a shop
SHIP_BUCKETS = (10, 60, 300, 900, 3600, 4 * 3600, 12 * 3600, 86400, 2 * 86400, 4 * 86400,
                7 * 86400, 14 * 86400)
#: reasons of connectors.redis_support.failure_reason
DEDUPE_FALLBACK_REASONS = ("pool_exhausted", "timeout", "connection", "error")


class Metrics:
    """Every metric the engine records, on a registry of its own."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.webhooks = Counter(
            "retail_sync_webhooks_total", "Webhook deliveries by outcome.",
            ["channel", "outcome"], registry=r,
        )
        self.orders_ingested = Counter(
            "retail_sync_orders_ingested_total", "Channel orders mapped to canonical orders.",
            ["channel"], registry=r,
        )
        self.sync_exceptions = Counter(
            "retail_sync_sync_exceptions_total", "Records sent to the sync-exception topic.",
            ["kind", "channel"], registry=r,
        )
        self.partition_stalls = Counter(
            "retail_sync_partition_stalls_total", "Input partitions found with records waiting "
            "and none handed over, read again (retail_sync/stall_watch.py).", ["topic"],
            registry=r,
        )
        self.erp_posts = Counter(
            "retail_sync_erp_posts_total", "ERP sales-order post attempts by outcome.",
            ["outcome"], registry=r,
        )
        self.erp_request_seconds = Histogram(
            "retail_sync_erp_request_seconds", "Duration of one ERP sales-order request.",
            buckets=LATENCY_BUCKETS, registry=r,
        )
        self.order_to_erp_seconds = Histogram(
            "retail_sync_order_to_erp_seconds",
            "Sync latency: order received from the channel -> ERP sales order confirmed.",
            ["channel"], buckets=LATENCY_BUCKETS, registry=r,
        )
        self.orders_by_status = Counter(
            "retail_sync_order_transitions_total", "Order lifecycle transitions.",
            ["channel", "status"], registry=r,
        )
        self.polls = Counter(
            "retail_sync_polls_total", "Polls of polled channels by outcome.",
            ["channel", "outcome"], registry=r,
        )
        self.stock_reservations = Counter(
            "retail_sync_stock_reservations_total",
            "Reservation requests answered by the stock agent (reserved, short, untracked).",
            ["channel", "outcome"], registry=r,
        )
        self.stock_decisions = Counter(
            "retail_sync_stock_decisions_total",
            "Orders decided on stock: accepted, partial, backorder, cancelled.",
            ["channel", "decision"], registry=r,
        )
        self.backorder_wait_seconds = Histogram(
            "retail_sync_backorder_wait_seconds",
            "Backordered units released to the warehouse once goods arrived: the wait from the "
            "ERP's acceptance of the order to the release (count: releases).",
            ["channel"], buckets=BACKORDER_BUCKETS, registry=r,
        )
        self.inventory_pushes = Counter(
            "retail_sync_inventory_pushes_total", "Inventory pushes to marketplaces by outcome.",
            ["channel", "mechanism", "outcome"], registry=r,
        )
        self.inventory_updates_coalesced = Counter(
            "retail_sync_inventory_updates_coalesced_total",
            "Inventory updates superseded by a newer one of the same channel and SKU.",
            registry=r,
        )
        self.stock_propagation_seconds = Histogram(
            "retail_sync_stock_propagation_seconds",
            "Stock change (ERP position, or an order's reservation) -> the marketplace took the "
            "new quantity.", ["channel", "cause"], buckets=LATENCY_BUCKETS, registry=r,
        )
        self.outbound_request_seconds = Histogram(
            "retail_sync_outbound_request_seconds",
            "Duration of one call to a marketplace (with retries).", ["channel", "action"],
            buckets=LATENCY_BUCKETS, registry=r,
        )
        self.marketplace_commands = Counter(
            "retail_sync_marketplace_commands_total",
            "Seller actions sent to marketplaces (cancellations) by outcome.",
            ["channel", "action", "outcome"], registry=r,
        )
        self.flow_seconds = Histogram(
            "retail_sync_flow_seconds",
            "Sync latency per flow: order_to_erp (received -> ERP sales order), "
            "shipment_to_marketplace (warehouse shipped -> marketplace confirmed), "
            "refund_to_erp (refund requested -> credit note), refund_to_marketplace (refund "
            "requested -> marketplace refunded).",
            ["flow", "channel"], buckets=FLOW_BUCKETS, registry=r,
        )
        self.order_to_ship_seconds = Histogram(
            "retail_sync_order_to_ship_seconds",
            "Order-to-ship cycle time: order created on the channel -> its first shipment "
            "(observed once per order, when the warehouse's first shipment is recorded).",
            ["channel"], buckets=SHIP_BUCKETS, registry=r,
        )
        self.reconciliation_mismatches = Gauge(
            "retail_sync_reconciliation_mismatches",
            "Mismatches of the last finished reconciliation job that read the channel, by "
            "cause (set on the worker that ran the job; see the _last_run_ gauge for which "
            "worker's value is the newest).", ["channel", "cause"], registry=r,
        )
        self.reconciliation_last_run = Gauge(
            "retail_sync_reconciliation_last_run_timestamp_seconds",
            "Unix time the last reconciliation job reading the channel finished with a report.",
            ["channel"], registry=r,
        )
        self.circuit_open = Gauge(
            "retail_sync_circuit_open",
            "1 while the circuit breaker of an external system is open or probing (read from "
            "the breaker at scrape time: Context.breaker binds it).", ["system"],
            registry=r,
        )
        self.orders_awaiting_stock = Gauge(
            "retail_sync_orders_awaiting_stock",
            "Orders this worker took from orders-raw that wait for their stock answer "
            "(agents/intake.py; read at scrape time).", registry=r,
        )
        self.intake_held = Gauge(
            "retail_sync_intake_held",
            "1 while the worker fetches no orders-raw because intake_max_awaiting_stock orders "
            "wait for their stock answer (read at scrape time).", registry=r,
        )
        self.inflight_erp = Gauge(
            "retail_sync_erp_inflight", "ERP requests in flight on this worker.", registry=r,
        )
        self.dedupe_fallbacks = Counter(
            "retail_sync_dedupe_fallback_total",
            "Webhook dedupe calls that could not use Redis and deduplicated in this worker only "
            "(a duplicate delivered to another worker is then not recognised): pool_exhausted "
            "(no pooled connection within RETAIL_SYNC_REDIS_POOL_TIMEOUT_S), timeout, "
            "connection, error.", ["reason"], registry=r,
        )
        for reason in DEDUPE_FALLBACK_REASONS:  # every series exists from the start at 0
            self.dedupe_fallbacks.labels(reason=reason)
        self.build_info = Gauge(
            "retail_sync_build_info", "Always 1; the labels say which build runs here.",
            ["version", "commit"], registry=r,
        )
        self.build_info.labels(**build_labels()).set(1)
        # the standard process and runtime collectors, on our registry (not the global one)
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        GCCollector(registry=r)
        self.faust_events = Counter(
            "retail_sync_faust_events_total", "Stream events Faust delivered, per agent.",
            ["agent"], registry=r,
        )
        self.faust_rebalances = Counter(
            "retail_sync_faust_rebalances_total", "Consumer group rebalances this worker went "
            "through.", registry=r,
        )
        self.faust_rebalance_seconds = Histogram(
            "retail_sync_faust_rebalance_seconds",
            "Rebalance start -> this worker's partitions recovered and processing again.",
            buckets=FAUST_BUCKETS, registry=r,
        )
        self.faust_commit_seconds = Histogram(
            "retail_sync_faust_commit_seconds", "Duration of one offset commit (count: commits).",
            buckets=FAUST_BUCKETS, registry=r,
        )
        for metric in vars(self).values():
            if isinstance(metric, MetricWrapperBase) and metric._labelnames:
                _cache_children(metric)

    def record_reconciliation(self, result: dict[str, Any], finished_at: float) -> None:
        """A finished job's report (``reconcile.Report.as_json``): each channel it read gets
        its mismatches by cause (every cause, 0 included) and its last-run time; channels the
        job did not read keep the values of their own last job."""
        for channel, counts in (result.get("channels") or {}).items():
            for cause, n in (counts.get("mismatches") or {}).items():
                self.reconciliation_mismatches.labels(channel=channel, cause=cause).set(n)
            self.reconciliation_last_run.labels(channel=channel).set(finished_at)

    def bind_breaker(self, breaker: Any) -> None:
        """Export ``breaker``'s state at scrape time (a gauge set only after a call kept its last
        value: after the ERP's breaker opened, a later success never cleared it)."""
        self.circuit_open.labels(system=breaker.name).set_function(
            lambda: float(breaker.state != "closed"))

    def bind_intake(self, intake: Any) -> None:
        """``retail_sync_orders_awaiting_stock`` and ``retail_sync_intake_held`` read
        ``intake`` (agents/intake.py) at scrape time."""
        self.orders_awaiting_stock.set_function(lambda: float(intake.count()))
        self.intake_held.set_function(lambda: float(intake.full()))


@functools.lru_cache(maxsize=1)
def _cache_children(metric: MetricWrapperBase) -> None:
    """``metric.labels(...)`` answered from a dict of its children: prometheus_client's own
    validates the names and takes a lock on every call (~2 % of the worker on the order path,
    issue 16). No child of ours is ever removed, so a cached child stays the registry's."""
    labels = metric.labels
    children: dict[Any, Any] = {}

    def cached(*values: Any, **named: Any) -> Any:
        key = (values, tuple(named.items()))
        try:
            return children[key]
        except KeyError:
            child = children[key] = labels(*values, **named)
            return child
        except TypeError:  # an unhashable value: prometheus_client makes it text
            return labels(*values, **named)

    metric.labels = cached  # type: ignore[method-assign]


def build_labels() -> dict[str, str]:
    """``version`` of the installed package; ``commit``: the git commit of the source tree when
    it is a checkout (``unknown`` in an image built without .git)."""
    try:
        version = metadata.version("retail-sync")
    except metadata.PackageNotFoundError:
        version = "unknown"
    return {"version": version, "commit": _git_commit(Path(__file__).resolve().parent.parent)}


def _git_commit(root: Path) -> str:
    """HEAD of a checkout at ``root``, read from .git (no git binary needed): 12 hex digits."""
    git = root / ".git"
    try:
        head = (git / "HEAD").read_text().strip()
        if head.startswith("ref: "):
            ref = head[5:]
            loose = git / ref
            if loose.exists():
                head = loose.read_text().strip()
            else:
                packed = (git / "packed-refs").read_text().splitlines()
                head = next((line.split()[0] for line in packed
                             if line.endswith(" " + ref)), "unknown")
    except OSError:
        return "unknown"
    return head[:12] if head != "unknown" else head


def register_faust_metrics(app: Any, metrics: Metrics) -> Any:
    """Attach a ``FaustSensor`` to ``app`` (Faust calls it on every event, commit, rebalance)."""
    sensor = FaustSensor(metrics)
    app.sensors.add(sensor)
    return sensor


class FaustSensor(Sensor):
    """Faust's own figures, counted as they happen: events per agent (the agent whose actor
    pulled the event: ``faust.current_agent()``), rebalances and their duration, commits and
    their latency. One counter increment per event, nothing per message."""

    def __init__(self, metrics: Metrics, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.metrics = metrics
        self._agents: dict[Any, Any] = {}

    def on_stream_event_in(self, tp: Any, offset: int, stream: Any, event: Any) -> None:
        from faust.agents import current_agent

        agent = current_agent()
        child = self._agents.get(agent)
        if child is None:
            name = getattr(agent, "name", None) or "-"
            child = self._agents[agent] = self.metrics.faust_events.labels(agent=name)
        child.inc()
        return None

    def on_commit_initiated(self, consumer: Any) -> Any:
        return time.monotonic()

    def on_commit_completed(self, consumer: Any, state: Any) -> None:
        if isinstance(state, float):
            self.metrics.faust_commit_seconds.observe(time.monotonic() - state)

    def on_rebalance_start(self, app: Any) -> dict[str, Any]:
        self.metrics.faust_rebalances.inc()
        return {"time_start": time.monotonic()}

    def on_rebalance_end(self, app: Any, state: dict[str, Any]) -> None:
        started = (state or {}).get("time_start")
        if started is not None:
            self.metrics.faust_rebalance_seconds.observe(time.monotonic() - started)


class ConsumerLagCollector(Collector):
    """Lag per assigned partition of the topics our agents consume, read from the Faust consumer
    at scrape time. Table changelogs are left out: they are read only during recovery and never
    committed, so "end - committed" would report their whole length as lag."""

    def __init__(self, app: Any, topics: Iterable[str]) -> None:
        self.app = app
        self.topics = frozenset(topics)

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "retail_sync_consumer_lag",
            "Messages behind the end of each assigned partition (end offset - committed).",
            labels=["topic", "partition"],
        )
        for tp, lag in self.lags().items():
            family.add_metric([tp.topic, str(tp.partition)], lag)
        yield family

    def lags(self) -> dict[Any, int]:
        consumer = getattr(self.app, "_consumer", None)
        if consumer is None:
            return {}
        lags = {}
        committed = getattr(consumer, "_committed_offset", {})
        for tp in consumer.assignment():
            if tp.topic not in self.topics:
                continue
            end = consumer.highwater(tp)
            if end is None:
                continue
            done = committed.get(tp)
            position = 0 if done is None else done
            lags[tp] = max(0, int(end) - int(position))
        return lags


class RateLimitCollector(Collector):
    """Client-side rate limiting per marketplace operation (connectors.ratelimit.Budgets of this
    process), read at scrape time: calls, 429s the marketplace still answered, seconds spent
    waiting for a slot, and whether the budget is shared through Redis right now."""

    def __init__(self, budgets: Callable[[], Iterable[Any]]) -> None:
        self.budgets = budgets

    def collect(self) -> Iterator[Any]:
        labels = ["channel", "operation"]
        calls = CounterMetricFamily(
            "retail_sync_ratelimit_calls_total", "Outbound calls per marketplace operation.", labels=labels)
        throttled = CounterMetricFamily(
            "retail_sync_ratelimit_throttled_total",
            "429 answers per marketplace operation (each pauses that operation's budget).",
            labels=labels)
        waited = CounterMetricFamily(
            "retail_sync_ratelimit_wait_seconds_total",
            "Seconds calls waited for a slot in their operation's budget.", labels=labels)
        shared = GaugeMetricFamily(
            "retail_sync_ratelimit_shared",
            "1 while an operation's budget is kept in Redis (shared by every worker), 0 while "
            "this worker uses an in-process one (no Redis configured, or Redis unreachable).",
            labels=labels)
        redis = GaugeMetricFamily(
            "retail_sync_ratelimit_redis_configured",
            "1 when an operation's budget is meant to live in Redis (RETAIL_SYNC_REDIS_URL set): "
            "with retail_sync_ratelimit_shared 0 it has lost Redis.", labels=labels)
        for budgets in self.budgets():
            for operation, stats in budgets.stats().items():
                key = [budgets.channel, operation]
                calls.add_metric(key, stats["calls"])
                throttled.add_metric(key, stats["throttled"])
                waited.add_metric(key, stats["waited_s"])
                limiter = budgets.limiter(operation)
                if limiter is not None:
                    shared.add_metric(key, int(budgets.shared(operation)))
                    redis.add_metric(key, int(type(limiter).__name__ == "RedisGcra"))
        yield from (calls, throttled, waited, shared, redis)


class TableFiguresCollector(Collector):
    """Figures read from this worker's tables at scrape time (its active partitions; PromQL sums
    over workers): listings at the ATS out of listings (what each channel was last told vs the
    ATS now, stock table) and traceable out of tracked (non-cancelled) orders (order table).
    ``figures`` is the computation the dashboard uses (``dashboard.table_figures``); its result
    is kept ``cache_s`` seconds, so scrapes close together iterate the tables once."""

    def __init__(self, figures: Callable[[], dict[str, Any]], cache_s: float = 5.0) -> None:
        self.figures = figures
        self.cache_s = cache_s
        self._cached: tuple[float, dict[str, Any]] | None = None

    def _read(self) -> dict[str, Any]:
        now = time.monotonic()
        if self._cached is not None and now - self._cached[0] < self.cache_s:
            return self._cached[1]
        try:
            figures = self.figures()
        except Exception:  # noqa: BLE001 - no tables yet (not started, recovering): no samples
            figures = {}
        self._cached = (now, figures)
        return figures

    def describe(self) -> Iterator[GaugeMetricFamily]:
        """The families without samples: registering does not read the tables."""
        return self._families({})

    def collect(self) -> Iterator[GaugeMetricFamily]:
        return self._families(self._read())

    def _families(self, figures: dict[str, Any]) -> Iterator[GaugeMetricFamily]:
        stock, orders = figures.get("stock") or {}, figures.get("orders") or {}
        for name, doc, values in (
            ("retail_sync_listings_at_ats", "Listings (SKU x channel) whose last told quantity "
             "is the channel's ATS now (inventory accuracy: / retail_sync_listings_total).",
             stock.get("accurate")),
            ("retail_sync_listings_total", "Listings (SKU x channel) in this worker's stock "
             "table partitions that the channel was told a quantity for.", stock.get("listed")),
            ("retail_sync_orders_traceable", "Non-cancelled orders whose marketplace id, ERP "
             "sales order, warehouse reference and finance document are all linked "
             "(traceability: / retail_sync_orders_tracked).",
             orders.get("traceable_by_channel")),
            ("retail_sync_orders_tracked", "Non-cancelled orders in this worker's order table "
             "partitions.", orders.get("not_cancelled_by_channel")),
        ):
            family = GaugeMetricFamily(name, doc, labels=["channel"])
            for channel, n in sorted((values or {}).items()):
                family.add_metric([channel], n)
            yield family
