"""The dashboard's arithmetic (issue 14 §1): Prometheus-style quantiles from histogram buckets,
workers' samples merged bucket by bucket, figures over order states, and the search index's
salted email entries."""

from __future__ import annotations

import hashlib

from retail_sync import dashboard
from retail_sync.streams.models import Customer, ShipmentRecord
from retail_sync.tables import order_search
from retail_sync.tables.order_search import external_ids
from tests.unit.test_order_index import NOW, _state


def test_quantile_interpolates_like_histogram_quantile() -> None:
    buckets = {"1.0": 50.0, "2.0": 100.0, "+Inf": 100.0}
    assert dashboard.quantile(0.5, buckets) == 1.0
    assert dashboard.quantile(0.75, buckets) == 1.5
    assert dashboard.quantile(0.99, {"1.0": 0.0, "+Inf": 10.0}) == 1.0  # top finite bound
    assert dashboard.quantile(0.5, {"1.0": 0.0, "+Inf": 0.0}) is None


def test_group_quantiles_come_from_summed_buckets_not_averaged_quantiles() -> None:
    fast = [{"t": 0.0, "h": {"order_to_erp|shopify": {"1.0": 0.0, "10.0": 0.0, "+Inf": 0.0}},
             "ingested": {"shopify": 0.0}},
            {"t": 60.0, "h": {"order_to_erp|shopify": {"1.0": 98.0, "10.0": 98.0, "+Inf": 98.0}},
             "ingested": {"shopify": 98.0}}]
    slow = [{"t": 0.0, "h": {"order_to_erp|shopify": {"1.0": 0.0, "10.0": 0.0, "+Inf": 0.0}},
             "ingested": {"shopify": 0.0}},
            {"t": 60.0, "h": {"order_to_erp|shopify": {"1.0": 0.0, "10.0": 2.0, "+Inf": 2.0}},
             "ingested": {"shopify": 2.0}}]
    series = dashboard.latency_series(dashboard.merge_samples([fast, slow]))
    last = series["latency"]["order_to_erp|shopify"][-1]
    assert last["count"] == 100.0
    assert last["p50"] < 1.0 and 1.0 < last["p99"] <= 10.0
    assert series["throughput"]["shopify"][-1]["per_min"] == 100.0


def test_traceability_cycle_time_and_cancellation_figures() -> None:
    linked = _state("SAL-ORD-1").model_copy(update={"shipments": {"S1": ShipmentRecord(
        shipment_id="S1", lines={"1": 1}, carrier="UPS", tracking_number="1Z",
        shipped_at=NOW.replace(hour=2), sales_invoice="ACC-SINV-1")}})
    unlinked = _state("SAL-ORD-2")
    figures = dashboard.order_figures([linked, unlinked, "not a state"])
    assert figures["orders"] == 2 and figures["traceable"] == 1 and figures["shipped"] == 1
    assert figures["traceable_shipped"] == 1
    assert 3600 < dashboard._cycle_quantile(0.5, figures["cycle_buckets"]) <= 4 * 3600  # its bucket


def test_email_is_indexed_only_as_a_salted_hash_with_the_order_name() -> None:
    state = _state("SAL-ORD-1")
    state = state.model_copy(update={"order": state.order.model_copy(update={
        "customer": Customer(email="Jane.Doe@Example.com")})})
    ids = external_ids(state, "salt")
    digest = hashlib.sha256(b"saltjane.doe@example.com").hexdigest()
    assert ids == ["SAL-ORD-1", "#1001", f"email:{digest}"]
    assert not any("@" in i for i in ids)
    assert order_search.index_id_for_query(" JANE.DOE@example.com ", "salt") == f"email:{digest}"
    assert order_search.index_id_for_query("#1001", "salt") == "#1001"
    assert external_ids(state, "other salt")[-1] != f"email:{digest}"
