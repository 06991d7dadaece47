"""The dashboard's table and job figures on /metrics too (issue 14 §3: Grafana shows what the
worker's pages show): reconciliation mismatches by channel and cause set when a job finishes,
order-to-ship cycle time observed when an order first ships, inventory accuracy and
traceability computed by a collector at scrape time from the dashboard's own computation."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from retail_sync import admin_actions, dashboard
from retail_sync.agents import orders
from retail_sync.app import create_app
from retail_sync.metrics import Metrics, TableFiguresCollector
from retail_sync.settings import Settings
from retail_sync.streams.models import OrderStatus, ShipmentRecord
from retail_sync.streams.rules.lifecycle import Outcome
from retail_sync.streams.stock import StockState, Told
from tests.unit.test_aftersale import LINES, received, run, shipment
from tests.unit.test_order_index import NOW, _state


def samples(registry: Any) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """(sample name, sorted labels) -> value, read back from the text exposition."""
    out = {}
    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(registry: Any, name: str, **labels: str) -> float | None:
    return samples(registry).get((name, tuple(sorted(labels.items()))))


async def test_a_finished_reconciliation_job_sets_mismatches_by_channel_and_cause(
        monkeypatch: Any) -> None:
    import retail_sync.reconcile as reconcile_module

    reports = iter([
        {"ok": False, "channels": {
            "shopify": {"mismatches": {"missing_in_erp": 2, "status_differs": 1}},
            "amazon": {"mismatches": {"missing_in_erp": 0, "status_differs": 0}}}},
        {"ok": True, "channels": {  # a later job reading shopify only
            "shopify": {"mismatches": {"missing_in_erp": 0, "status_differs": 0}}}},
    ])

    async def fake_reconcile(settings: Any, channels: Any, **kwargs: Any) -> Any:
        return SimpleNamespace(as_json=lambda: next(reports))

    async def no_audit(ctx: Any, record: Any) -> None:
        return None

    monkeypatch.setattr(reconcile_module, "reconcile", fake_reconcile)
    monkeypatch.setattr(admin_actions.audit, "note", no_audit)
    ctx = SimpleNamespace(settings=SimpleNamespace(reconciliation_jobs_kept=3), metrics=Metrics())
    jobs = admin_actions.jobs_of(ctx)
    r = ctx.metrics.registry

    job = jobs.start(["shopify", "amazon"], 7.0, "tester", "req-1")
    while jobs.running:
        await asyncio.sleep(0.01)
    name = "retail_sync_reconciliation_mismatches"
    assert value(r, name, channel="shopify", cause="missing_in_erp") == 2
    assert value(r, name, channel="shopify", cause="status_differs") == 1
    assert value(r, name, channel="amazon", cause="missing_in_erp") == 0
    first_run = value(r, "retail_sync_reconciliation_last_run_timestamp_seconds",
                      channel="amazon")
    assert first_run == job.finished_at.timestamp()

    jobs.start(["shopify"], 7.0, "tester", "req-2")
    while jobs.running:
        await asyncio.sleep(0.01)
    assert value(r, name, channel="shopify", cause="missing_in_erp") == 0  # the newest job
    assert value(r, "retail_sync_reconciliation_last_run_timestamp_seconds",
                 channel="amazon") == first_run  # not read this time: its own last job stays


def test_order_to_ship_is_observed_once_when_the_order_first_ships() -> None:
    before, _, _ = run([received()])
    three_days = before.order.created_at + timedelta(days=3)
    event = shipment("S1", LINES[:1])
    event = event.model_copy(update={"shipment": event.shipment.model_copy(
        update={"shipped_at": three_days})})
    shipped, _, _ = run([received(), event])
    assert not before.shipments and shipped.shipments
    ctx = SimpleNamespace(metrics=Metrics())
    orders._observe(ctx, Outcome(state=shipped, changed=True), event, before)
    orders._observe(ctx, Outcome(state=shipped, changed=True), event, shipped)  # a redelivery
    r = ctx.metrics.registry
    assert value(r, "retail_sync_order_to_ship_seconds_count", channel="shopify") == 1
    assert value(r, "retail_sync_order_to_ship_seconds_sum", channel="shopify") == 3 * 86400
    # the buckets reach days: 3 days is in the 4-day bucket, not only in +Inf
    assert value(r, "retail_sync_order_to_ship_seconds_bucket", channel="shopify",
                 le="172800.0") == 0
    assert value(r, "retail_sync_order_to_ship_seconds_bucket", channel="shopify",
                 le="345600.0") == 1


class FakeTable:
    def __init__(self, items: dict[str, Any]) -> None:
        self._items = items
        self.reads = 0

    def items(self) -> Any:
        self.reads += 1
        return list(self._items.items())


def test_inventory_accuracy_and_traceability_are_read_from_the_tables_at_scrape(
        tmp_path: Path) -> None:
    """Built as a worker builds it (create_app registers the collector through the dashboard),
    with the tables replaced by small fakes."""
    ctx = create_app(Settings(datadir=tmp_path), "kafka://127.0.0.1:1")
    linked = _state("SAL-ORD-1").model_copy(update={"shipments": {"S1": ShipmentRecord(
        shipment_id="S1", lines={"1": 1}, carrier="UPS", tracking_number="1Z",
        shipped_at=NOW.replace(hour=2), sales_invoice="ACC-SINV-1")}})
    unlinked = _state("SAL-ORD-2")
    cancelled = linked.model_copy(update={"status": OrderStatus.CANCELLED})
    channel = linked.channel
    told = {c: Told(quantity=0, at=NOW) for c in ctx.channels}  # no stock: ATS 0 everywhere
    stock = {"SKU-A": StockState(sku="SKU-A", told=told),
             "SKU-B": StockState(sku="SKU-B", told={**told, channel: Told(quantity=5, at=NOW)}),
             "SKU-A|order#1": "a line record, not a SKU"}
    ctx.tables = SimpleNamespace(
        orders=FakeTable({"a": linked, "b": unlinked, "c": cancelled}), stock=FakeTable(stock))
    r = ctx.metrics.registry
    assert value(r, "retail_sync_orders_tracked", channel=channel) == 2  # cancelled left out
    assert value(r, "retail_sync_orders_traceable", channel=channel) == 1
    assert value(r, "retail_sync_listings_total", channel=channel) == 2
    assert value(r, "retail_sync_listings_at_ats", channel=channel) == 1
    other = next(c for c in ctx.channels if c != channel)
    assert value(r, "retail_sync_listings_at_ats", channel=other) == 2
    # the same figures as the dashboard's page part
    figures = dashboard.table_figures(ctx)
    assert figures["orders"]["traceable"] == 1 and figures["orders"]["not_cancelled"] == 2
    assert figures["stock"]["accurate"][channel] == 1


def test_the_collector_caches_and_survives_tables_not_ready() -> None:
    calls = []

    def figures() -> dict[str, Any]:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("table not ready")
        return {"orders": {"traceable_by_channel": {"x": 1},
                           "not_cancelled_by_channel": {"x": 2}}}

    metrics = Metrics()
    collector = TableFiguresCollector(figures, cache_s=0.0)
    metrics.registry.register(collector)
    assert not calls  # registering reads no table
    assert value(metrics.registry, "retail_sync_orders_tracked", channel="x") is None
    assert value(metrics.registry, "retail_sync_orders_tracked", channel="x") == 2
    collector.cache_s = 60.0
    generate_latest(metrics.registry)
    generate_latest(metrics.registry)
    assert len(calls) == 2  # the figures of the last read, kept cache_s
