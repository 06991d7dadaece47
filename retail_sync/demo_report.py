"""The demo's HTML report: one self-contained page per run, charts drawn by matplotlib (inline SVG).

``record`` is plain JSON the demo writes next to the page (``run.json``), so a page can be drawn
again from a recorded run (``render_html(json.load(...))``) without any live part:

    {"run": "demo-...", "duration_s": 25, "rate": 20, "drain_timeout_s": 60, "ok": true,
     "channels": {"shopify": {"created": 120, "in_erp": 110,
                              "cancelled": {"stock": 8, "buyer": 0, "other": 0},
                              "in_flight": 2, "lost": 0, "latencies_s": [0.41, ...]}},
     "histograms": [{"metric": "flow", "name": "shipped -> marketplace", "channel": "shopify",
                     "buckets": [[0.05, 0], [0.1, 3], ..., ["+Inf", 40]]}],   # cumulative
     "exceptions": [{"kind": "mapping", "channel": "shopify", "count": 2}],
     "listings": {"at_final_ats": 96, "total": 96}}

``metric`` is ``flow`` (after the order, by transaction type) or ``stock`` (propagation of an ERP
change or a reservation to a marketplace).
"""

from __future__ import annotations

import html
import io
import math
from collections.abc import Mapping, Sequence
from typing import Any

from cycler import cycler
from matplotlib import rc_context
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from matplotlib.typing import RcKeyType

from retail_sync.report import Samples, duration, percentile

PALETTE = ("#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#edc948", "#b07aa1")


def histogram_buckets(samples: Samples, name: str, **labels: str) -> list[list[Any]]:
    """Cumulative ``[le, count]`` of histogram ``name`` for ``labels`` (summed over the others);
    ``le`` is a number or ``"+Inf"``."""
    buckets: dict[float, float] = {}
    for n, lab, value in samples.samples:
        if n == f"{name}_bucket" and all(lab.get(k) == v for k, v in labels.items()):
            le = float(lab["le"])
            buckets[le] = buckets.get(le, 0.0) + value
    return [["+Inf" if math.isinf(le) else le, int(buckets[le])] for le in sorted(buckets)]


# --- charts ------------------------------------------------------------------------------------


def _svg(fig: Figure) -> str:
    out = io.StringIO()
    fig.savefig(out, format="svg", bbox_inches="tight")
    text = out.getvalue()
    return text[text.index("<svg"):]  # drop the XML prolog and doctype: inline in the page


def _color(channel: str, channels: Sequence[str]) -> str:
    """The same colour for a channel on every chart of a page (its place in ``channels``)."""
    return PALETTE[list(channels).index(channel) % len(PALETTE)] if channel in channels \
        else "#999999"


def _figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), dpi=96)
    return fig


STYLE: dict[RcKeyType, Any] = {"svg.fonttype": "none", "font.size": 10, "axes.spines.top": False,
         "axes.spines.right": False, "axes.grid": True, "grid.alpha": 0.3,
         "axes.prop_cycle": cycler(color=list(PALETTE))}


def latency_chart(channels: Mapping[str, Mapping[str, Any]]) -> str:
    """Order -> ERP latency as measured by the demo: one histogram per channel, shared bins."""
    series = {name: c.get("latencies_s") or [] for name, c in channels.items()}
    series = {k: v for k, v in series.items() if v}
    if not series:
        return "<p class='none'>no order reached the ERP</p>"
    top = max(max(v) for v in series.values())
    with rc_context(STYLE):  # small multiples: one row per channel, the same bins and x axis
        fig = _figure(8.0, 0.3 + 1.1 * len(series))
        axes = fig.subplots(len(series), 1, sharex=True, squeeze=False)[:, 0]
        bins = [top * i / 40 for i in range(41)] if top > 0 else 10
        for i, (ax, (name, values)) in enumerate(zip(axes, series.items(), strict=True)):
            ax.hist(values, bins=bins, color=PALETTE[i % 7], alpha=0.85)
            ax.yaxis.set_major_locator(MaxNLocator(integer=True, nbins=3))
            p50, p99 = percentile(values, 50), percentile(values, 99)
            for q, style in ((p50, "--"), (p99, ":")):
                ax.axvline(q, color="#333", linestyle=style, linewidth=1)
            ax.set_ylabel(name, rotation=0, ha="right", va="center")
            ax.text(1.01, 0.5, f"p50 {duration(p50)}\np99 {duration(p99)}\nn={len(values)}",
                    transform=ax.transAxes, fontsize=8, va="center")
        axes[-1].set_xlabel("seconds from marketplace creation to ERP sales order "
                            "(dashed: p50, dotted: p99)")
        return _svg(fig)


def _bucket_label(le: Any, previous: Any) -> str:
    if le == "+Inf":
        return f"> {duration(float(previous))}" if previous is not None else "all"
    return f"≤ {duration(float(le))}"


def bucket_chart(series: Sequence[Mapping[str, Any]], title: str,
                 channels: Sequence[str] = ()) -> str:
    """Grouped bars: observations per histogram bucket, one colour per channel; buckets above the
    last one used are left out."""
    series = [s for s in series if s["buckets"] and s["buckets"][-1][1]]
    if not series:
        return f"<p class='none'>{html.escape(title)}: no observations during the run</p>"
    edges = [le for le, _ in series[0]["buckets"]]
    counts = []
    for s in series:
        cumulative = [n for _, n in s["buckets"]]
        counts.append([n - (cumulative[i - 1] if i else 0) for i, n in enumerate(cumulative)])
    used = [i for i in range(len(edges)) if any(c[i] for c in counts)]
    first, last = used[0], used[-1]
    labels = [_bucket_label(edges[i], edges[i - 1] if i else None)
              for i in range(first, last + 1)]
    width = 0.8 / len(series)
    with rc_context(STYLE):
        fig = _figure(max(2.6, 0.9 * len(labels) + 1.2), 2.4)
        ax = fig.subplots()
        for j, s in enumerate(series):
            xs = [i + (j - (len(series) - 1) / 2) * width for i in range(len(labels))]
            ax.bar(xs, counts[j][first:last + 1], width=width,
                   color=_color(s["channel"], channels or [x["channel"] for x in series]),
                   label=f"{s['channel']} (n={s['buckets'][-1][1]})")
        ax.set_xticks(range(len(labels)), labels, rotation=30, ha="right")
        ax.set_title(title, loc="left", fontsize=10)
        ax.set_ylabel("observations")
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        ax.legend(frameon=False, fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
        return _svg(fig)


def exceptions_chart(exceptions: Sequence[Mapping[str, Any]], order: Sequence[str] = ()) -> str:
    """Horizontal bars per exception kind, stacked by channel."""
    if not exceptions:
        return "<p class='none'>no sync-exception records during the run</p>"
    kinds = sorted({e["kind"] for e in exceptions})
    channels = sorted({e["channel"] or "-" for e in exceptions})
    count = {(e["kind"], e["channel"] or "-"): e["count"] for e in exceptions}
    with rc_context(STYLE):
        fig = _figure(6.5, 0.45 * len(kinds) + 0.9)
        ax = fig.subplots()
        left = [0] * len(kinds)
        for channel in channels:
            values = [count.get((k, channel), 0) for k in kinds]
            ax.barh(kinds, values, left=left, color=_color(channel, order or channels),
                    label=channel)
            left = [a + b for a, b in zip(left, values, strict=True)]
        ax.set_xlabel("records")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.invert_yaxis()
        ax.legend(frameon=False, fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
        return _svg(fig)


# --- page --------------------------------------------------------------------------------------


CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 24px auto;
       max-width: 1100px; color: #222; padding: 0 16px; }
h1 { font-size: 22px; margin-bottom: 4px; } h2 { font-size: 17px; margin-top: 28px;
     border-bottom: 1px solid #ddd; padding-bottom: 4px; }
.meta { color: #666; font-size: 13px; } .ok { color: #2e7d32; font-weight: 600; }
.failed { color: #c62828; font-weight: 600; } .none { color: #888; font-style: italic; }
table { border-collapse: collapse; font-size: 13px; margin: 8px 0; }
th, td { padding: 4px 10px; border-bottom: 1px solid #eee; text-align: right; }
th:first-child, td:first-child { text-align: left; } th { background: #f6f6f6; }
.charts { display: flex; flex-wrap: wrap; gap: 12px 24px; align-items: flex-start; }
.note { color: #666; font-size: 12px; max-width: 900px; }
svg { max-width: 100%; height: auto; }
"""


def _table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in row) + "</tr>"
                   for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def render_html(record: Mapping[str, Any]) -> str:
    """The report page of one run, from its ``record`` (see the module's docstring)."""
    channels = record.get("channels", {})
    hists = record.get("histograms", [])
    rows = []
    for name, c in channels.items():
        values = c.get("latencies_s") or []
        cancelled = c.get("cancelled", {})
        rows.append([name, c.get("created", 0), c.get("in_erp", 0), cancelled.get("stock", 0),
                     cancelled.get("buyer", 0), cancelled.get("other", 0), c.get("in_flight", 0),
                     c.get("lost", 0), duration(percentile(values, 50)),
                     duration(percentile(values, 99))])
    status = ("<span class='ok'>passed</span>" if record.get("ok")
              else "<span class='failed'>FAILED</span>")
    parts = [
        f"<h1>retail-sync demo {html.escape(str(record.get('run', '')))}</h1>",
        f"<p class='meta'>{record.get('rate', '?')} orders/s for {record.get('duration_s', '?')} s, "
        f"drain timeout {record.get('drain_timeout_s', '?')} s; run {status}</p>",
        "<h2>Orders per channel</h2>",
        _table(["channel", "created", "in ERP", "cancelled: stock", "buyer", "other", "in flight",
                "lost", "p50 [m]", "p99 [m]"], rows),
        "<p class='note'>cancelled = cancelled on the marketplace before reaching the ERP, by "
        "cause; in flight = known to the worker but not yet in the ERP at the drain timeout; "
        "lost = unknown to the worker (never arrived or dropped).</p>",
        "<h2>Order → ERP latency per channel [m]</h2>", latency_chart(channels),
        "<h2>After the order: latency per flow [h]</h2><div class='charts'>",
    ]
    flows = [h for h in hists if h["metric"] == "flow" and h["name"] != "order -> ERP"]
    for flow in dict.fromkeys(h["name"] for h in flows):  # order -> ERP: the measured one above
        parts.append(bucket_chart([h for h in flows if h["name"] == flow], flow, list(channels)))
    parts += ["</div>", "<h2>Stock propagation to the marketplaces [h]</h2><div class='charts'>"]
    for cause in dict.fromkeys(h["name"] for h in hists if h["metric"] == "stock"):
        parts.append(bucket_chart([h for h in hists if h["metric"] == "stock"
                                   and h["name"] == cause], cause, list(channels)))
    listings = record.get("listings", {})
    parts += ["</div>", f"<p class='meta'>listings at the final available-to-sell: "
                        f"{listings.get('at_final_ats', '?')} of {listings.get('total', '?')} "
                        "(SKU × channel)</p>",
              "<h2>Exceptions by kind</h2>", exceptions_chart(record.get("exceptions", []), list(channels)),
              "<p class='note'>[m] measured by the demo from the marketplace's creation time and "
              "the ERP's receipt time (exact percentiles). [h] the worker's Prometheus histograms "
              "over the run: bars are observations per bucket, labelled by the bucket's upper "
              "bound.</p>"]
    return ("<!doctype html><html lang='en'><head><meta charset='utf-8'>"
            f"<title>retail-sync demo {html.escape(str(record.get('run', '')))}</title>"
            f"<style>{CSS}</style></head><body>{''.join(parts)}</body></html>")
