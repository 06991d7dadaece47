"""Versioned schemas of every record on Kafka (issue 13): versions, JSON Schema export, checks.

Each codec of ``streams.codecs`` (one per topic value type: ``rs.order_event``, ``rs.erp_request``,
...) has a schema version, ``VERSIONS`` below (a codec not listed is at version 1). The codec
writes it into every record as the first key, ``{"schema_version": N, ...}``; a record without it
(written before versions existed) is version 1. Reading:

* a reader of version N reads every version <= N: later versions may only add fields with
  defaults, widen types, add enum values or union members (``check_compatible``);
* a reader of version N reads version N+1 too: fields it does not know (``extra_forbidden``
  errors only) are dropped when the record's version is newer than the reader's, so a rolling
  deploy does not turn new records into decode exceptions on old workers. A record that claims
  the reader's own version and carries unknown fields is still refused (corruption, not a newer
  writer). A new event kind cannot be understood by an old reader: deploy readers first.

``retail-sync schemas export`` writes ``schemas/<codec>/v<N>.schema.json`` (JSON Schema 2020-12
of what a reader accepts) and ``v<N>.samples.jsonl`` (one record of every member type, as the
codec writes it) for the current version of each codec; committed versions are never rewritten.
``tests/unit/test_event_schemas.py`` fails when a model changed without a version bump and
export, when a version is not backward compatible with the previous one, or when a stored sample
of any version no longer decodes.
"""

from __future__ import annotations

import types
import typing
from datetime import UTC, datetime
from decimal import Decimal
from enum import Enum
from pathlib import Path
from typing import Any, Literal, Union

import orjson
from pydantic import AwareDatetime, BaseModel, TypeAdapter

from retail_sync.streams.schema_compat import compatibility_problems

VERSION_KEY = "schema_version"
#: codec name -> its current schema version (bump when its models change; then export)
VERSIONS: dict[str, int] = {
    "rs.order_event": 3,  # v2: RetryErpPost, RetryWmsRelease (a replay goes through the owner);
    # v3: OrderEvents (several order events in one record, issue 16)
    "rs.erp_request": 2,  # v2: ErpBatch (several ERP requests in one record, issue 16)
    "rs.wms_command": 2,  # v2: WmsBatch (several warehouse commands in one record, issue 16)
    "rs.stock_event": 2,  # v2: StockBatch (several stock commands in one record, issue 16)
    "rs.stock_record": 3,  # v2: StockState.seq_unit (positions, issue 16); v3: StockState.open
    # (open lines in the SKU's record) and Reservation.reserved_seq (issue 16)
    "rs.channel_command": 2,  # v2: MarketplaceCancel's lines are LineUnits (was CancelLineRequest,
    # the same fields): one type per fact, issue 15; the records are the same
}
DEFAULT_DIR = Path(__file__).resolve().parent.parent / "schemas"
JSON_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"


def version_of(codec: str) -> int:
    return VERSIONS.get(codec, 1)


# --- the schema of one codec -----------------------------------------------------------------


def members(adapter: TypeAdapter[Any]) -> list[type[BaseModel]]:
    """The model classes a codec's type is made of (the members of a tagged union)."""
    return _members(adapter._type)  # noqa: SLF001 - the annotation the adapter was built from


def _members(tp: Any) -> list[type[BaseModel]]:
    if typing.get_origin(tp) is typing.Annotated:
        tp = typing.get_args(tp)[0]
    if typing.get_origin(tp) in (Union, types.UnionType):  # nested unions: their members
        return [m for arg in typing.get_args(tp) for m in _members(arg)]
    return [tp] if isinstance(tp, type) and issubclass(tp, BaseModel) else []


def current_schema(codec: str) -> dict[str, Any]:
    """JSON Schema (validation mode: what a reader accepts) of ``codec``'s records, with the
    ``schema_version`` key the codec adds to each record."""
    from retail_sync.streams.codecs import CODECS

    schema = CODECS[codec].json_schema(mode="validation")
    defs = schema.get("$defs", {})
    version_prop = {"type": "integer", "minimum": 1, "default": 1,
                    "description": "schema version of the record (absent: 1)"}
    top = [schema] if "properties" in schema else [
        defs[ref["$ref"].rsplit("/", 1)[-1]] for ref in schema.get("oneOf", schema.get("anyOf", []))
        if "$ref" in ref]
    for obj in top:
        obj["properties"] = {VERSION_KEY: version_prop, **obj.get("properties", {})}
    return {"$schema": JSON_SCHEMA_DIALECT, "$id": f"retail-sync/{codec}/v{version_of(codec)}",
            "title": codec, "x-schema-version": version_of(codec), **schema}


# --- sample records --------------------------------------------------------------------------

_SAMPLE_TIME = datetime(2024, 6, 1, 12, 0, tzinfo=UTC)
_PATTERN_SAMPLES = {r"^[A-Z]{3}$": "USD", r"^[A-Z]{2}$": "US",
                    r"^[a-z][a-z0-9_-]{1,31}$": "shopify"}


def _sample_value(annotation: Any, field_name: str) -> Any:
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Annotated:
        return _annotated_sample(args, field_name)
    if origin in (Union, types.UnionType):
        non_none = [a for a in args if a is not type(None)]
        return _sample_value(non_none[0], field_name)
    if origin is Literal:
        return args[0]
    if origin in (list, tuple, set, frozenset):
        return [_sample_value(args[0] if args else str, field_name)]
    if origin is dict:
        return {"1": _sample_value(args[1], field_name)}
    if annotation is AwareDatetime:
        return _SAMPLE_TIME.isoformat()
    if isinstance(annotation, type):
        return _class_sample(annotation, field_name)
    return f"sample-{field_name}"


def _annotated_sample(args: tuple[Any, ...], field_name: str) -> Any:
    base, *meta = args
    for m in meta:
        pattern = getattr(m, "pattern", None) or next(
            (getattr(x, "pattern", None) for x in getattr(m, "metadata", []) if
             getattr(x, "pattern", None)), None)
        if pattern in _PATTERN_SAMPLES:
            return _PATTERN_SAMPLES[pattern]
    return _sample_value(base, field_name)


#: a sample per plain class, the first that matches (bool before int: a bool is an int)
_CLASS_SAMPLES: tuple[tuple[type, Any], ...] = (
    (bool, True), (int, 1), (float, 1.5), (Decimal, "1.25"), (datetime, _SAMPLE_TIME.isoformat()))


def _class_sample(annotation: type, field_name: str) -> Any:
    if issubclass(annotation, BaseModel):
        return sample_of(annotation)
    if issubclass(annotation, Enum):
        return next(iter(annotation)).value
    if issubclass(annotation, tuple) and hasattr(annotation, "_fields"):  # a NamedTuple: an array
        hints = typing.get_type_hints(annotation, include_extras=True)
        return [_sample_value(hints[name], name) for name in annotation._fields]
    for cls, sample in _CLASS_SAMPLES:
        if issubclass(annotation, cls):
            return sample
    return f"sample-{field_name}"  # str and anything else


def sample_of(model: type[BaseModel]) -> dict[str, Any]:
    """A record of ``model`` with every field set (optional ones too), as JSON-ready data."""
    data: dict[str, Any] = {}
    for name, field in model.model_fields.items():
        annotation = field.annotation
        pattern = next((getattr(m, "pattern", None) for m in field.metadata
                        if getattr(m, "pattern", None)), None)
        if pattern in _PATTERN_SAMPLES:
            data[name] = _PATTERN_SAMPLES[pattern]
        elif name == "currency" or name.endswith("_currency"):
            data[name] = "USD"
        else:
            data[name] = _sample_value(annotation, name)
    sample: dict[str, Any] = orjson.loads(model.model_validate(data).model_dump_json())
    return sample


def samples(codec: str) -> list[bytes]:
    """One record of every member type of ``codec``, encoded as the codec writes it."""
    from retail_sync.streams.codecs import CODECS, encode

    adapter = CODECS[codec]
    return [encode(codec, adapter.validate_python(sample_of(m))) for m in members(adapter)]


# --- files -----------------------------------------------------------------------------------


def codec_dir(codec: str, root: Path = DEFAULT_DIR) -> Path:
    return root / codec


def committed_versions(codec: str, root: Path = DEFAULT_DIR) -> list[int]:
    folder = codec_dir(codec, root)
    if not folder.is_dir():
        return []
    return sorted(int(p.name[1:].split(".")[0]) for p in folder.glob("v*.schema.json"))


def load_committed(codec: str, version: int, root: Path = DEFAULT_DIR) -> dict[str, Any]:
    schema: dict[str, Any] = orjson.loads(
        (codec_dir(codec, root) / f"v{version}.schema.json").read_bytes())
    return schema


def load_samples(codec: str, version: int, root: Path = DEFAULT_DIR) -> list[bytes]:
    path = codec_dir(codec, root) / f"v{version}.samples.jsonl"
    return [line for line in path.read_bytes().splitlines() if line.strip()]


def _dump(schema: dict[str, Any]) -> bytes:
    return orjson.dumps(schema, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n"


_MAPS = {"properties", "$defs", "patternProperties", "dependentSchemas"}


def essence(schema: Any) -> Any:
    """The schema without its prose (descriptions, titles, examples): what a change of a
    docstring or a comment must not turn into a new version."""
    if isinstance(schema, list):
        return [essence(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {}
    for key, value in schema.items():
        if key in ("description", "title", "examples", "$comment"):
            continue
        if key in _MAPS and isinstance(value, dict):
            out[key] = {name: essence(s) for name, s in value.items()}
        else:
            out[key] = essence(value)
    return out


def _same(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return _dump(essence(a)) == _dump(essence(b))


def check(root: Path = DEFAULT_DIR) -> list[str]:
    """Every problem of the committed schemas against the code (empty: all is well)."""
    from retail_sync.streams.codecs import CODECS

    problems: list[str] = []
    for codec in CODECS:
        version = version_of(codec)
        have = committed_versions(codec, root)
        current = current_schema(codec)
        for earlier, later in zip(have, have[1:], strict=False):
            for p in compatibility_problems(load_committed(codec, earlier, root),
                                            load_committed(codec, later, root)):
                problems.append(f"{codec} v{earlier} -> v{later}: {p}")
        if not have:
            problems.append(f"{codec}: no schema in {codec_dir(codec, root)}; run "
                            "`retail-sync schemas export`")
            continue
        latest = have[-1]
        if version < latest:
            problems.append(f"{codec}: the code is at version {version} but v{latest} is "
                            "committed: VERSIONS went backwards")
            continue
        committed = load_committed(codec, latest, root)
        for p in compatibility_problems(committed, current):
            problems.append(f"{codec} v{latest} -> the code (v{version}): {p}")
        if version == latest and not _same(committed, current):
            problems.append(f"{codec}: the models changed since v{latest} was exported: bump "
                            f"streams.schemas.VERSIONS[{codec!r}] to {latest + 1} and run "
                            "`retail-sync schemas export`")
        elif version == latest and _dump(committed) != _dump(current):
            problems.append(f"{codec}: v{latest}'s descriptions changed: run "
                            "`retail-sync schemas export` (no new version needed)")
        elif version > latest:
            problems.append(f"{codec}: version {version} is not exported yet: run "
                            "`retail-sync schemas export`")
    return problems


def export(root: Path = DEFAULT_DIR) -> list[str]:
    """Write the current version's schema and samples of every codec that has none yet; the
    lines to print. Raises ValueError (nothing written) when a change is not compatible or a
    committed version would have to be rewritten."""
    from retail_sync.streams.codecs import CODECS

    planned: list[tuple[str, int, dict[str, Any]]] = []
    prose: list[tuple[str, int, dict[str, Any]]] = []
    errors: list[str] = []
    for codec in CODECS:
        version, current = version_of(codec), current_schema(codec)
        have = committed_versions(codec, root)
        if have and version in have:
            committed = load_committed(codec, version, root)
            if not _same(committed, current):
                errors.append(f"{codec}: v{version} is committed and the models differ from it: "
                              f"bump streams.schemas.VERSIONS[{codec!r}] to {have[-1] + 1}")
            elif _dump(committed) != _dump(current):  # prose only: rewritten in place
                prose.append((codec, version, current))
            continue
        if have and version < have[-1]:
            errors.append(f"{codec}: the code is at v{version}, v{have[-1]} is committed")
            continue
        if have:
            errors += [f"{codec} v{have[-1]} -> v{version}: {p}" for p in compatibility_problems(
                load_committed(codec, have[-1], root), current)]
        planned.append((codec, version, current))
    if errors:
        raise ValueError("not exported:\n  " + "\n  ".join(errors))
    lines = []
    for codec, version, schema in prose:
        (codec_dir(codec, root) / f"v{version}.schema.json").write_bytes(_dump(schema))
        lines.append(f"rewrote the descriptions of {codec} v{version}")
    for codec, version, schema in planned:
        folder = codec_dir(codec, root)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"v{version}.schema.json").write_bytes(_dump(schema))
        (folder / f"v{version}.samples.jsonl").write_bytes(b"\n".join(samples(codec)) + b"\n")
        lines.append(f"wrote {folder.relative_to(root.parent) if root.parent in folder.parents else folder}"
                     f"/v{version}.schema.json and samples")
    if not lines:
        lines.append(f"every codec's current version is already in {root}")
    return lines
