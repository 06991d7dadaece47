"""The deployment files: docker-compose.yml, the Dockerfile and deploy/ (Prometheus + alerts).

No Docker engine here, so `retail_sync.compose_check` stands in for `docker compose config`: the
compose-spec JSON schema (vendored), the project's rules (retail_sync/compose_rules.py: services
agree with each other) and promtool. It must pass on the repository's real files and fail, with a
message that names the problem, on broken copies of them. The alert rules must only use metric
names that retail_sync/metrics.py actually defines, so renaming a metric without updating the
alerts fails here.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from retail_sync import compose_check
from retail_sync.compose_check import InterpolationError, check, interpolate

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
ALERTS = ROOT / "deploy" / "alerts.yml"
PROMETHEUS = ROOT / "deploy" / "prometheus.yml"
METRICS_SOURCE = ROOT / "retail_sync" / "metrics.py"


def _errors(report: compose_check.Report) -> str:
    return "\n".join(report.errors)


# --- the real files ---------------------------------------------------------------------------


def test_repository_files_pass_the_python_checks():
    report = check(COMPOSE, external=False, env={})
    assert report.ok, _errors(report)
    summary = "\n".join(report.summary)
    assert "10 services" in summary
    assert "profile sim: erp-sim, shopify-sim" in summary
    assert "workers: worker-1, worker-2; ingress processes: ingress" in summary
    assert "docker-compose.yml: valid against the compose-spec schema" in summary
    # the workers' ERP URL defaults to the simulator, which only the sim profile starts: said
    assert any("RETAIL_SYNC_ERP_BASE_URL: defaults to erp-sim" in n for n in report.notes)


def test_repository_files_pass_with_external_tools_when_installed():
    """promtool runs when present; its absence is not a failure, only said."""
    report = check(COMPOSE, external=True, env={})
    assert report.ok, _errors(report)
    summary = "\n".join(report.summary)
    if shutil.which("promtool"):
        assert "promtool: 1 config, 1 rule files checked" in summary
    else:
        assert "promtool: not installed, skipped" in summary


def test_vendored_schema_is_the_official_one_with_its_license():
    spec = ROOT / "retail_sync" / "compose_spec"
    schema = json.loads((spec / "compose-spec.json").read_text())
    assert schema["$schema"] == "https://json-schema.org/draft-07/schema"
    assert schema["title"] == "Compose Specification"
    assert "Apache License" in (spec / "LICENSE").read_text()
    assert re.search(r"commit [0-9a-f]{40}", (spec / "README.md").read_text())


def test_command_line_exit_codes(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("RETAIL_SYNC_")}
    env["PYTHONPATH"] = str(ROOT)
    ok = subprocess.run(
        [sys.executable, "-m", "retail_sync.compose_check", "docker-compose.yml", "--no-external"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=False,
    )
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.rstrip().endswith("OK")

    missing = subprocess.run(
        [sys.executable, "-m", "retail_sync.compose_check", str(tmp_path / "nope.yml")],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=False,
    )
    assert missing.returncode == 1
    assert "no such file" in missing.stderr


def test_compose_matches_the_deployment_design():
    doc = yaml.safe_load(COMPOSE.read_text())
    services = doc["services"]
    assert services["kafka"]["image"].startswith(("apache/kafka", "bitnami/kafka"))
    assert "broker,controller" in services["kafka"]["environment"]["KAFKA_PROCESS_ROLES"]
    workers = [services["worker-1"], services["worker-2"]]
    app_ids = {w["environment"]["RETAIL_SYNC_APP_ID"] for w in workers}
    assert len(app_ids) == 1, "both workers must be in one consumer group"
    for n, w in enumerate(workers, 1):
        env = w["environment"]
        assert env["RETAIL_SYNC_CANONICAL_URL"] == f"http://worker-{n}:6066"
        assert env["RETAIL_SYNC_WEB_HOST"] == "0.0.0.0"
        # two listeners: the ingress published, the admin one only on the compose network
        assert env["RETAIL_SYNC_INGRESS_PORT"] == "6065" and env["RETAIL_SYNC_WEB_PORT"] == "6066"
        assert all(p.endswith(":6065") for p in w["ports"]), w["ports"]
        assert w["expose"] == ["6066"]
        # admin tokens from a Docker secret (hashes only), re-read when it changes
        assert w["secrets"] == ["admin_tokens"]
        assert env["RETAIL_SYNC_ADMIN_TOKENS_FILE"] == "/run/secrets/admin_tokens"
        assert env["RETAIL_SYNC_BROKER_URL"] == "kafka://kafka:9092"
        assert w["depends_on"]["kafka"]["condition"] == "service_healthy"
        assert f"worker-{n}-data:/var/lib/retail-sync" in w["volumes"]
        assert "${RETAIL_SYNC_SHOPIFY_WEBHOOK_SECRET:-" in COMPOSE.read_text()
    for sim in ("erp-sim", "shopify-sim"):
        assert services[sim]["profiles"] == ["sim"]
    # the ERP simulator accepts what the workers send (it once kept its demo-key: 401s)
    for name in ("RETAIL_SYNC_ERP_API_KEY", "RETAIL_SYNC_ERP_API_SECRET"):
        assert services["erp-sim"]["environment"][name] == workers[0]["environment"][name]
    assert "./deploy/alerts.yml:/etc/prometheus/alerts.yml:ro" in services["prometheus"]["volumes"]
    assert services["prometheus"]["secrets"] == ["prometheus_token"]
    assert set(doc["secrets"]) == {"admin_tokens", "prometheus_token"}
    assert "http://worker-1:6065/webhooks/shopify/orders/create" in services["shopify-sim"]["command"]
    # issue 14: Alertmanager (routing, inhibition) and Grafana (provisioned dashboard)
    assert "./deploy/alertmanager.yml:/etc/alertmanager/alertmanager.yml:ro" in \
        services["alertmanager"]["volumes"]
    assert "./deploy/grafana/provisioning:/etc/grafana/provisioning:ro" in services["grafana"]["volumes"]
    assert "./deploy/grafana/dashboards:/var/lib/grafana/dashboards:ro" in services["grafana"]["volumes"]
    prometheus = yaml.safe_load(PROMETHEUS.read_text())
    assert prometheus["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"] == [
        "alertmanager:9093"]


def test_dockerfile_essentials():
    text = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11-slim\b", text, re.M)
    assert "pip install ." in text
    assert re.search(r"^USER (?!root\b|0\b)\S+", text, re.M), "must run as a non-root user"
    assert re.search(r"^EXPOSE 6066\b", text, re.M)
    assert re.search(r"^EXPOSE 6065\b", text, re.M)
    assert re.search(r'^CMD \["retail-sync", "worker"\]', text, re.M)
    assert re.search(r"^HEALTHCHECK .*\n?.*urllib.*/health", text, re.M)


# --- alert rules vs metrics.py ------------------------------------------------------------------


def _defined_metrics() -> set[str]:
    """Metric names as string literals in retail_sync/metrics.py (read as text on purpose)."""
    text = METRICS_SOURCE.read_text() + (ROOT / "retail_sync" / "exceptions_view.py").read_text()
    return set(re.findall(r"[\"'](retail_sync_[a-z0-9_]+)[\"']", text))


def _alert_rules() -> list[dict]:
    doc = yaml.safe_load(ALERTS.read_text())
    return [rule for group in doc["groups"] for rule in group["rules"]]


def test_alert_expressions_use_only_metrics_that_exist():
    defined = _defined_metrics()
    assert {"retail_sync_consumer_lag", "retail_sync_order_to_erp_seconds",
            "retail_sync_sync_exceptions_total", "retail_sync_erp_posts_total",
            "retail_sync_webhooks_total"} <= defined
    used: set[str] = set()
    for rule in _alert_rules():
        for name in re.findall(r"\bretail_sync_[a-z0-9_]+", rule["expr"]):
            base = re.sub(r"_(bucket|count|sum)$", "", name)
            assert name in defined or base in defined, (
                f"alert {rule['alert']} uses {name}, which retail_sync/metrics.py does not define"
            )
            used.add(base if base in defined else name)
    assert len(used) >= 5, used


@pytest.mark.parametrize(
    ("alert", "severity", "needle"),
    [
        ("ConsumerLagHigh", "warning", "sum by (job, instance, topic) (retail_sync_consumer_lag) > 1000"),
        ("ConsumerLagGrowing", "warning", "deriv(retail_sync_consumer_lag[10m])"),
        ("OrderToErpLatencyHigh", "warning", "rate(retail_sync_order_to_erp_seconds_bucket[5m])"),
        ("SyncExceptionsRising", "warning", "increase(retail_sync_sync_exceptions_total[15m])"),
        ("ErpPostsExhausted", "critical", 'retail_sync_erp_posts_total{outcome="exhausted"}'),
        ("WebhookSignatureFailures", "warning", 'outcome="bad_signature"'),
        ("WebhookDedupeFallback", "warning", "increase(retail_sync_dedupe_fallback_total[10m])"),
        ("WorkerDown", "critical", 'up{job="retail-sync"} == 0'),
    ],
)
def test_each_alert_is_defined_and_actionable(alert, severity, needle):
    rules = {r["alert"]: r for r in _alert_rules()}
    rule = rules[alert]
    assert needle in " ".join(rule["expr"].split())
    assert rule["labels"]["severity"] == severity
    assert rule["annotations"]["summary"].strip()
    assert len(rule["annotations"]["description"]) > 80


def test_prometheus_scrapes_both_workers_and_loads_the_rules():
    doc = yaml.safe_load(PROMETHEUS.read_text())
    assert doc["rule_files"] == ["alerts.yml"]
    job = next(j for j in doc["scrape_configs"] if j["job_name"] == "retail-sync")
    targets = {t for sc in job["static_configs"] for t in sc["targets"]}
    assert {"worker-1:6066", "worker-2:6066"} <= targets
    assert job.get("metrics_path", "/metrics") == "/metrics"
    assert job["authorization"] == {"type": "Bearer",
                                    "credentials_file": "/run/secrets/prometheus_token"}


# --- broken copies must fail with the right message ----------------------------------------------


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A throwaway repository: the deployment files copied, to be broken."""
    for name in ("docker-compose.yml", "Dockerfile"):
        shutil.copy(ROOT / name, tmp_path / name)
    shutil.copytree(ROOT / "deploy", tmp_path / "deploy")
    return tmp_path


def edit(path: str, old: str, new: str, count: int = 1) -> Callable[[Path], None]:
    def apply(root: Path) -> None:
        target = root / path
        text = target.read_text()
        assert old in text, f"test setup: {old!r} not in {path}"
        target.write_text(text.replace(old, new, count))

    return apply


def remove(path: str) -> Callable[[Path], None]:
    return lambda root: (root / path).unlink()


ERP_SIM_CREDENTIALS = ("    environment: *erp-credentials  # what the workers send "
                       "(compose-check compares them)\n")

BROKEN = {
    # the compose-spec schema
    "misspelled service key (schema)": (
        edit("docker-compose.yml", "    stop_grace_period: 30s\n    environment:",
             "    stop_grace_period: 30s\n    enviroment:"),
        "services.worker-1: 'enviroment' does not match any of the regexes: '^x-'",
    ),
    "command argument not a string (schema)": (
        edit("docker-compose.yml", '      - "8200"\n', "      - 8200\n"),
        "services.shopify-sim.command.6: 8200 is not of type 'string'",
    ),
    "depends_on mapping without condition (schema)": (
        edit("docker-compose.yml", "      kafka:\n        condition: service_healthy\n",
             "      kafka: {}\n"),
        "services.worker-1.depends_on.kafka: 'condition' is a required property",
    ),
    # reading the file as Compose does
    "duplicate key": (
        edit("docker-compose.yml", "    image: redis:7\n",
             "    image: redis:7\n    image: redis:6\n"),
        "found duplicate key 'image'",
    ),
    "interpolation default without '-'": (
        edit("docker-compose.yml", "${RETAIL_SYNC_SHOPIFY_WEBHOOK_SECRET:-change-me}",
             "${RETAIL_SYNC_SHOPIFY_WEBHOOK_SECRET:change-me}"),
        "invalid interpolation at '${RETAIL_SYNC_SHOPIFY_WEBHOOK_SECRET:",
    ),
    "unterminated interpolation": (
        edit("docker-compose.yml", "${RETAIL_SYNC_LOG_LEVEL:-info}",
             "${RETAIL_SYNC_LOG_LEVEL:-info"),
        "invalid interpolation at '${RETAIL_SYNC_LOG_LEVEL:-info'",
    ),
    "lone dollar": (
        edit("docker-compose.yml", "localhost:9092 > /dev/null", "$(hostname):9092 > /dev/null"),
        "write $$ for a literal dollar sign",
    ),
    # the project's rules: services agree with each other
    "misspelled RETAIL_SYNC_ variable": (
        edit("docker-compose.yml", "RETAIL_SYNC_CANONICAL_URL: http://worker-2:6066",
             "RETAIL_SYNC_CANONICAL_ULR: http://worker-2:6066"),
        "services.worker-2.environment.RETAIL_SYNC_CANONICAL_ULR: not a retail-sync setting "
        "(did you mean RETAIL_SYNC_CANONICAL_URL?)",
    ),
    "ERP simulator without the workers' credentials (the old sim-profile 401)": (
        edit("docker-compose.yml", ERP_SIM_CREDENTIALS, ""),
        "services.worker-1.environment.RETAIL_SYNC_ERP_API_KEY: differs from erp-sim's (worker-1 "
        "sets it, erp-sim leaves it at the default), and environment.RETAIL_SYNC_ERP_BASE_URL "
        "sends worker-1 to erp-sim: erp-sim will refuse it (401)",
    ),
    "ERP simulator with other credentials": (
        edit("docker-compose.yml", ERP_SIM_CREDENTIALS,
             "    environment:\n      RETAIL_SYNC_ERP_API_KEY: ${RETAIL_SYNC_ERP_API_KEY:-change-me}\n"
             "      RETAIL_SYNC_ERP_API_SECRET: sim-secret\n"),
        "services.worker-2.environment.RETAIL_SYNC_ERP_API_SECRET: differs from erp-sim's",
    ),
    "Shopify simulator signing with another webhook secret": (
        edit("docker-compose.yml",
             "    environment:\n      RETAIL_SYNC_SHOPIFY_WEBHOOK_SECRET: "
             "${RETAIL_SYNC_SHOPIFY_WEBHOOK_SECRET:-change-me}\n",
             "    environment:\n      RETAIL_SYNC_SHOPIFY_WEBHOOK_SECRET: sim-secret\n"),
        "services.shopify-sim.environment.RETAIL_SYNC_SHOPIFY_WEBHOOK_SECRET: differs from worker-1's",
    ),
    "URL to a missing service": (
        edit("docker-compose.yml", "RETAIL_SYNC_BROKER_URL: kafka://kafka:9092",
             "RETAIL_SYNC_BROKER_URL: kafka://kafak:9092"),
        "services.worker-1.environment.RETAIL_SYNC_BROKER_URL: 'kafka://kafak:9092': kafak is not a service",
    ),
    "URL to a service only a profile starts": (
        edit("docker-compose.yml", "${RETAIL_SYNC_ERP_BASE_URL:-http://erp-sim:8100}",
             "http://erp-sim:8100"),
        "services.worker-1.environment.RETAIL_SYNC_ERP_BASE_URL: 'http://erp-sim:8100': erp-sim only "
        "runs with profiles ['sim'], worker-1 runs without them",
    ),
    "URL to a port the service does not listen on": (
        edit("docker-compose.yml", "${RETAIL_SYNC_ERP_BASE_URL:-http://erp-sim:8100}",
             "${RETAIL_SYNC_ERP_BASE_URL:-http://erp-sim:8000}"),
        "'http://erp-sim:8000': erp-sim listens on 8100, not 8000",
    ),
    "webhooks sent to the admin listener": (
        edit("docker-compose.yml", "http://worker-1:6065/webhooks/", "http://worker-1:6066/webhooks/"),
        "is not worker-1's ingress listener (port 6065)",
    ),
    "two workers with one canonical URL": (
        edit("docker-compose.yml", "RETAIL_SYNC_CANONICAL_URL: http://worker-2:6066",
             "RETAIL_SYNC_CANONICAL_URL: http://worker-1:6066"),
        "'http://worker-1:6066' should name this service (worker-2)",
    ),
    "host port published twice": (
        edit("docker-compose.yml", '"6165:6065"', '"6065:6065"'),
        "services.worker-2.ports[0]: host port 6065/tcp is also published by worker-1",
    ),
    "port out of range": (
        edit("docker-compose.yml", '"6165:6065"', '"70000:6065"'),
        "host port 70000 is out of range",
    ),
    "malformed port": (
        edit("docker-compose.yml", '"6165:6065"', '"6165:6065/http"'),
        "is not [IP:][HOST:]CONTAINER[/PROTOCOL]",
    ),
    "admin listener published on every interface": (
        edit("docker-compose.yml", '      - "6165:6065"  # ingress (webhooks): public\n',
             '      - "6165:6065"  # ingress (webhooks): public\n      - "6067:6066"\n'),
        "services.worker-2.ports[1]: publishes the admin listener (container port 6066) on "
        "every interface",
    ),
    "an ingress process's admin listener published on every interface": (
        edit("docker-compose.yml", '      - "6265:6065"  # ingress (webhooks): public\n',
             '      - "6265:6065"  # ingress (webhooks): public\n      - "6266:6066"\n'),
        "services.ingress.ports[1]: publishes the admin listener (container port 6066) on "
        "every interface",
    ),
    "service_healthy on a service without healthcheck": (
        edit("docker-compose.yml", """    healthcheck:
      test: ["CMD", "redis-cli", "ping"]
      interval: 10s
      timeout: 3s
      retries: 5
""", ""),
        "services.worker-1.depends_on.redis: condition service_healthy but redis has no healthcheck",
    ),
    "unknown depends_on target": (
        edit("docker-compose.yml", "      kafka:\n        condition: service_healthy",
             "      kafak:\n        condition: service_healthy"),
        "services.worker-1.depends_on: 'kafak' is not a service",
    ),
    "always-on service depending on a profile service": (
        edit("docker-compose.yml", "      redis:\n        condition: service_healthy\n",
             "      redis:\n        condition: service_healthy\n      erp-sim:\n"
             "        condition: service_healthy\n"),
        "services.worker-1.depends_on: erp-sim only runs with profiles ['sim']",
    ),
    "service without image or build": (
        edit("docker-compose.yml", "    image: redis:7\n", ""),
        "services.redis: has neither 'image' nor 'build'",
    ),
    "undeclared secret": (
        edit("docker-compose.yml", "      - prometheus_token  #", "      - prometheus-token  #"),
        "services.prometheus.secrets: 'prometheus-token' is not declared in top-level secrets",
    ),
    "undeclared named volume": (
        edit("docker-compose.yml", "- worker-2-data:/var/lib/retail-sync",
             "- worker-two-data:/var/lib/retail-sync"),
        "named volume 'worker-two-data' is not declared",
    ),
    "mounted file missing from the repository": (
        remove("deploy/prometheus.yml"),
        "services.prometheus.volumes[0]: mounts ./deploy/prometheus.yml, which does not exist",
    ),
    "mount source misspelled": (
        edit("docker-compose.yml", "./deploy/alerts.yml:", "./deploy/alert.yml:"),
        "mounts ./deploy/alert.yml, which does not exist",
    ),
    "Dockerfile missing": (
        remove("Dockerfile"),
        "services.worker-1.build: Dockerfile does not exist",
    ),
    "rules file not mounted into prometheus": (
        edit("docker-compose.yml", "      - ./deploy/alerts.yml:/etc/prometheus/alerts.yml:ro\n",
             ""),
        "alerts.yml resolves to /etc/prometheus/alerts.yml in the container, which the "
        "prometheus service does not mount",
    ),
    "rules file missing": (
        edit("deploy/prometheus.yml", "  - alerts.yml", "  - alerts.yaml"),
        "alerts.yaml resolves to /etc/prometheus/alerts.yaml in the container",
    ),
    "metrics scraped without a token": (
        edit("deploy/prometheus.yml", "      credentials_file: /run/secrets/prometheus_token\n", ""),
        "scrapes worker-1:6066 without a token",
    ),
    "scrape target that is not a service": (
        edit("deploy/prometheus.yml", "- worker-2:6066", "- worker-3:6066"),
        "target worker-3:6066: worker-3 is not a compose service",
    ),
}

#: what promtool finds in the alert rules (skipped where promtool is not installed)
BROKEN_RULES = {
    "alert without expr": (
        edit("deploy/alerts.yml", "        expr: up{job=\"retail-sync\"} == 0\n", ""),
        "field 'expr' must be set",
    ),
    "unbalanced expression": (
        edit("deploy/alerts.yml", "sum by (job, instance, topic) (retail_sync_consumer_lag) > 1000",
             "sum by (topic) (retail_sync_consumer_lag > 1000"),
        '"ConsumerLagHigh": could not parse expression',
    ),
    "bad for duration": (
        edit("deploy/alerts.yml", "        for: 1m\n", "        for: 1 minute\n"),
        'not a valid duration string: "1 minute"',
    ),
    "invalid YAML": (
        edit("deploy/alerts.yml", "groups:\n", "groups:\n  - name: [unclosed\n"),
        "promtool check rules deploy/alerts.yml",
    ),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_broken_copy_fails_with_a_clear_message(repo, case):
    assert check(repo / "docker-compose.yml", external=False, env={}).ok, "intact copy must pass"
    breaker, expected = BROKEN[case]
    breaker(repo)
    report = check(repo / "docker-compose.yml", external=False, env={})
    assert not report.ok, f"{case}: the checker accepted it"
    assert expected in _errors(report), f"{case}: expected {expected!r} in:\n{_errors(report)}"


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool is not installed")
@pytest.mark.parametrize("case", sorted(BROKEN_RULES))
def test_broken_alert_rules_fail_promtool(repo, case):
    breaker, expected = BROKEN_RULES[case]
    breaker(repo)
    report = check(repo / "docker-compose.yml", external=True, env={})
    assert not report.ok, f"{case}: the checker accepted it"
    assert expected in _errors(report), f"{case}: expected {expected!r} in:\n{_errors(report)}"


def test_dockerfile_healthcheck_satisfies_service_healthy(repo):
    """shopify-sim waits for worker-1 to be healthy; the image's HEALTHCHECK is enough."""
    edit("docker-compose.yml", "    healthcheck: *worker-healthcheck\n", "")(repo)
    report = check(repo / "docker-compose.yml", external=False, env={})
    assert report.ok, _errors(report)
    edit("Dockerfile", "HEALTHCHECK ", "# HEALTHCHECK ")(repo)
    report = check(repo / "docker-compose.yml", external=False, env={})
    assert "condition service_healthy but worker-1 has no healthcheck" in _errors(report)


def test_credentials_from_the_environment_reach_workers_and_simulator_alike():
    env = {"RETAIL_SYNC_ERP_API_KEY": "k1", "RETAIL_SYNC_ERP_API_SECRET": "s1",
           "RETAIL_SYNC_SHOPIFY_WEBHOOK_SECRET": "w1"}
    report = check(COMPOSE, external=False, env=env)
    assert report.ok, _errors(report)


def test_main_prints_problems_and_exits_1(repo, capsys):
    edit("docker-compose.yml", "      kafka:\n        condition: service_healthy",
         "      kafak:\n        condition: service_healthy")(repo)
    assert compose_check.main([str(repo / "docker-compose.yml"), "--no-external"]) == 1
    err = capsys.readouterr().err
    assert "problem(s)" in err
    assert "ERROR docker-compose.yml: services.worker-1.depends_on: 'kafak' is not a service" in err


# --- interpolation ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("template", "env", "expected"),
    [
        ("plain", {}, "plain"),
        ("$A-$B", {"A": "1", "B": "2"}, "1-2"),
        ("${A}", {}, ""),
        ("${A:-dflt}", {"A": ""}, "dflt"),
        ("${A-dflt}", {"A": ""}, ""),
        ("${A-dflt}", {}, "dflt"),
        ("${A:+alt}", {"A": "x"}, "alt"),
        ("${A:+alt}", {}, ""),
        ("${A:-${B:-inner}}", {}, "inner"),
        ("cost $$5", {}, "cost $5"),
        ("${A:?needed}", {"A": "set"}, "set"),
    ],
)
def test_interpolation(template, env, expected):
    assert interpolate(template, env) == expected


@pytest.mark.parametrize(
    "template", ["${A:dflt}", "${A", "${}", "${1A}", "$ x", "trailing $", "${A:-x", "$(cmd)"],
)
def test_interpolation_errors(template):
    with pytest.raises(InterpolationError):
        interpolate(template, {"A": "1"})


def test_required_variable_unset():
    with pytest.raises(InterpolationError, match="required variable A is not set: give it"):
        interpolate("${A:?give it}", {})
