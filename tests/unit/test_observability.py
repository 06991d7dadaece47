"""Issue 14 §2 on the worker's side: change-feed polls are single flight (ticks never queue in
poll-ticks behind a slow ERP/WMS), replayed exception records stop counting as open, the circuit
gauge follows the breaker, and the standard metrics (process, python, build info, Faust's own)
are on our registry."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from types import SimpleNamespace
from typing import Any

import faust
from prometheus_client import generate_latest

from retail_sync.agents.feeds import register_feed
from retail_sync.connectors.breaker import CircuitBreaker
from retail_sync.exceptions_view import ExceptionsCollector
from retail_sync.metrics import FaustSensor, Metrics, RateLimitCollector
from retail_sync.streams.commands import PollTick
from retail_sync.streams.models import ExceptionKind, SyncException, utcnow


class TickStream:
    """The agent's stream as Faust's actors share it: each ``__anext__`` takes the next tick."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[PollTick] = asyncio.Queue()

    def __aiter__(self) -> TickStream:
        return self

    async def __anext__(self) -> PollTick:
        return await self.queue.get()


class SlowFeed:
    """A feed whose poll waits until released (the ERP answering slowly)."""

    def __init__(self) -> None:
        self.polls = 0
        self.release = asyncio.Event()

    async def poll(self, cursor: Any) -> Any:
        self.polls += 1
        await self.release.wait()
        return SimpleNamespace(cursor=f"c{self.polls}")

    async def close(self) -> None:
        pass


def _ctx(app: faust.App) -> Any:
    return SimpleNamespace(
        app=app, settings=SimpleNamespace(app_id="t14"), metrics=Metrics(),
        topics=SimpleNamespace(poll_ticks=app.topic("t14.poll-ticks", value_type=PollTick)),
        tables=SimpleNamespace(cursors={}))


def _polls(ctx: Any, outcome: str) -> float:
    return ctx.metrics.registry.get_sample_value(
        "retail_sync_polls_total", {"channel": "erp-stock", "outcome": outcome}) or 0.0


async def test_feed_ticks_do_not_queue_behind_a_slow_poll() -> None:
    """Before: one actor polled once per tick, so the ticks sent while the ERP was slow waited
    in poll-ticks and then polled back to back. Now: two actors, the idle one drops them."""
    app = faust.App("t14-feeds", broker="kafka://127.0.0.1:1", autodiscover=False)
    ctx = _ctx(app)
    feed = SlowFeed()

    async def handle(result: Any) -> list[Any]:
        return []

    register_feed(ctx, "erp-stock", 1.0, feed, handle)
    agent = app.agents["t14.erp-stock-feed"]
    assert agent.concurrency == 2
    stream = TickStream()
    actors = [asyncio.create_task(agent.fun(stream)) for _ in range(agent.concurrency)]
    try:
        for _ in range(6):  # one tick starts the poll; five arrive while it runs
            stream.queue.put_nowait(PollTick(channel="erp-stock", requested_at=utcnow()))
        stream.queue.put_nowait(PollTick(channel="wms", requested_at=utcnow()))  # another feed's
        for _ in range(100):
            await asyncio.sleep(0.01)
            if stream.queue.empty() and _polls(ctx, "skipped_busy") == 5:
                break
        assert feed.polls == 1
        assert _polls(ctx, "skipped_busy") == 5
        feed.release.set()
        await asyncio.sleep(0.05)
        assert _polls(ctx, "ok") == 1 and ctx.tables.cursors["erp-stock"]["cursor"] == "c1"
        # a tick queued while the worker was down (older than 3 intervals, at least 10 s)
        stream.queue.put_nowait(PollTick(channel="erp-stock",
                                         requested_at=utcnow() - timedelta(seconds=30)))
        stream.queue.put_nowait(PollTick(channel="erp-stock", requested_at=utcnow()))
        await asyncio.sleep(0.05)
        assert _polls(ctx, "skipped_stale") == 1
        assert feed.polls == 2 and _polls(ctx, "ok") == 2
    finally:
        for actor in actors:
            actor.cancel()
        await asyncio.gather(*actors, return_exceptions=True)


def _exception(kind: ExceptionKind, hours_ago: float) -> SyncException:
    return SyncException(kind=kind, reason="r", error_class="E", payload="{}",
                         occurred_at=utcnow() - timedelta(hours=hours_ago))


def test_replayed_exceptions_stop_counting_as_open() -> None:
    old, newer = _exception(ExceptionKind.ERP_PERMANENT, 30), _exception(
        ExceptionKind.ERP_PERMANENT, 1)
    metrics = Metrics()
    collector = ExceptionsCollector()
    metrics.registry.register(collector)
    collector.refresh([old, newer], replayed=[old.exception_id])
    get = metrics.registry.get_sample_value
    kind = {"kind": "erp_permanent"}
    assert get("retail_sync_exceptions_on_topic", kind) == 2  # the topic is a log
    assert get("retail_sync_exceptions_open", kind) == 1
    assert 3500 < get("retail_sync_exceptions_oldest_age_seconds", kind) < 3700  # not 30 h
    collector.refresh([old, newer], replayed=[old.exception_id, newer.exception_id])
    assert get("retail_sync_exceptions_open", kind) == 0
    assert get("retail_sync_exceptions_oldest_age_seconds", kind) is None


def test_circuit_gauge_follows_the_breaker() -> None:
    """The ERP's gauge was set only after an exhausted post: a later success left it at 1."""
    metrics = Metrics()
    now = [0.0]
    breaker = CircuitBreaker("erp", failures=1, cool_down_s=5, clock=lambda: now[0])
    metrics.bind_breaker(breaker)
    get = metrics.registry.get_sample_value
    assert get("retail_sync_circuit_open", {"system": "erp"}) == 0
    breaker.record_failure()
    assert get("retail_sync_circuit_open", {"system": "erp"}) == 1
    breaker.record_success()
    assert get("retail_sync_circuit_open", {"system": "erp"}) == 0


def test_standard_metrics_are_on_our_registry() -> None:
    metrics = Metrics()
    text = generate_latest(metrics.registry).decode()
    for name in ("process_resident_memory_bytes", "process_cpu_seconds_total",
                 "process_open_fds", "python_info", "python_gc_collections_total",
                 "retail_sync_build_info"):
        assert f"\n{name}" in text, name
    labels = metrics.build_info.collect()[0].samples[0].labels
    assert labels["version"] and labels["commit"]


def test_faust_sensor_counts_events_per_agent_commits_and_rebalances() -> None:
    metrics = Metrics()
    sensor = FaustSensor(metrics)
    get = metrics.registry.get_sample_value
    state = sensor.on_commit_initiated(None)
    sensor.on_commit_completed(None, state)
    assert get("retail_sync_faust_commit_seconds_count") == 1
    started = sensor.on_rebalance_start(None)
    sensor.on_rebalance_end(None, started)
    assert get("retail_sync_faust_rebalances_total") == 1
    assert get("retail_sync_faust_rebalance_seconds_count") == 1
    sensor.on_stream_event_in(None, 0, None, None)  # outside an agent: agent "-"
    assert get("retail_sync_faust_events_total", {"agent": "-"}) == 1


async def test_rate_limiter_says_whether_redis_is_meant_to_be_used() -> None:
    from retail_sync.connectors.ratelimit import Budgets

    metrics = Metrics()
    budgets = Budgets("walmart", {"inventory": (1000.0, 5)})
    await budgets.acquire("inventory")
    metrics.registry.register(RateLimitCollector(lambda: [budgets]))
    labels = {"channel": "walmart", "operation": "inventory"}
    assert metrics.registry.get_sample_value("retail_sync_ratelimit_redis_configured", labels) == 0
    assert metrics.registry.get_sample_value("retail_sync_ratelimit_shared", labels) == 0


def test_labelled_children_are_cached_and_still_exported() -> None:
    metrics = Metrics()
    first = metrics.orders_ingested.labels(channel="shopify")
    assert metrics.orders_ingested.labels(channel="shopify") is first
    assert metrics.orders_ingested.labels("shopify") is first  # positional: the same child
    first.inc()
    metrics.orders_ingested.labels(channel="amazon").inc(2)
    metrics.stock_decisions.labels(decision="partial", channel="shopify").inc()  # any order
    text = generate_latest(metrics.registry).decode()
    assert 'retail_sync_orders_ingested_total{channel="shopify"} 1.0' in text
    assert 'retail_sync_orders_ingested_total{channel="amazon"} 2.0' in text
    assert 'retail_sync_stock_decisions_total{channel="shopify",decision="partial"} 1.0' in text
