"""The README is the user's manual: it must name every setting and the two front-door commands."""

from pathlib import Path

from retail_sync.settings import ENV_PREFIX, Settings

ROOT = Path(__file__).resolve().parent.parent.parent
README = (ROOT / "README.md").read_text()


def test_readme_opens_with_the_two_commands():
    first_block = README.split("```")[1]
    assert "make demo" in first_block and "make test" in first_block


def test_readme_lists_every_setting():
    missing = [f"{ENV_PREFIX}{name.upper()}" for name in Settings.model_fields
               if f"{ENV_PREFIX}{name.upper()}" not in README]
    assert missing == []


def test_ci_runs_the_readme_test_command():
    assert "make test" in (ROOT / ".ci" / "run").read_text()
