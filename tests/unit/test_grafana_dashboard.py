"""The provisioned Grafana dashboard (deploy/grafana/dashboards/retail-sync.json) asks only for
what the workers export: every panel's PromQL parses (promtool check rules on a rule file made of
the expressions) and every metric name it uses is on a worker's registry, built the way a worker
builds it (retail_sync.app.create_app, not started)."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import yaml

from retail_sync.app import create_app
from retail_sync.settings import Settings
from tests.unit.test_alert_rules import promtool

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "retail-sync.json"
PROVISIONING = ROOT / "deploy" / "grafana" / "provisioning"
#: series Prometheus makes itself
PROMETHEUS_OWN = {"up"}
KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or",
            "unless", "offset", "bool", "inf", "nan"}


def expressions() -> list[tuple[str, str]]:
    doc = json.loads(DASHBOARD.read_text())
    found = []
    for panel in doc["panels"]:
        assert panel.get("targets"), f"panel {panel['title']!r} has no query"
        for target in panel["targets"]:
            found.append((panel["title"], target["expr"]))
    return found


def metric_names(expr: str) -> set[str]:
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # strings
    text = re.sub(r"\{[^}]*\}", "", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", "", text)  # ranges
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", text)
    names = set()
    for m in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", text):
        rest = text[m.end():].lstrip()
        if rest.startswith("(") or m.group(0).lower() in KEYWORDS:
            continue  # a function or a keyword
        names.add(m.group(0))
    return names


def registry_names(tmp_path: Path) -> set[str]:
    settings = Settings(datadir=tmp_path, redis_url="redis://127.0.0.1:6379/0")
    ctx = create_app(settings, "kafka://127.0.0.1:1")  # registration only: nothing starts
    ctx.breaker("erp")
    for collector in list(ctx.metrics.registry._collector_to_names):  # noqa: SLF001
        if hasattr(collector, "refresh"):  # the exception gauges: filled by a leader timer
            collector.refresh([])
    names = set(PROMETHEUS_OWN)
    for family in ctx.metrics.registry.collect():
        names.add(family.name)
        names.update(f"{family.name}{suffix}" for suffix in ("_total", "_bucket", "_count", "_sum"))
        names.update(sample.name for sample in family.samples)
    return names


def test_every_panel_query_parses(tmp_path: Path) -> None:
    rules = {"groups": [{"name": "dashboard", "rules": [
        {"record": f"dashboard:panel_{i}", "expr": expr}
        for i, (_title, expr) in enumerate(expressions())]}]}
    path = tmp_path / "dashboard_rules.yml"
    path.write_text(yaml.safe_dump(rules))
    out = subprocess.run([promtool(), "check", "rules", str(path)], capture_output=True,
                         text=True, timeout=60, check=False)
    assert out.returncode == 0, out.stdout + out.stderr


def test_every_metric_a_panel_uses_is_exported(tmp_path: Path) -> None:
    exported = registry_names(tmp_path)
    used = set()
    for title, expr in expressions():
        for name in metric_names(expr):
            assert name in exported, f"panel {title!r} uses {name}, which no worker exports"
            used.add(name)
    assert {"retail_sync_consumer_lag", "retail_sync_flow_seconds_bucket",
            "retail_sync_sync_exceptions_total", "retail_sync_exceptions_oldest_age_seconds",
            "retail_sync_faust_events_total", "process_resident_memory_bytes",
            # the dashboard's figures from tables and jobs (issue 14 §1), on /metrics too
            "retail_sync_reconciliation_mismatches",
            "retail_sync_reconciliation_last_run_timestamp_seconds",
            "retail_sync_listings_at_ats", "retail_sync_listings_total",
            "retail_sync_order_to_ship_seconds_bucket", "retail_sync_orders_traceable",
            "retail_sync_orders_tracked"} <= used


def test_metric_name_extraction() -> None:
    assert metric_names('histogram_quantile(0.99, sum by (le, flow) (rate(a_bucket{le="1"}[5m])))'
                        ) == {"a_bucket"}
    assert metric_names("sum(rate(x_total[5m])) / sum(rate(y_total[5m]))") == {"x_total", "y_total"}


def test_provisioning_points_at_prometheus_and_the_dashboard() -> None:
    source = yaml.safe_load((PROVISIONING / "datasources" / "prometheus.yml").read_text())
    ds = source["datasources"][0]
    assert ds["type"] == "prometheus" and ds["url"] == "http://prometheus:9090"
    provider = yaml.safe_load((PROVISIONING / "dashboards" / "retail-sync.yml").read_text())
    assert provider["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards"
    doc = json.loads(DASHBOARD.read_text())
    assert {p["datasource"]["uid"] for p in doc["panels"]} == {ds["uid"]}


def test_every_alert_dashboard_link_has_a_panel() -> None:
    """The alerts' ``dashboard`` annotations name panels that exist (the same anchors as the
    worker's own /dashboard/ops)."""
    doc = json.loads(DASHBOARD.read_text())
    links = {link["url"] for p in doc["panels"] for link in p.get("links", [])}
    groups = yaml.safe_load((ROOT / "deploy" / "alerts.yml").read_text())["groups"]
    for rule in (r for g in groups for r in g["rules"]):
        assert rule["annotations"]["dashboard"] in links, rule["alert"]
