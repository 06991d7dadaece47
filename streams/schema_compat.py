"""Backward compatibility of two JSON Schemas of one codec (``streams/schemas.py`` checks every
new version against the previous one with ``compatibility_problems``).

A reader of the new schema must read every record valid under the old one: no field removed or
renamed (where extra fields are refused), no required field added without a default, no type,
enum, constant, pattern, format or bound narrowed, no union member dropped.
"""

from __future__ import annotations

from typing import Any

import orjson

_NARROWING = {"maxLength": "lt", "maxItems": "lt", "maximum": "lt", "exclusiveMaximum": "lt",
              "maxProperties": "lt", "minLength": "gt", "minItems": "gt", "minimum": "gt",
              "exclusiveMinimum": "gt", "minProperties": "gt"}
_ANNOTATIONS = {"title", "description", "default", "examples", "$id", "$schema",
                "x-schema-version", "deprecated", "readOnly", "writeOnly", "$defs"}


def _resolve(schema: dict[str, Any], root: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        schema = root.get("$defs", {})[schema["$ref"].rsplit("/", 1)[-1]]
    return schema


def _branches(schema: dict[str, Any], root: dict[str, Any]) -> list[dict[str, Any]]:
    schema = _resolve(schema, root)
    for key in ("anyOf", "oneOf"):
        if key in schema:
            return [b for s in schema[key] for b in _branches(s, root)]
    return [schema]


def _types(schema: dict[str, Any]) -> set[str]:
    t = schema.get("type")
    if t is None:
        return {"any"}
    return set(t) if isinstance(t, list) else {t}


def compatibility_problems(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Why a reader of ``new`` could not read every record valid under ``old`` (empty: it
    can): fields removed or renamed, a required field added without a default, a type, enum,
    constant, pattern or bound narrowed, a union member dropped."""
    return _problems(old, new, old, new, "$", set())


def _problems(old: dict[str, Any], new: dict[str, Any], old_root: dict[str, Any],
              new_root: dict[str, Any], path: str, seen: set[tuple[int, int]]) -> list[str]:
    olds, news = _branches(old, old_root), _branches(new, new_root)
    if len(olds) > 1 or len(news) > 1:
        return _branch_problems(olds, news, old_root, new_root, path, seen)
    o, n = olds[0], news[0]
    key = (id(o), id(n))
    if key in seen:
        return []
    seen = seen | {key}
    ot, nt = _types(o), _types(n)
    problems = _type_problems(o, n, ot, nt, path) + _constraint_problems(o, n, path)
    if "object" in ot & nt:
        problems += _object_problems(o, n, old_root, new_root, path, seen)
    if "array" in ot & nt and isinstance(o.get("items"), dict) and isinstance(n.get("items"), dict):
        problems += _problems(o["items"], n["items"], old_root, new_root, f"{path}[]", seen)
    return problems


def _branch_problems(olds: list[dict[str, Any]], news: list[dict[str, Any]],
                     old_root: dict[str, Any], new_root: dict[str, Any], path: str,
                     seen: set[tuple[int, int]]) -> list[str]:
    """Every old branch (a union member) must be accepted by some new one."""
    problems: list[str] = []
    for i, ob in enumerate(olds):
        tries = [_problems(ob, nb, old_root, new_root, path, seen) for nb in news]
        best = min(tries, key=len)
        if best:
            label = _label(ob) or f"branch {i}"
            problems.append(f"{path}: {label} is no longer accepted: " + "; ".join(best[:3]))
    return problems


def _type_problems(o: dict[str, Any], n: dict[str, Any], ot: set[str], nt: set[str],
                   path: str) -> list[str]:
    problems = []
    if "any" not in nt:
        lost = (ot - nt) - ({"integer"} if "number" in nt else set())
        if "any" in ot or lost:
            problems.append(f"{path}: type narrowed from {sorted(ot)} to {sorted(nt)}")
    new_values, old_values = _values(n), _values(o)
    if new_values is not None:  # an enum or a constant: every old value must stay
        if old_values is None:
            problems.append(f"{path}: enum lost its openness (now only {sorted(new_values)})")
        elif old_values - new_values:
            problems.append(f"{path}: enum lost {sorted(old_values - new_values)}")
    return problems


def _constraint_problems(o: dict[str, Any], n: dict[str, Any], path: str) -> list[str]:
    problems = []
    if n.get("pattern") and n.get("pattern") != o.get("pattern"):
        problems.append(f"{path}: pattern {o.get('pattern')!r} became {n['pattern']!r}")
    if n.get("format") and n.get("format") != o.get("format"):
        problems.append(f"{path}: format {o.get('format')!r} became {n['format']!r}")
    for bound, way in _NARROWING.items():
        if bound in n and (bound not in o or (n[bound] < o[bound] if way == "lt"
                                              else n[bound] > o[bound])):
            problems.append(f"{path}: {bound} narrowed from {o.get(bound)!r} to {n[bound]!r}")
    return problems


def _object_problems(o: dict[str, Any], n: dict[str, Any], old_root: dict[str, Any],
                     new_root: dict[str, Any], path: str,
                     seen: set[tuple[int, int]]) -> list[str]:
    problems = []
    oprops, nprops = o.get("properties", {}), n.get("properties", {})
    for name in oprops:
        if name not in nprops and n.get("additionalProperties") is False:
            problems.append(f"{path}.{name}: field removed or renamed")
    for name in set(n.get("required", [])) - set(o.get("required", [])):
        problems.append(f"{path}.{name}: required field added without a default")
    for name in oprops.keys() & nprops.keys():
        problems += _problems(oprops[name], nprops[name], old_root, new_root,
                              f"{path}.{name}", seen)
    oa, na = o.get("additionalProperties"), n.get("additionalProperties")
    if isinstance(oa, dict) and isinstance(na, dict):
        problems += _problems(oa, na, old_root, new_root, f"{path}.*", seen)
    return problems


def _values(schema: dict[str, Any]) -> set[str] | None:
    if "const" in schema:
        return {orjson.dumps(schema["const"]).decode()}
    if "enum" in schema:
        return {orjson.dumps(v).decode() for v in schema["enum"]}
    return None


def _label(schema: dict[str, Any]) -> str | None:
    kind = schema.get("properties", {}).get("kind", {})
    if "const" in kind:
        return f"kind {kind['const']!r}"
    return schema.get("title")
