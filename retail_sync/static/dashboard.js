// retail-sync dashboards (issue 14): the token comes once as #token=... (never sent to the
// server), is kept in sessionStorage (this tab only) and sent as Authorization: Bearer.
"use strict";
(function () {
  const KEY = "retail-sync-admin-token";
  const m = /(?:^#|&)token=([^&]+)/.exec(location.hash);
  if (m) {
    sessionStorage.setItem(KEY, decodeURIComponent(m[1]));
    history.replaceState(null, "", location.pathname + location.search);  // out of the address bar
  }
  const token = () => sessionStorage.getItem(KEY);
  const page = document.body.dataset.page;
  const status = document.getElementById("status");
  const charts = {};
  const REFRESH_MS = 5000;

  function setStatus(text, error) { status.textContent = text; status.className = "status" + (error ? " error" : ""); }
  async function api(path, init) {
    const t = token();
    if (!t) throw new Error("no token: open this page as " + location.pathname + "#token=<viewer token>");
    const resp = await fetch(path, Object.assign({ headers: { Authorization: "Bearer " + t }, cache: "no-store" }, init || {}));
    const body = await resp.json().catch(() => ({}));
    if (!resp.ok) throw new Error(path + ": HTTP " + resp.status + " " + (body.error || ""));
    return body;
  }
  const pct = (x) => (x === null || x === undefined) ? "n/a" : (100 * x).toFixed(1) + " %";
  const secs = (x) => (x === null || x === undefined) ? "n/a" : (x < 120 ? x.toFixed(2) + " s" : x < 7200 ? (x / 60).toFixed(1) + " min" : (x / 3600).toFixed(1) + " h");
  function fig(name, value) { document.querySelectorAll('[data-figure="' + name + '"]').forEach((el) => { el.textContent = String(value); }); }
  function el(tag, attrs, text) { const e = document.createElement(tag); Object.assign(e, attrs || {}); if (text !== undefined) e.textContent = text; return e; }
  const COLORS = ["#1e88e5", "#e53935", "#43a047", "#fb8c00", "#8e24aa", "#00acc1", "#6d4c41", "#546e7a", "#c0ca33", "#d81b60"];
  function chart(id, type, labels, datasets, options) {
    const canvas = document.getElementById(id);
    if (!canvas || typeof Chart === "undefined") return;
    datasets.forEach((d, i) => { d.backgroundColor = d.backgroundColor || COLORS[i % COLORS.length]; d.borderColor = d.borderColor || COLORS[i % COLORS.length]; });
    if (charts[id]) { charts[id].data.labels = labels; charts[id].data.datasets = datasets; charts[id].update("none"); return; }
    charts[id] = new Chart(canvas, { type: type, data: { labels: labels, datasets: datasets },
      options: Object.assign({ animation: false, responsive: true, maintainAspectRatio: true }, options || {}) });
  }
  const timeLabel = (t) => new Date(t * 1000).toLocaleTimeString();

  function latencyChart(d, onlyFlow, stat) {
    const series = d.latency.series; const keys = Object.keys(series).filter((k) => !onlyFlow || k.startsWith(onlyFlow + "|")).sort();
    const ticks = [...new Set(keys.flatMap((k) => series[k].map((p) => p.t)))].sort();
    const ds = [];
    keys.forEach((k) => (stat ? [stat] : ["p50", "p99"]).forEach((s) => {
      const byT = Object.fromEntries(series[k].map((p) => [p.t, p[s]]));
      ds.push({ label: k.replace("|", " · ") + " " + s, data: ticks.map((t) => byT[t] ?? null), spanGaps: true, pointRadius: 0 });
    }));
    chart("chart-latency", "line", ticks.map(timeLabel), ds, { scales: { y: { title: { display: true, text: "seconds" } } } });
  }

  function renderOps(d) {
    const b = d.backlog;
    fig("consumer_lag_total", b.consumer_lag_total);
    fig("orders_waiting", Object.values(b.orders_waiting_by_status).reduce((a, x) => a + x, 0));
    const topics = Object.keys(b.consumer_lag_by_topic);
    chart("chart-lag", "bar", topics.map((t) => t.split(".").slice(1).join(".") || t), [{ label: "consumer lag (messages)", data: topics.map((t) => b.consumer_lag_by_topic[t]) }], { indexAxis: "y" });
    const st = Object.keys(b.orders_waiting_by_status);
    chart("chart-waiting", "bar", st, [{ label: "orders waiting per stage", data: st.map((s) => b.orders_waiting_by_status[s]) }]);
    const now = d.latency.now; const tbl = document.getElementById("latency-now"); tbl.replaceChildren();
    tbl.append(el("tr", {}, "")); tbl.rows[0].append(el("th", {}, "flow · channel"), el("th", {}, "p50"), el("th", {}, "p99"), el("th", {}, "n (last min)"));
    Object.keys(now).sort().forEach((k) => { const r = el("tr"); r.dataset.series = k; r.append(el("td", {}, k.replace("|", " · ")), el("td", {}, secs(now[k].p50)), el("td", {}, secs(now[k].p99)), el("td", {}, String(now[k].count))); tbl.append(r); });
    latencyChart(d);
    renderExceptions(d, true);
    fig("ingested_total", Object.values(d.throughput.ingested_total_by_channel).reduce((a, x) => a + x, 0));
    const tp = d.throughput.per_min_series; const chs = Object.keys(tp).sort();
    const ticks = [...new Set(chs.flatMap((c) => tp[c].map((p) => p.t)))].sort();
    chart("chart-throughput", "line", ticks.map(timeLabel), chs.map((c) => { const byT = Object.fromEntries(tp[c].map((p) => [p.t, p.per_min])); return { label: c, data: ticks.map((t) => byT[t] ?? null), pointRadius: 0 }; }));
    const rc = d.reconciliation;
    if (!rc) fig("reconciliation", "no reconciliation job has finished yet (POST /reconciliation/jobs)");
    else if (rc.error) fig("reconciliation", "unavailable: " + rc.error);
    else {
      fig("reconciliation", "last job " + rc.job_id + " (" + rc.status + ", " + rc.finished_at + "): " + rc.mismatches + " mismatch(es)" + (rc.running.length ? "; running: " + rc.running.join(", ") : ""));
      const causes = Object.keys(rc.mismatches_by_cause);
      chart("chart-recon", "bar", causes, [{ label: "mismatches by cause", data: causes.map((c) => rc.mismatches_by_cause[c]) }]);
    }
    const ia = d.inventory_accuracy; fig("inventory_accuracy", pct(ia.share)); fig("inventory_accurate", ia.accurate); fig("inventory_listed", ia.listed);
    renderFailed(d);
    const ul = document.getElementById("workers"); ul.replaceChildren(...d.workers.map((w) => el("li", {}, w.url + (w.ok ? " ✓" : " ✗ " + w.error))));
  }

  function renderFailed(d) { const f = d.failed_transactions; fig("failed_rate", pct(f.rate)); fig("failed", f.failed); fig("ok", f.ok); }

  function renderExceptions(d, ops) {
    const e = d.exceptions; fig("exceptions_total", e.summary.total);
    const kinds = Object.keys(e.by_kind_channel).sort();
    const channels = [...new Set(kinds.flatMap((k) => Object.keys(e.by_kind_channel[k])))].sort();
    if (!ops) { chart("chart-exc-channel", "bar", channels, [{ label: "exceptions", data: channels.map((c) => kinds.reduce((a, k) => a + (e.by_kind_channel[k][c] || 0), 0)) }]); return; }
    chart("chart-exc-kind", "bar", kinds, channels.map((c) => ({ label: c, data: kinds.map((k) => e.by_kind_channel[k][c] || 0) })), { scales: { x: { stacked: true }, y: { stacked: true } } });
    chart("chart-exc-aging", "bar", kinds, e.age_buckets.map((a) => ({ label: a, data: kinds.map((k) => (e.aging_by_kind[k] || {})[a] || 0) })), { scales: { x: { stacked: true }, y: { stacked: true } } });
    const tbl = document.getElementById("exceptions-recent"); tbl.replaceChildren();
    const head = el("tr"); ["age", "kind", "channel", "order", "reason", ""].forEach((h) => head.append(el("th", {}, h))); tbl.append(head);
    e.recent.forEach((x) => {
      const r = el("tr"); r.dataset.exceptionId = x.exception_id;
      const open = el("a", { href: "#panel-exceptions" }, "record");
      open.onclick = async (ev) => { ev.preventDefault(); const body = await api("/exceptions?kind=" + encodeURIComponent(x.kind) + "&limit=10000"); const rec = body.exceptions.find((y) => y.exception_id === x.exception_id); document.getElementById("exception-detail").textContent = JSON.stringify(rec || x, null, 2); };
      const replay = el("button", {}, "replay");
      replay.onclick = async () => { if (!confirm("Replay exception " + x.exception_id + "? (needs the operator scope)")) return;
        try { const res = await api("/exceptions/replay", { method: "POST", headers: { Authorization: "Bearer " + token(), "Content-Type": "application/json" }, body: JSON.stringify({ ids: [x.exception_id] }) }); document.getElementById("exception-detail").textContent = JSON.stringify(res, null, 2); }
        catch (err) { document.getElementById("exception-detail").textContent = String(err); } };
      const order = x.order_key ? el("a", { href: "/dashboard/search?q=" + encodeURIComponent(x.order_key) }, x.order_key) : el("span", {}, "-");
      const cells = [secs(x.age_s), x.kind, x.channel || "-"].map((t) => el("td", {}, t));
      const oc = el("td"); oc.append(order); const rc = el("td", {}, (x.reason || "").slice(0, 120)); const ac = el("td"); ac.append(open, " ", replay);
      r.append(...cells, oc, rc, ac); tbl.append(r);
    });
  }

  function renderFinance(d) {
    const t = d.traceability; fig("traceability_share", pct(t.share)); fig("traceable", t.traceable); fig("trace_orders", t.orders - (d.cancellation.by_cause ? Object.values(d.cancellation.by_cause).reduce((a, x) => a + x, 0) : 0)); fig("traceability_shipped", pct(t.share_of_shipped));
    chart("chart-trace", "doughnut", ["fully linked", "not yet"], [{ label: "orders", data: [t.traceable, Math.max(0, t.orders - t.traceable - Object.values(d.cancellation.by_cause).reduce((a, x) => a + x, 0))], backgroundColor: ["#43a047", "#cfd8dc"] }], { maintainAspectRatio: false });
    const c = d.cancellation; fig("cancellation_rate", pct(c.rate)); fig("orders_total", c.orders);
    const causes = Object.keys(c.by_cause); chart("chart-cancel", "bar", causes, [{ label: "cancelled orders", data: causes.map((k) => c.by_cause[k]) }]);
    const o = d.order_to_ship; fig("cycle_p50", secs(o.p50)); fig("cycle_p90", secs(o.p90)); fig("shipped", o.shipped);
    chart("chart-cycle", "bar", o.buckets_le_s.map((b) => "≤ " + (b === "+Inf" ? "∞" : secs(b))), [{ label: "orders shipped", data: o.bucket_counts }]);
    const ing = d.throughput.ingested_total_by_channel; const chs = Object.keys(ing).sort();
    fig("ingested_total", chs.reduce((a, k) => a + ing[k], 0));
    chart("chart-channels", "bar", chs, [{ label: "orders ingested", data: chs.map((k) => ing[k]) }]);
    latencyChart(d, "order_to_erp", "p99");
    renderExceptions(d, false); renderFailed(d);
  }

  async function refresh() {
    try {
      const d = await api("/dashboard/data");
      window.dashboardData = d;  // what the panels show (read by the browser test)
      if (page === "ops") renderOps(d); else renderFinance(d);
      document.body.dataset.refreshedAt = d.generated_at;
      setStatus("updated " + new Date().toLocaleTimeString() + " · " + d.workers.length + " worker(s) · refreshes every " + REFRESH_MS / 1000 + " s", false);
    } catch (err) { setStatus(String(err.message || err), true); }
  }

  const fmt = (iso) => iso ? new Date(iso).toLocaleString() : "-";
  function renderJourney(body) {
    const out = document.getElementById("results"); out.replaceChildren();
    body.orders.forEach((o) => {
      const box = el("div", { className: "order" }); box.dataset.orderKey = o.order_key;
      box.append(el("h3", {}, o.order_key + " — " + o.status + (o.customer ? " — " + [o.customer.name, o.customer.email].filter(Boolean).join(", ") : "")));
      const sys = el("div", { className: "systems" }); const s = o.systems;
      sys.append(el("div", {}, "Marketplace (" + s.marketplace.system + "): " + s.marketplace.id + (s.marketplace.name ? " " + s.marketplace.name : "") + " · " + s.marketplace.status + " · shipments confirmed " + s.marketplace.shipments_confirmed),
        el("div", {}, "ERP: " + (s.erp.sales_order || "not yet") + " · " + s.erp.status + (s.erp.delivery_notes.length ? " · DN " + s.erp.delivery_notes.join(", ") : "")),
        el("div", {}, "Warehouse: " + (s.warehouse.fulfilment || "not yet") + s.warehouse.shipments.map((x) => " · " + x.id + " " + x.carrier + " " + x.tracking_number).join("")),
        el("div", {}, "Finance: " + (s.finance.invoices.join(", ") || "no invoice") + (s.finance.credit_notes.length ? " · credit notes " + s.finance.credit_notes.join(", ") : "")));
      box.append(sys);
      const ol = el("ol", { className: "timeline" });
      o.timeline.forEach((t) => { const li = el("li"); li.append(el("b", {}, t.system + ": " + t.event), " " + fmt(t.at) + " ");
        if (t.since_previous_s !== null && t.since_previous_s !== undefined) li.append(el("span", { className: "delay" + (t.since_previous_s > 300 ? " slow" : "") }, "+" + secs(t.since_previous_s)));
        if (t.detail) li.append(el("div", {}, t.detail)); ol.append(li); });
      box.append(el("h4", {}, "Journey"), ol);
      box.append(el("h4", {}, "Open exceptions: " + o.exceptions.length));
      o.exceptions.forEach((x) => box.append(el("div", { className: "exc" }, x.kind + " · " + fmt(x.occurred_at) + " · " + x.reason)));
      out.append(box);
    });
  }
  async function search(q) {
    const st = document.getElementById("search-status");
    st.textContent = "searching…";
    try { const body = await api("/dashboard/orders?q=" + encodeURIComponent(q)); st.textContent = body.orders.length + " order(s) for " + q + " (" + body.matched_by + ")"; renderJourney(body); }
    catch (err) { st.textContent = String(err.message || err); document.getElementById("results").replaceChildren(); }
  }

  if (page === "search") {
    const form = document.getElementById("search-form"); const input = document.getElementById("q");
    form.onsubmit = (ev) => { ev.preventDefault(); history.replaceState(null, "", "?q=" + encodeURIComponent(input.value)); search(input.value); };
    const q = new URLSearchParams(location.search).get("q"); if (q) { input.value = q; search(q); }
    setStatus(token() ? "token set (this tab only)" : "no token: open as /dashboard/search#token=<viewer token>", !token());
  } else { refresh(); setInterval(refresh, REFRESH_MS); }
})();
