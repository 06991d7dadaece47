"""Tests find ../shared/specs from the checkout, not from a hard-coded path (issue 12 item 5)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests import specs

TESTS = Path(__file__).resolve().parents[1]


def test_specs_are_found_beside_the_repo_root() -> None:
    root = specs.repo_root()
    assert (root / "pyproject.toml").is_file() and specs.SPECS == root.parent / "shared" / "specs"
    assert specs.spec_path("amazon", "ordersV0.json").is_file()


def test_a_missing_spec_fails_in_ci_and_skips_elsewhere(monkeypatch) -> None:
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI=true"):
        specs.spec_path("no-such-api", "openapi.json")
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception, match="no-such-api"):
        specs.spec_path("no-such-api", "openapi.json")


def test_no_test_reads_the_specs_through_a_hard_coded_path() -> None:
    pattern = re.compile(r"/work/shared|parents\[3\] / \"shared\"")
    offenders = [f"{path.relative_to(TESTS)}:{n}" for path in sorted(TESTS.rglob("*.py"))
                 if path.name not in ("specs.py", "test_spec_paths.py")
                 for n, line in enumerate(path.read_text().splitlines(), start=1)
                 if pattern.search(line)]
    assert not offenders, f"use tests.specs.spec_path instead: {offenders}"
