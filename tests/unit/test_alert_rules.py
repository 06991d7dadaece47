"""The alert rules (deploy/alerts.yml) checked by Prometheus' own tool: ``promtool check rules``
and the unit tests in deploy/tests/alerts_test.yml (every alert fires when it should and stays
silent in the healthy and the one-off cases). promtool comes with Debian's ``prometheus``
package; ``.ci/run`` installs it when missing. In CI (CI set) a missing promtool fails the test;
elsewhere it is skipped with the reason."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy" / "alerts.yml"
RULE_TESTS = ROOT / "deploy" / "tests" / "alerts_test.yml"
RUNBOOK = ROOT / "docs" / "RUNBOOK.md"


def promtool() -> str:
    found = shutil.which("promtool")
    if found:
        return found
    message = ("promtool not found: install Debian's prometheus package "
               "(apt-get install -y prometheus; .ci/run does it when missing)")
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def alerts() -> list[dict]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


def test_rules_are_valid() -> None:
    out = subprocess.run([promtool(), "check", "rules", str(RULES)], capture_output=True,
                         text=True, timeout=60, check=False)
    assert out.returncode == 0, out.stdout + out.stderr


def test_rule_unit_tests_pass() -> None:
    out = subprocess.run([promtool(), "test", "rules", str(RULE_TESTS)], capture_output=True,
                         text=True, timeout=120, check=False, cwd=RULE_TESTS.parent)
    assert out.returncode == 0, (out.stdout + out.stderr)[-6000:]


def test_every_alert_has_a_firing_and_a_silent_case() -> None:
    """Each alert is expected to fire in some case and expected silent in at least two (the
    healthy one and a one-off)."""
    tests = yaml.safe_load(RULE_TESTS.read_text())["tests"]
    fires: dict[str, int] = {}
    silent: dict[str, int] = {}
    for case in tests:
        for check in case["alert_rule_test"]:
            seen = fires if check.get("exp_alerts") else silent
            seen[check["alertname"]] = seen.get(check["alertname"], 0) + 1
    names = [a["alert"] for a in alerts()]
    assert sorted(set(names)) == sorted(names)
    for name in names:
        assert fires.get(name, 0) >= 1, f"{name}: no case where it fires"
        assert silent.get(name, 0) >= 2, f"{name}: fewer than two silent cases"


def test_every_alert_links_its_panel_and_runbook_section() -> None:
    runbook = RUNBOOK.read_text()
    sections = {m.group(1).strip().lower() for m in re.finditer(r"^## (\w+)", runbook, re.M)}
    for rule in alerts():
        name, annotations = rule["alert"], rule["annotations"]
        assert annotations["dashboard"].startswith("/dashboard/ops#"), name
        assert annotations["runbook_url"] == f"docs/RUNBOOK.md#{name.lower()}", name
        assert name.lower() in sections, f"docs/RUNBOOK.md has no section '## {name}'"
        assert "severity" in rule["labels"], name
