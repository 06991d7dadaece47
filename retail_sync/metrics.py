"""Prometheus metrics of one worker, served at ``GET /metrics``.

Faust's own Prometheus sensor exports offsets but no lag; `ConsumerLagCollector` computes lag per
assigned partition at scrape time as (end offset - committed offset), which is what the alert
rules in deploy/alerts.yml watch.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

disable_created_metrics()  # the *_created series only double the exposition size

LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)
#: a backorder waits for a delivery: seconds in a demo, days in a shop
BACKORDER_BUCKETS = (1, 10, 60, 600, 3600, 6 * 3600, 86400, 3 * 86400, 7 * 86400, 30 * 86400)
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
            ["flow", "channel"], buckets=LATENCY_BUCKETS, registry=r,
        )
        self.circuit_open = Gauge(
            "retail_sync_circuit_open",
            "1 while the circuit breaker of an external system is open or probing.", ["system"],
            registry=r,
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
        for budgets in self.budgets():
            for operation, stats in budgets.stats().items():
                key = [budgets.channel, operation]
                calls.add_metric(key, stats["calls"])
                throttled.add_metric(key, stats["throttled"])
                waited.add_metric(key, stats["waited_s"])
                if budgets.limiter(operation) is not None:
                    shared.add_metric(key, int(budgets.shared(operation)))
        yield from (calls, throttled, waited, shared)
