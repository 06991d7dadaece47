"""Where the reference specs are: ``../shared/specs`` beside this checkout, whatever its path.

Tests that read a real API contract call ``spec_path("amazon", "ordersV0.json")`` (or mark
themselves with ``needs_specs``) instead of hard-coding ``/work/shared/specs``. When the specs are
not beside the checkout a test is skipped with the reason, except in CI (``CI=true``), where a
missing contract must fail the run instead of hiding behind a skip.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest


def repo_root(start: Path | None = None) -> Path:
    """The directory holding pyproject.toml above ``start`` (default: this file)."""
    here = (start or Path(__file__)).resolve()
    for folder in (here, *here.parents):
        if (folder / "pyproject.toml").is_file():
            return folder
    raise RuntimeError(f"no pyproject.toml above {here}")


SHARED = repo_root().parent / "shared"
SPECS = SHARED / "specs"


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


def missing(path: Path) -> None:
    """Fail (in CI) or skip (elsewhere) because ``path`` is not there."""
    reason = (f"reference spec {path} is missing: ../shared/specs must sit beside the checkout "
              f"({repo_root()})")
    if in_ci():
        pytest.fail(reason + " (CI=true: a missing contract fails the run)")
    pytest.skip(reason)


def spec_path(*parts: str) -> Path:
    """``../shared/specs/<parts>``; fails in CI, skips elsewhere, when it does not exist."""
    path = SPECS.joinpath(*parts)
    if not path.exists():
        missing(path)
    return path


def needs_spec(*parts: str) -> pytest.MarkDecorator:
    """A marker for a test that reads ``../shared/specs/<parts>`` (skipped if absent, outside CI).

    In CI the test is not skipped: it runs, and its ``spec_path`` call fails it."""
    path = SPECS.joinpath(*parts)
    return pytest.mark.skipif(not path.exists() and not in_ci(),
                              reason=f"reference spec {path} is not beside the checkout")
