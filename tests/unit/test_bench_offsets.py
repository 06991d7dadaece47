"""The bench's offset arithmetic (retail_sync/bench_offsets.py) and its summary (bench_summary.py):
records produced / consumed per topic, lag, record operations per order, medians over runs."""

from __future__ import annotations

import math
from typing import Any

import pytest

from retail_sync.bench_offsets import (
    deltas,
    is_changelog,
    lag,
    per_topic,
    run_figures,
    short_name,
)
from retail_sync.bench_summary import combine, headline, pipeline_tables

APP = "bench-pipe-1"
RAW, EVENTS = f"{APP}.orders-raw", f"{APP}.order-events"
STATE = f"{APP}-order-state-changelog"


def test_deltas_count_from_zero_for_new_partitions_and_no_commit() -> None:
    before = {(RAW, 0): 10, (RAW, 1): 5, (EVENTS, 0): -1}
    after = {(RAW, 0): 15, (RAW, 1): 5, (EVENTS, 0): 7, (STATE, 0): 3}
    assert deltas(before, after) == {(RAW, 0): 5, (RAW, 1): 0, (EVENTS, 0): 7, (STATE, 0): 3}


def test_lag_is_end_minus_committed_never_negative() -> None:
    ends = {(RAW, 0): 100, (RAW, 1): 50, (EVENTS, 0): 20}
    committed = {(RAW, 0): 100, (RAW, 1): 45, (EVENTS, 0): -1}
    assert lag(ends, committed) == {(RAW, 0): 0, (RAW, 1): 5, (EVENTS, 0): 20}
    # a committed offset past a (Tansu: too low) end answer is no lag, not a negative one
    assert lag({(RAW, 0): 98}, {(RAW, 0): 100}) == {(RAW, 0): 0}
    # only the partitions asked for; one the broker has no end for counts as empty
    assert lag(ends, committed, [(RAW, 1), (STATE, 0)]) == {(RAW, 1): 5, (STATE, 0): 0}


def test_per_topic_and_names() -> None:
    assert per_topic({(RAW, 0): 2, (RAW, 1): 3, (EVENTS, 0): 1}) == {RAW: 5, EVENTS: 1}
    assert short_name(RAW, APP) == "orders-raw"
    assert short_name(STATE, APP) == "order-state-changelog"
    assert short_name("other.topic", APP) == "other.topic"
    assert is_changelog(STATE) and not is_changelog(EVENTS)


def test_run_figures_record_operations_per_order() -> None:
    # 10 orders: orders-raw 10 produced / 10 consumed, order-events 40 / 40, changelog 30 / 0
    ends_before = {(RAW, 0): 100, (RAW, 1): 0, (EVENTS, 0): 7, (STATE, 0): 0}
    ends_after = {(RAW, 0): 104, (RAW, 1): 6, (EVENTS, 0): 47, (STATE, 0): 30}
    committed_before = {(RAW, 0): 100, (RAW, 1): -1, (EVENTS, 0): 7, (STATE, 0): -1}
    committed_after = {(RAW, 0): 104, (RAW, 1): 6, (EVENTS, 0): 47, (STATE, 0): -1}
    sizes = {(RAW, 0): 4000, (RAW, 1): 6000, (EVENTS, 0): 20_000, (STATE, 0): 90_000}
    fig = run_figures(10, APP, ends_before, ends_after, committed_before, committed_after, sizes)
    assert set(fig.topics) == {"orders-raw", "order-events", "order-state-changelog"}
    assert (fig.topics["orders-raw"].produced, fig.topics["orders-raw"].consumed) == (10, 10)
    assert fig.topics["order-state-changelog"].consumed == 0
    assert (fig.produced, fig.consumed, fig.produced_bytes) == (80, 50, 120_000)
    assert fig.ops_per_order == pytest.approx(13.0)
    assert fig.topics["order-events"].per_order(10) == {
        "produced": 4.0, "consumed": 4.0, "bytes_produced": 2000.0}


def _run(rate: float, confirmed: float) -> dict[str, Any]:
    n = 100
    return {"orders": n, "workers": 1, "in_erp": n, "orders_per_s": rate,
            "orders_per_s_confirmed": confirmed, "orders_per_s_last_record": rate * 1.05,
            "seconds_drained": n / rate, "seconds_confirmed": n / confirmed,
            "seconds_erp": n / confirmed, "seconds_last_record": n / rate / 1.05,
            "record_ops_per_order": 36.0, "record_ops_per_s": 36.0 * rate,
            "records_produced": 2400, "records_consumed": 1200, "bytes_produced": 2_000_000,
            "topics": {"orders-raw": {"produced": 1.0, "consumed": 1.0, "bytes_produced": 3750.0}},
            "seconds_newest_by_topic": {"orders-raw": rate / 100},
            "cpu_s_per_order": {"worker bench-1": 0.0063}, "cpu_s_total": {"worker bench-1": 0.63}}


def test_combine_takes_medians_and_headline_ratios() -> None:
    runs = [_run(150, 160), _run(130, 140), _run(170, 185)]
    pipe = combine(runs)
    assert pipe["orders_per_s"] == 150 and pipe["orders_per_s_confirmed"] == 160
    assert pipe["runs"] == 3 and pipe["runs_orders_per_s"] == [150, 130, 170]
    assert math.isclose(pipe["seconds_drained"], 100 / 150)
    ratios = headline(pipe, ceiling=50_000.0, faust_events_per_s=3000.0)
    assert ratios["ratio_pipeline_to_aiokafka"] == pytest.approx(0.003)
    assert ratios["ratio_pipeline_to_faust"] == pytest.approx(0.05)
    # 150 orders/s x 36 operations = 5,400 ops/s against 2 x 3,000 for the Faust anchor
    assert ratios["ratio_record_ops_to_faust"] == pytest.approx(0.9)
    assert headline(pipe, None, None) == {}
    text = pipeline_tables(pipe, ratios, 50_000.0, {"faust_anchor_events_per_s": 3000})
    assert "lag 0 everywhere" in text and "orders-raw" in text and "worker bench-1" in text
    row = next(line for line in text.splitlines() if line.strip().startswith("orders-raw"))
    assert row.split()[-1] == "1.50"  # when the median run's newest orders-raw record came


def test_machine_busy_seconds_count_running_time_only() -> None:
    from collections import namedtuple

    from retail_sync.bench_pipeline import busy_seconds

    Times = namedtuple("Times", "user nice system idle iowait irq softirq steal guest guest_nice")
    before = Times(10.0, 1.0, 2.0, 100.0, 5.0, 0.0, 0.5, 1.0, 3.0, 0.0)
    # 4 s user (of which 1 s a guest's), 1 s system, 0.5 s softirq; idle, I/O wait and
    # stolen time are not the machine's work
    after = Times(14.0, 1.0, 3.0, 150.0, 9.0, 0.0, 1.0, 4.0, 4.0, 0.0)
    assert busy_seconds(before, after) == 5.5
    assert busy_seconds(after, before) == 0.0  # never negative (a counter reset)


def test_latency_cpu_line_names_each_process_and_the_machine() -> None:
    from retail_sync.bench_latency import cpu_line

    line = cpu_line(1000, 10.0, 18.4, 2, {"worker": 2.6, "ingress": float("nan"), "bench": 1.3})
    assert line == ("latency: the machine was 1.84 of 2 cores busy; CPU ms per order: "
                    "worker 2.60, bench 1.30; everything on the machine 18.40")


def test_pipeline_cpu_table_says_how_busy_the_machine_was() -> None:
    from retail_sync.bench_summary import EVERYTHING

    run = _run(100, 110)  # drained after 1.0 s
    assert "cores busy" not in pipeline_tables(run, {}, None, None)  # a run without the row
    run["cpu_s_per_order"][EVERYTHING] = 0.0125
    run["cpu_s_total"][EVERYTHING] = 1.25
    text = pipeline_tables(run, {}, None, None)
    assert f"{EVERYTHING}: 1.25 of " in text and " cores busy on average" in text
    row = next(line for line in text.splitlines() if line.strip().startswith(EVERYTHING))
    assert row.split()[-2:] == ["12.500", "1.25"]
