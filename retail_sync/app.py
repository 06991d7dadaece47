"""Composition root: builds the Faust app, its topics, tables, agents and views from Settings."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, TypeVar

import faust
from aiokafka.errors import KafkaError

from retail_sync import (
    broker_watch,
    exceptions_view,
    faust_fixes,
    fetch_log,
    heap,
    intake_hold,
    memdebug,
    stall_watch,
    web,
)
from retail_sync.agents import (
    erp_dispatch,
    erp_orders,
    inventory_push,
    marketplace,
    orders,
    poller,
    stock,
    stock_feed,
    warehouse,
)
from retail_sync.agents.intake import Intake
from retail_sync.channels import channels
from retail_sync.connectors import wms
from retail_sync.connectors.contracts import ChannelOutbound, ErpConnector, StockFeed
from retail_sync.connectors.dedupe import InProcessDeduper, RedisDeduper
from retail_sync.connectors.ratelimit import all_budgets
from retail_sync.connectors.redis_support import redis_enabled
from retail_sync.context import Context, Tables
from retail_sync.erps import erp_plugin, settings_for
from retail_sync.metrics import (
    ConsumerLagCollector,
    Metrics,
    RateLimitCollector,
    register_faust_metrics,
)
from retail_sync.settings import Settings
from retail_sync.streams import codecs
from retail_sync.streams.topics import declare_topics
from retail_sync.tables.orders import (
    order_state_table,
    poll_cursor_table,
    stock_table,
)

#: Table changelog records Faust may queue before its conductor stops delivering records to every
#: agent (Faust's ProducerBuffer.max_messages, 100 by default: each order writes several changelog
#: records, so the default stalled the consumer ~90 times per 4000-order run). Offsets are still
#: committed only after this queue is flushed.
PRODUCER_BUFFER_MAX_MESSAGES = 2000

log = logging.getLogger(__name__)
T = TypeVar("T")


def faust_app(settings: Settings, broker_url: str) -> faust.App:
    """A Faust app configured for this project (RocksDB tables, tuned producer, no raw views)."""
    datadir = settings.datadir / settings.app_id
    datadir.mkdir(parents=True, exist_ok=True)
    return faust.App(
        settings.app_id,
        broker=broker_url,
        store="rocksdb://",
        datadir=str(datadir),
        topic_partitions=settings.partitions,
        topic_replication_factor=settings.replication_factor,
        table_standby_replicas=settings.table_standby_replicas,
        # the admin listener: web_bind is the address bound (Faust's default binds every
        # interface); web_host only names this worker in the default canonical_url
        web_bind=settings.web_host,
        web_host=settings.web_host,
        web_port=settings.web_port,
        canonical_url=settings.web_url,
        web_tables_enabled=False,
        # Faust's /router/... views (routing metadata, unauthenticated, a 500 on an unknown
        # table; found by schemathesis): table routing between workers does not use them
        web_router_enabled=False,
        web_in_thread=False,
        broker_session_timeout=settings.broker_session_timeout_s,
        broker_rebalance_timeout=settings.broker_rebalance_timeout_s,
        broker_heartbeat_interval=settings.broker_heartbeat_interval_s,
        producer_linger=settings.producer_linger_s,
        broker_commit_interval=settings.broker_commit_interval_s,
        broker_max_poll_records=settings.consumer_max_poll_records,
        # explicit (Faust's default is the same 1,200 s): records the pipeline sends wait this
        # long for a broker that is away; the webhook bounds its own wait (ingress.receive_webhook)
        producer_request_timeout=settings.producer_request_timeout_s,
        producer_max_batch_size=1024 * 1024,
        producer_max_request_size=settings.producer_max_request_bytes,
        table_cleanup_interval=30.0,
        autodiscover=False,
    )


def create_app(
    settings: Settings,
    broker_url: str,
    erp_factory: Callable[[], ErpConnector] | None = None,
    stock_feed_factory: Callable[[], StockFeed | None] | None = None,
) -> Context:
    faust_fixes.install()  # Faust's commit never passes a message still in flight
    fetch_log.install()  # where each partition is read from, at INFO (a diagnostic)
    stall_watch.inject_drops()  # a test fault, only with RETAIL_SYNC_TEST_DROP_FETCHED set
    codecs.set_loopback(settings.loopback_bytes)  # a record read back is not decoded again
    app = faust_app(settings, broker_url)
    erp = erp_plugin(settings)  # the configured ERP (RETAIL_SYNC_ERP_PLUGIN; ERPNext by default)
    erp_settings = settings_for(erp, settings)
    found = channels(settings)
    outbound = outbound_connectors(settings, found)
    metrics = Metrics()
    ctx = Context(
        app=app,
        settings=settings,
        topics=declare_topics(app, prefix=settings.app_id, partitions=settings.partitions,
                              outbound_channels=outbound),
        tables=Tables(orders=order_state_table(app, settings),
                      cursors=poll_cursor_table(app, settings),
                      stock=stock_table(app, settings)),
        metrics=metrics,
        erp_factory=erp_factory or (lambda: erp.connector(erp_settings)),
        deduper=webhook_deduper(settings, metrics),
        channels=found,
        outbound=outbound,
        stock_feed_factory=stock_feed_factory or _optional(erp.stock_feed, erp_settings),
        wms_factory=lambda: wms.plugin.connector(settings),
        erp_order_feed_factory=_optional(erp.order_feed, erp_settings),
        intake=Intake(settings.intake_max_awaiting_stock, settings.intake_expiry_s),
    )
    # orders-raw is not fetched while the orders taken in wait for their stock answers
    raw_topic = ctx.topics.raw_orders.get_topic_name()
    intake_hold.hold(app, [raw_topic], ctx.intake.full, ctx.intake.fetched)

    @app.on_partitions_revoked.connect  # type: ignore[arg-type]  # mode: its SignalHandlerT accepts no handler
    async def _intake_revoked(sender: Any, revoked: set[Any], **kwargs: Any) -> None:
        ctx.intake.forget({tp.partition for tp in revoked if tp.topic == raw_topic})
    metrics.bind_intake(ctx.intake)
    metrics.registry.register(ConsumerLagCollector(
        app, [topic.get_topic_name() for topic in ctx.topics.all()]))
    metrics.registry.register(RateLimitCollector(all_budgets))
    register_faust_metrics(app, metrics)  # events per agent, rebalances, commit latency
    exceptions_gauges = exceptions_view.ExceptionsCollector()
    metrics.registry.register(exceptions_gauges)
    replayed_topic = exceptions_view.declare_replayed_topic(app, settings.app_id,
                                                            settings.partitions)

    @app.task  # type: ignore[untyped-decorator]  # Faust: @no_type_check
    async def _declare_replayed_topic() -> None:
        try:
            await replayed_topic.maybe_declare()
        except Exception as exc:  # noqa: BLE001 - the first replay's note creates it
            log.warning("%s not declared at start: %r", replayed_topic.get_topic_name(), exc)

    @app.timer(interval=30.0, on_leader=True)  # type: ignore[untyped-decorator]  # Faust: @no_type_check
    async def _refresh_exception_gauges() -> None:
        try:
            bootstrap = exceptions_view.bootstrap_of(app.conf.broker)
            records, _ = await exceptions_view.load_exceptions(
                bootstrap, ctx.topics.sync_exceptions.get_topic_name())
            replayed = await exceptions_view.load_replayed(bootstrap, settings.app_id)
        except (TimeoutError, KafkaError, OSError) as exc:
            # a timer that raises crashes the whole worker: during a broker outage this one
            # did ("Unable to bootstrap"), ~30 s after the broker went away
            log.warning("exception gauges not refreshed (broker unreachable?): %r", exc)
            return
        exceptions_gauges.refresh(records, replayed=replayed)  # replayed ones are not open

    for module in (orders, erp_dispatch, poller, stock, stock_feed, inventory_push,
                   marketplace, warehouse, erp_orders, web, broker_watch):
        module.register(ctx)
    memdebug.register(ctx)  # GET /debug/memory, only with RETAIL_SYNC_TEST_MEMDEBUG set
    heap.register(ctx)  # malloc_trim every RETAIL_SYNC_MALLOC_TRIM_INTERVAL_S
    stall_watch.register(ctx)  # input partitions nobody reads: said and read again

    @app.on_before_shutdown.connect  # type: ignore[arg-type]  # mode: its SignalHandlerT accepts no handler
    async def _close_outbound(sender: Any, **kwargs: Any) -> None:
        for outbound in ctx.outbound.values():
            await outbound.close()
    _tune_running_worker(app, settings)
    return ctx


def webhook_deduper(settings: Settings, metrics: Metrics | None = None) -> Any:
    """Webhook delivery ids claimed in Redis (any worker can receive any delivery) when a Redis
    URL is configured; in this process otherwise. A busy pool is waited for; real Redis trouble
    falls back per call, counted in retail_sync_dedupe_fallback_total."""
    if redis_enabled(settings.redis_url):
        counter = metrics.dedupe_fallbacks if metrics is not None else None
        return RedisDeduper(settings.redis_url, settings.webhook_dedupe_ttl_s,
                            prefix=f"rs:webhook:{settings.app_id}:shopify",
                            pending_ttl_s=settings.webhook_pending_ttl_s,
                            timeout_s=settings.redis_timeout_s,
                            max_connections=settings.redis_max_connections,
                            pool_timeout_s=settings.redis_pool_timeout_s,
                            on_fallback=(lambda reason: counter.labels(reason=reason).inc())
                            if counter is not None else None)
    return InProcessDeduper(settings.webhook_dedupe_ttl_s, settings.webhook_dedupe_max_entries)


def _optional(factory: Callable[[Any], T | None] | None, settings: Any) -> Callable[[], T | None]:
    """``factory(settings)`` as a factory of no arguments; one answering None when the plugin has
    no such part."""
    return (lambda: factory(settings)) if factory is not None else (lambda: None)


def outbound_connectors(settings: Settings, found: dict[str, Any]) -> dict[str, ChannelOutbound]:
    """Every channel we can write to (inventory, cancellations): those whose plugin builds an
    outbound from these settings."""
    built = {}
    for name, plugin in found.items():
        outbound = plugin.outbound(settings) if plugin.outbound else None
        if outbound is not None:
            built[name] = outbound
    return built


def _tune_running_worker(app: faust.App, settings: Settings) -> None:
    """Once the worker runs: the Faust worker sets the root logger to DEBUG for its spinner even
    at -l warning, which makes every aiokafka debug call build a record, so put it back; and
    raise the producer buffer limit (a class attribute in Faust, not a setting), past which the
    conductor stops delivering records to all agents until table changelog sends catch up."""
    level = getattr(logging, settings.log_level.upper())

    @app.task  # type: ignore[untyped-decorator]  # Faust: @no_type_check
    async def _tune() -> None:
        logging.getLogger().setLevel(level)
        app.producer.buffer.max_messages = PRODUCER_BUFFER_MAX_MESSAGES
