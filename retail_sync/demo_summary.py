"""What became of the demo's orders, and the summary's tables, from plain data (no live parts).

Every order a marketplace accepted (``channel:id``) ends the run in one of these places:

* **in the ERP** - its sales order exists (it may have been cancelled or shipped since);
* **cancelled before the ERP**, by cause: ``stock`` (the stock policy cancelled it: NoInventory,
  SELLER_CANCEL_OUT_OF_STOCK, Shopify's ``inventory``), ``buyer`` (the buyer asked: Amazon's
  BuyerCanceled) or ``other``; the cause comes from the marketplace's own cancellation records;
* **in flight at the drain timeout** - the worker knows the order (it has its state: waiting for
  stock, on its way to the ERP, retrying, held by an exception) but it is not in the ERP yet;
* **lost** - the marketplace accepted it and the worker does not know it at all: it never arrived
  or was dropped. Only these are lost.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from retail_sync.report import duration, grid, percentile

CAUSES = ("stock", "buyer", "other")
BUYER_REASONS = ("buyercanceled", "buyer", "customer")
STOCK_REASONS = ("noinventory", "out_of_stock", "inventory", "stock")

MEASURED = ("[m] measured by the demo: marketplace creation -> ERP sales order received, exact "
            "nearest-rank percentiles over every order")
HISTOGRAM = ("[h] the worker's Prometheus histogram over the run (histogram_quantile: "
             "interpolated inside a bucket, so a figure is at most the bucket's upper bound)")


def cancel_cause(reason: str | None) -> str:
    """``stock``, ``buyer`` or ``other`` for a marketplace cancellation record's reason."""
    text = (reason or "").lower()
    if any(word in text for word in BUYER_REASONS):
        return "buyer"
    if any(word in text for word in STOCK_REASONS):
        return "stock"
    return "other"


def order_causes(cancellations: Mapping[str, Iterable[Mapping[str, Any]]],
                 buyer_asked: Iterable[str] = ()) -> dict[str, str]:
    """Order key -> cause, from each channel's cancellation records (``{order_id, reason}``);
    ``buyer_asked`` (order keys whose buyer asked to cancel) wins over the recorded reason, as a
    marketplace may record a buyer's cancellation under a seller reason."""
    asked = set(buyer_asked)
    causes: dict[str, str] = {}
    for channel, records in cancellations.items():
        for record in records:
            key = f"{channel}:{record['order_id']}"
            cause = "buyer" if key in asked else cancel_cause(record.get("reason"))
            if causes.get(key) in (None, "other") or cause == "buyer":
                causes[key] = cause
    return causes


@dataclass
class Outcome:
    """Where one channel's (or every channel's) orders ended."""

    created: int = 0
    in_erp: int = 0
    cancelled: Counter[str] = field(default_factory=Counter)  # cause -> orders, not in the ERP
    in_flight: dict[str, str] = field(default_factory=dict)  # order key -> worker's status
    lost: list[str] = field(default_factory=list)

    def add(self, other: Outcome) -> None:
        self.created += other.created
        self.in_erp += other.in_erp
        self.cancelled.update(other.cancelled)
        self.in_flight.update(other.in_flight)
        self.lost += other.lost


def classify(expected: set[str], in_erp: set[str], causes: Mapping[str, str],
             worker_status: Mapping[str, str | None]) -> Outcome:
    """``worker_status``: for orders neither in the ERP nor cancelled, the worker's status of it
    (None: the worker does not know it)."""
    out = Outcome(created=len(expected), in_erp=len(expected & in_erp))
    for key in sorted(expected - in_erp):
        if key in causes:
            out.cancelled[causes[key]] += 1
        elif worker_status.get(key) is not None:
            out.in_flight[key] = str(worker_status[key])
        else:
            out.lost.append(key)
    return out


def channel_grid(outcomes: Mapping[str, Outcome], latencies: Mapping[str, list[float]]) -> str:
    """Per channel: where the orders ended and the order -> ERP latency (measured)."""
    rows = []
    total, every = Outcome(), []
    for name, o in outcomes.items():
        total.add(o)
        every += latencies.get(name, [])
        rows.append(_channel_row(name, o, latencies.get(name, [])))
    if len(outcomes) > 1:
        rows.append(_channel_row("all", total, every))
    headers = ["channel", "created", "in ERP", "cancelled: stock", "buyer", "other",
               "in flight", "lost", "p50 [m]", "p90 [m]", "p99 [m]", "max [m]"]
    return grid(headers, rows, "orders per channel (created -> ERP sales order)",
                [MEASURED, "cancelled = cancelled on the marketplace before reaching the ERP; "
                 "in flight = known to the worker, not yet in the ERP at the drain timeout; "
                 "lost = unknown to the worker (never arrived or dropped)"])


def _channel_row(name: str, o: Outcome, values: list[float]) -> list[object]:
    return [name, o.created, o.in_erp, o.cancelled["stock"], o.cancelled["buyer"],
            o.cancelled["other"], len(o.in_flight), len(o.lost),
            duration(percentile(values, 50)), duration(percentile(values, 90)),
            duration(percentile(values, 99)), duration(max(values, default=math.nan))]


def exceptions_grid(records: Iterable[Mapping[str, Any]]) -> str:
    """sync-exception records as kind x channel counts."""
    counts = Counter((r.get("kind", "?"), r.get("channel") or "-") for r in records)
    if not counts:
        return grid(["kind", "all"], [["none", 0]], "sync-exception records (kind x channel)")
    channels = sorted({c for _, c in counts})
    kinds = sorted({k for k, _ in counts})
    rows = [[kind, *(counts[kind, c] or "" for c in channels),
             sum(counts[kind, c] for c in channels)] for kind in kinds]
    rows.append(["all", *(sum(counts[k, c] for k in kinds) for c in channels), sum(counts.values())])
    return grid(["kind", *channels, "all"], rows, "sync-exception records (kind x channel)")


def in_flight_text(in_flight: Mapping[str, str]) -> str:
    """``12 (erp_pending 10, stock_pending 2)``."""
    if not in_flight:
        return "0"
    by_status = Counter(in_flight.values()).most_common()
    return f"{len(in_flight)} ({', '.join(f'{s} {n}' for s, n in by_status)})"


def closing_line(posted: int, total: Outcome, drain_timeout: float, ok: bool) -> str:
    c = total.cancelled
    line = (f"{posted} orders posted to the ERP; cancelled before the ERP: {c['stock']} for lack "
            f"of stock, {c['buyer']} at the buyer's request, {c['other']} other; "
            f"{len(total.in_flight)} still in flight at the drain timeout "
            f"({drain_timeout:g} s); {len(total.lost)} lost. ")
    if ok:
        return line + "No order lost, nothing oversold, every marketplace in step."
    return line + "FAILED: see above."
