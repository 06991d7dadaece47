"""The import rule of docs/ARCHITECTURE.md (issue 15), checked.

- ``.importlinter`` names every wiring module (``retail_sync/*.py``) in its "wiring-not-imported"
  contract: a new wiring module that is not listed there could be imported by the folders
  unnoticed, so this test fails until it is added.
- ``lint-imports`` keeps every contract (layers, wiring never imported by the folders,
  ``connectors/<system>`` packages independent, pure ``streams.rules``, lone simulators).
- No import cycle between the top packages (agents, tables, connectors, streams, simulators and
  the wiring modules as one group), and no module cycle inside ``agents/`` or ``streams/rules/``
  (grimp's import graph, the one import-linter checks; imports under ``TYPE_CHECKING`` count).

import-linter (and grimp, its graph) come with the ``dev`` extra that ``make lint`` installs;
without them the last two checks are skipped (``make lint`` runs lint-imports itself).
"""

from __future__ import annotations

import configparser
import shutil
import subprocess
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / ".importlinter"
FOLDERS = ("agents", "tables", "connectors", "streams", "simulators")
WIRING = "wiring"
#: top may import below (a higher rank); an import to the same or a lower rank closes a cycle
RANK = {WIRING: 0, "agents": 1, "tables": 2, "connectors": 2, "simulators": 2, "streams": 3}


def wiring_modules() -> set[str]:
    return {f"retail_sync.{p.stem}" for p in (ROOT / "retail_sync").glob("*.py")
            if p.stem != "__init__"}


def contract(name: str) -> configparser.SectionProxy:
    parser = configparser.ConfigParser()
    parser.read(CONFIG, encoding="utf-8")
    return parser[f"importlinter:contract:{name}"]


def listed(value: str) -> set[str]:
    return {line.strip() for line in value.splitlines() if line.strip()}


def test_every_wiring_module_is_forbidden_to_the_folders() -> None:
    section = contract("wiring-not-imported")
    forbidden = listed(section["forbidden_modules"])
    missing = sorted(wiring_modules() - forbidden)
    assert not missing, f"add these wiring modules to .importlinter [wiring-not-imported]: {missing}"
    gone = sorted(m for m in forbidden if m not in wiring_modules())
    assert not gone, f"no such wiring module any more, drop from .importlinter: {gone}"
    assert listed(section["source_modules"]) == {f"retail_sync.{f}" for f in FOLDERS}


def test_lint_imports_keeps_every_contract() -> None:
    pytest.importorskip("importlinter", reason="the dev extra (make lint) installs import-linter")
    exe = Path(sys.executable).with_name("lint-imports")
    command = [str(exe)] if exe.exists() else [shutil.which("lint-imports") or "lint-imports"]
    run = subprocess.run([*command, str(CONFIG), "--no-cache"], cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr


# --- cycles -----------------------------------------------------------------------------------


def strongly_connected(nodes: Iterable[str], edges: Mapping[str, set[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components with more than one member (the cycles)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0

    def visit(root: str) -> None:  # iterative: the module graph is deep enough for recursion
        nonlocal counter
        work = [(root, iter(sorted(edges.get(root, ()))))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, successors = work[-1]
            advanced = False
            for nxt in successors:
                if nxt not in index:
                    index[nxt] = low[nxt] = counter
                    counter += 1
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, iter(sorted(edges.get(nxt, ())))))
                    advanced = True
                    break
                if nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
            if advanced:
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))

    for node in sorted(nodes):
        if node not in index:
            visit(node)
    return found


def test_the_cycle_finder_finds_cycles() -> None:
    edges = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": {"e"}, "e": {"d"}, "f": {"a"}}
    assert sorted(strongly_connected("abcdef", edges)) == [["a", "b", "c"], ["d", "e"]]
    assert strongly_connected("abc", {"a": {"b"}, "b": {"c"}}) == []


def group_of(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] != "retail_sync":
        return None  # third-party (squashed)
    if len(parts) > 1 and parts[1] in FOLDERS:
        return parts[1]
    return WIRING


@pytest.fixture(scope="module")
def graph() -> Any:  # grimp's ImportGraph
    grimp = pytest.importorskip("grimp", reason="the dev extra (make lint) installs grimp")
    return grimp.build_graph("retail_sync")


def _examples(graph: Any, pairs: set[tuple[str, str]], limit: int = 3) -> list[str]:
    shown = []
    for importer, imported in sorted(pairs)[:limit]:
        details = graph.get_import_details(importer=importer, imported=imported)
        line = details[0]["line_number"] if details else "?"
        shown.append(f"{importer} -> {imported} (l.{line})")
    return shown


def test_no_cycle_between_the_top_packages(graph: Any) -> None:
    edges: dict[str, set[str]] = {}
    why: dict[tuple[str, str], set[tuple[str, str]]] = {}
    for importer in graph.modules:
        source = group_of(importer)
        if source is None:
            continue
        for imported in graph.find_modules_directly_imported_by(importer):
            target = group_of(imported)
            if target is None or target == source:
                continue
            edges.setdefault(source, set()).add(target)
            why.setdefault((source, target), set()).add((importer, imported))
    cycles = strongly_connected([*FOLDERS, WIRING], edges)
    upward = [f"{a} -> {b}: " + "; ".join(_examples(graph, why[(a, b)]))
              for members in cycles for a in members for b in members
              if (a, b) in why and RANK[a] >= RANK[b]]  # the imports against the layers
    assert not cycles, f"package cycles {cycles}, upward imports:\n" + "\n".join(upward)


@pytest.mark.parametrize("package", ["retail_sync.agents", "retail_sync.streams.rules"])
def test_no_module_cycle_inside(graph: Any, package: str) -> None:
    inside = {m for m in graph.modules if m == package or m.startswith(package + ".")}
    edges = {m: {i for i in graph.find_modules_directly_imported_by(m) if i in inside}
             for m in inside}
    cycles = strongly_connected(inside, edges)
    report = []
    for members in cycles:
        pairs = {(a, b) for a in members for b in edges[a] if b in members}
        report.extend(_examples(graph, pairs, limit=10))
    assert not cycles, f"module cycles in {package}: {cycles}\n" + "\n".join(report)
