"""The bench's figures as tables for people and one flat-ish dict for the JSON file.

``combine`` folds ``--repeat`` pipeline runs into medians (each run is kept in the JSON);
``headline`` derives the ratios to the anchors; ``pipeline_tables`` draws the tables.
"""

from __future__ import annotations

import os
import statistics
from collections.abc import Mapping, Sequence
from typing import Any

from retail_sync.bench_anchors import FAUST_ANCHOR_OPS_PER_EVENT
from retail_sync.report import grid

#: the CPU table's row for the whole machine's busy time during a run (Redis and the kernel too)
EVERYTHING = "everything on the machine"

#: the pipeline figures folded into medians over repeated runs
MEDIAN_KEYS = ("orders_per_s", "orders_per_s_confirmed", "orders_per_s_last_record",
               "seconds_drained", "seconds_confirmed", "seconds_erp", "seconds_last_record",
               "record_ops_per_s")


def combine(runs: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The median run: medians of the rates and times; records, bytes and CPU figures of the run
    whose sustained rate is the median (the lower middle one for an even count: one consistent
    set); every run's rates listed."""
    ordered = sorted(runs, key=lambda r: r["orders_per_s"])
    middle = dict(ordered[(len(ordered) - 1) // 2])
    for key in MEDIAN_KEYS:
        values = [r[key] for r in runs if r.get(key) is not None]
        middle[key] = statistics.median(values) if values else None
    middle["runs"] = len(runs)
    middle["runs_orders_per_s"] = [round(r["orders_per_s"], 1) for r in runs]
    middle["runs_orders_per_s_confirmed"] = [round(r["orders_per_s_confirmed"], 1) for r in runs]
    return middle


def headline(pipe: Mapping[str, Any], ceiling: float | None,
             faust_events_per_s: float | None) -> dict[str, float]:
    """Pipeline/anchor ratios: orders/s per aiokafka record/s, orders/s per Faust event/s, and
    the pipeline's record operations/s per Faust's (2 per anchor event)."""
    out: dict[str, float] = {}
    if ceiling:
        out["ratio_pipeline_to_aiokafka"] = round(pipe["orders_per_s"] / ceiling, 4)
    if faust_events_per_s:
        out["ratio_pipeline_to_faust"] = round(pipe["orders_per_s"] / faust_events_per_s, 4)
        out["ratio_record_ops_to_faust"] = round(
            pipe["record_ops_per_s"] / (FAUST_ANCHOR_OPS_PER_EVENT * faust_events_per_s), 3)
    return out


def flat(pipe: Mapping[str, Any]) -> dict[str, Any]:
    """The pipeline's figures under ``pipeline_*`` keys (the bench's JSON and two-column table)."""
    out: dict[str, Any] = {}
    for key, value in pipe.items():
        out[f"pipeline_{key}"] = round(value, 4) if isinstance(value, float) else value
    return out


def _n(value: float | None, digits: int = 0) -> str:
    if value is None or value != value:
        return "n/a"
    return f"{value:,.{digits}f}"


def _machine_note(pipe: Mapping[str, Any]) -> list[str]:
    """How busy the whole machine was during the run (pipeline runs since session 30)."""
    everything = pipe["cpu_s_total"].get(EVERYTHING)
    if everything is None or not pipe.get("seconds_drained"):
        return []
    return [f"{EVERYTHING}: {everything / pipe['seconds_drained']:.2f} of "
            f"{os.cpu_count() or '?'} cores busy on average (Redis and the kernel's network "
            "work included)"]


def pipeline_tables(pipe: Mapping[str, Any], ratios: Mapping[str, float],
                    ceiling: float | None, faust: Mapping[str, Any] | None) -> str:
    n = pipe["orders"]
    runs = f" (median of {pipe['runs']} runs)" if pipe.get("runs", 1) > 1 else ""
    workers = f"{pipe['workers']} worker{'s' if pipe['workers'] > 1 else ''}"
    clock = grid(["clock stops when", "seconds", "orders/s"], [
        ["N ERP confirmations (old bench)", _n(pipe["seconds_confirmed"], 2),
         _n(pipe["orders_per_s_confirmed"], 1)],
        ["the ERP simulator holds all N", _n(pipe["seconds_erp"], 2), _n(n / pipe["seconds_erp"], 1)
         if pipe.get("seconds_erp") else "n/a"],
        ["lag 0 everywhere + ERP has N (sustained)", _n(pipe["seconds_drained"], 2),
         _n(pipe["orders_per_s"], 1)],
        ["newest record of the run (lower bound)", _n(pipe["seconds_last_record"], 2),
         _n(pipe["orders_per_s_last_record"], 1)],
    ], f"pipeline: {n} orders, {workers}{runs}", footnotes=[
        f"lag: the group's committed vs end offsets from the broker, on the "
        f"{pipe.get('consumed_partitions', '?')} partitions the workers consume (poll-ticks "
        "left out); the workers commit every RETAIL_SYNC_BROKER_COMMIT_INTERVAL_S (1 s by "
        "default), so 'lag 0' can trail the work by up to that"])
    topics = sorted(pipe["topics"].items(), key=lambda kv: -(kv[1]["produced"] + kv[1]["consumed"]))
    newest = pipe.get("seconds_newest_by_topic") or {}
    per_topic = grid(["topic", "produced/order", "consumed/order", "bytes/order", "newest s"], [
        [name, _n(t["produced"], 2), _n(t["consumed"], 2), _n(t["bytes_produced"]),
         _n(newest.get(name), 2)]
        for name, t in topics] + [[
        "total", _n(pipe["records_produced"] / n, 2), _n(pipe["records_consumed"] / n, 2),
        _n(pipe["bytes_produced"] / n), ""]],
        "record operations per order, from the broker's offsets", footnotes=[
        f"record operations per order: {pipe['record_ops_per_order']:.1f} "
        f"({pipe['record_ops_per_s']:,.0f}/s); bytes = key + value of the produced records; "
        "newest s: when the topic's newest record of the run was written (s after the start; "
        "the tail after the ERP's last confirmation shows which work came last)"])
    cpu = grid(["process", "CPU ms/order", "CPU s"], [
        [name, _n(per * 1000, 3), _n(pipe["cpu_s_total"][name], 2)]
        for name, per in sorted(pipe["cpu_s_per_order"].items(), key=lambda kv: -kv[1])],
        "CPU per order (start of load -> drained; load generator: its sends)",
        footnotes=_machine_note(pipe))
    rows = []
    if ceiling:
        rows.append(["aiokafka consume (records/s)", _n(ceiling),
                     _n(ratios.get("ratio_pipeline_to_aiokafka"), 4)])
    if faust:
        rows.append(["Faust table update (events/s)", _n(faust["faust_anchor_events_per_s"]),
                     _n(ratios.get("ratio_pipeline_to_faust"), 4)])
        rows.append(["  record ops/s (2 per event) vs pipeline's",
                     _n(FAUST_ANCHOR_OPS_PER_EVENT * faust["faust_anchor_events_per_s"]),
                     _n(ratios.get("ratio_record_ops_to_faust"), 3)])
    anchors = grid(["anchor (same broker, same session)", "rate", "pipeline/anchor"], rows,
                   "headline: pipeline orders/s over each anchor") if rows else ""
    return "\n\n".join(part for part in (clock, per_topic, cpu, anchors) if part)
