"""Validate docker-compose.yml without a Docker engine.

    python -m retail_sync.compose_check docker-compose.yml [--no-external]

1. The file is read as Compose reads it: YAML (a repeated key is an error), ``${VAR}``,
   ``${VAR:-default}``, ``${VAR:?message}``, ``${VAR:+alt}`` and ``$$`` expanded from the
   environment and an ``.env`` file beside it (python-dotenv).
2. It is validated against the official compose-spec JSON schema (vendored in
   ``retail_sync/compose_spec/`` with its license; JSON Schema draft 7, as the schema declares).
3. The project's own rules (``retail_sync/compose_rules.py``): the services agree with each
   other (settings, shared credentials, URLs, ports, secrets, volumes).
4. ``promtool check config`` / ``promtool check rules`` on the Prometheus files the prometheus
   service mounts, when promtool is installed (otherwise the summary says it was skipped).

Prints a short summary; exits 1 with one line per problem.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import yaml
from dotenv import dotenv_values
from jsonschema.exceptions import best_match

SCHEMA = Path(__file__).with_name("compose_spec") / "compose-spec.json"


@dataclass
class Report:
    errors: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    summary: list[str] = field(default_factory=list)

    def error(self, where: str, message: str) -> None:
        self.errors.append(f"{where}: {message}")

    def note(self, where: str, message: str) -> None:
        self.notes.append(f"{where}: {message}")

    @property
    def ok(self) -> bool:
        return not self.errors


class InterpolationError(ValueError):
    pass


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that rejects a key repeated in one mapping, as Compose does."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        keys = [self.construct_object(k, deep=True) for k, _ in node.value
                if k.tag != "tag:yaml.org,2002:merge"]
        dup = next((k for k in keys if keys.count(k) > 1), None)
        if dup is not None:
            raise yaml.constructor.ConstructorError(None, None, f"found duplicate key {dup!r}",
                                                    node.start_mark)
        return super().construct_mapping(node, deep=deep)


# $$ | ${NAME} | ${NAME<op>arg} (arg may hold one nested ${...}) | $NAME | any other $ (an error)
_VAR = re.compile(r"\$(?:(\$)|\{([A-Za-z_]\w*)(?:(:?[-?+])((?:[^${}]|\$\{[^{}]*\}|\$\$|\$[A-Za-z_]\w*)*))?\}"
                  r"|([A-Za-z_]\w*)|)")


def interpolate(text: str, env: dict[str, str]) -> str:
    """Compose's variable interpolation of one string."""

    def one(m: re.Match[str]) -> str:
        dollar, name, op, arg, bare = m.groups()
        if dollar:
            return "$"
        if bare:
            return env.get(bare, "")
        if not name:
            raise InterpolationError(f"invalid interpolation at {text[m.start():m.start() + 40]!r} "
                                     "(write $$ for a literal dollar sign)")
        value = env.get(name)
        is_set = value is not None and (value != "" or not op or not op.startswith(":"))
        if op and op.endswith("-"):
            return (value or "") if is_set else interpolate(arg, env)
        if op and op.endswith("?") and not is_set:
            raise InterpolationError(f"required variable {name} is not set: {arg}")
        if op and op.endswith("+"):
            return interpolate(arg, env) if is_set else ""
        return value or ""

    return _VAR.sub(one, text)


def interpolate_tree(node: Any, env: dict[str, str], where: str = "") -> Any:
    if isinstance(node, dict):
        return {k: interpolate_tree(v, env, f"{where}.{k}" if where else str(k)) for k, v in node.items()}
    if isinstance(node, list):
        return [interpolate_tree(v, env, f"{where}[{i}]") for i, v in enumerate(node)]
    if isinstance(node, str):
        try:
            return interpolate(node, env)
        except InterpolationError as exc:
            raise InterpolationError(f"{where}: {exc}") from None
    return node


@cache
def compose_schema() -> dict[str, Any]:
    schema: dict[str, Any] = json.loads(SCHEMA.read_text())
    return schema


def schema_errors(doc: Any) -> list[str]:
    """One line per violation of the compose-spec schema, at the most specific place."""
    validator = jsonschema.Draft7Validator(compose_schema(),
                                           format_checker=jsonschema.Draft7Validator.FORMAT_CHECKER)
    out = []
    for error in validator.iter_errors(doc):
        best = best_match([error])
        path = ".".join(str(p) for p in best.absolute_path) or "(top level)"
        out.append(f"{path}: {best.message}")
    return sorted(out)


def load(path: Path, env: dict[str, str] | None) -> tuple[Any, Any]:
    """(raw, interpolated) compose document; ``env=None``: os.environ over the .env file."""
    if env is None:
        dotenv = path.parent / ".env"
        env = {**{k: v for k, v in dotenv_values(dotenv).items() if v is not None},
               **os.environ} if dotenv.is_file() else dict(os.environ)
    raw = yaml.load(path.read_text(), Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader
    return raw, interpolate_tree(raw, env)


def _run(cmd: list[str], cwd: Path) -> tuple[int, str]:
    try:
        proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True,  # noqa: S603
                              timeout=120, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return 127, str(exc)
    return proc.returncode, (proc.stdout + proc.stderr).strip()


def run_promtool(configs: list[Path], rules: list[Path], root: Path, report: Report) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        report.summary.append("promtool: not installed, skipped")
        return
    for path in configs:
        rc, out = _run([promtool, "check", "config", "--syntax-only", str(path)], root)
        if rc:
            report.error(f"promtool check config {path.relative_to(root)}", out)
    for path in rules:
        rc, out = _run([promtool, "check", "rules", str(path)], root)
        if rc:
            report.error(f"promtool check rules {path.relative_to(root)}", out)
    report.summary.append(f"promtool: {len(configs)} config, {len(rules)} rule files checked")


def check(compose_path: Path, external: bool = True, env: dict[str, str] | None = None) -> Report:
    from retail_sync import compose_rules

    report = Report()
    if not compose_path.is_file():
        report.errors.append(f"{compose_path}: no such file")
        return report
    label = compose_path.name
    try:
        raw, doc = load(compose_path, env)
    except (yaml.YAMLError, InterpolationError) as exc:
        report.error(label, f"invalid: {exc}")
        return report
    for line in schema_errors(doc):
        report.error(label, line)
    if not report.ok:
        return report
    report.summary.append(f"{label}: valid against the compose-spec schema")
    project = compose_rules.Project(compose_path.resolve().parent, raw, doc)
    compose_rules.check(project, report, label)
    report.summary.insert(0, project.describe())
    if external:
        found = [project.prometheus_files(s) for s in project.services.values()]
        configs = [path for c, _ in found for path, _ in c]
        rules = [path for _, r in found for path in r]
        if configs or rules:
            run_promtool(configs, rules, project.root, report)
        else:
            report.summary.append("promtool: no Prometheus files mounted, skipped")
    return report


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m retail_sync.compose_check",
                                description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("compose_file", nargs="?", default="docker-compose.yml", type=Path)
    p.add_argument("--no-external", action="store_true", help="do not call promtool")
    p.add_argument("--verbose", "-v", action="store_true", help="also print notes")
    args = p.parse_args(argv)
    report = check(args.compose_file, external=not args.no_external)
    for line in report.summary:
        print(line)
    if args.verbose or not report.ok:
        for line in report.notes:
            print(f"note: {line}")
    if report.errors:
        print(f"\n{len(report.errors)} problem(s):", file=sys.stderr)
        for line in report.errors:
            print(f"  ERROR {line}", file=sys.stderr)
        return 1
    print("OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
