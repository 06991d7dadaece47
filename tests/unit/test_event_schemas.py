"""Versioned event schemas (streams/schemas.py, streams/codecs.py; issue 13).

* the committed schemas/ match the models (a change needs a version bump and an export);
* every committed version is backward compatible with the one before, and the code with the
  latest committed one (a reader of N+1 reads N; additive-with-default changes pass);
* every stored sample record of every version decodes with today's code, also without its
  version key (records written before versions existed are version 1);
* a reader of version N reads N+1: unknown fields of a newer record are dropped, not refused.
"""

from __future__ import annotations

from typing import Annotated, Literal

import orjson
import pytest
from faust.serializers import codecs as faust_codecs
from pydantic import Field, TypeAdapter, ValidationError

from retail_sync.streams import codecs, schemas
from retail_sync.streams.codecs import CODECS
from retail_sync.streams.commands import PollTick
from retail_sync.streams.models import Frozen, record_json, utcnow


def test_committed_schemas_match_the_models() -> None:
    assert schemas.check() == []


@pytest.mark.parametrize("codec", sorted(CODECS))
def test_every_stored_sample_of_every_version_decodes(codec: str) -> None:
    versions = schemas.committed_versions(codec)
    assert versions, f"no schemas/{codec}: run `retail-sync schemas export`"
    members = {m.__name__ for m in schemas.members(CODECS[codec])}
    for version in versions:
        samples = schemas.load_samples(codec, version)
        decoded = [codecs.decode(codec, s) for s in samples]
        assert {type(d).__name__ for d in decoded} <= members
        for sample in samples:  # a record of before the versions: no key, read as version 1
            data = orjson.loads(sample)
            assert data.pop("schema_version") == version
            if version == 1:
                codecs.decode(codec, orjson.dumps(data))
    latest = schemas.load_samples(codec, versions[-1])
    assert len(latest) == len(members)  # one of each kind


def test_the_codec_writes_its_version_first() -> None:
    tick = PollTick(channel="amazon", requested_at=utcnow())
    value = faust_codecs.get_codec("rs.poll_tick").dumps(tick)
    assert value.startswith(b'{"schema_version":%d,"channel":"amazon"' %
                            schemas.version_of("rs.poll_tick"))
    assert faust_codecs.get_codec("rs.poll_tick").loads(value) == tick
    assert codecs.decode("rs.poll_tick", tick.model_dump_json().encode()) == tick  # no version
    # the key anywhere in the object (another writer) is understood too
    moved = orjson.dumps({**orjson.loads(tick.model_dump_json()), "schema_version": 1})
    assert codecs.decode("rs.poll_tick", moved) == tick


def test_a_reader_of_version_n_reads_n_plus_1() -> None:
    codec = "rs.order_event"
    reader = schemas.version_of(codec)
    sample = orjson.loads(schemas.load_samples(codec, schemas.committed_versions(codec)[-1])[0])
    # a newer writer added a field at the top and one inside the order
    newer = {**sample, "schema_version": reader + 1, "priority": "high",
             "order": {**sample["order"], "loyalty_tier": "gold"}}
    event = codecs.decode(codec, orjson.dumps(newer))
    assert event.order_key == sample["order_key"] and not hasattr(event, "priority")
    # the same unknown fields in a record that claims this reader's version: refused
    with pytest.raises(ValidationError):
        codecs.decode(codec, orjson.dumps({**newer, "schema_version": reader}))
    # a newer record that is wrong otherwise (a field of ours has a bad value): refused
    with pytest.raises(ValidationError):
        codecs.decode(codec, orjson.dumps({**newer, "order_key": 5}))


# --- the compatibility rules, on models made up for the test ----------------------------------


class Old(Frozen):
    kind: Literal["a"] = "a"
    key: str
    count: int = 0
    note: str | None = None
    status: Literal["new", "done"] = "new"
    tags: list[str] = Field(default_factory=list)


def _schema(model: object) -> dict:
    return TypeAdapter(model).json_schema()


def _problems(new_model: object) -> list[str]:
    return schemas.compatibility_problems(_schema(Old), _schema(new_model))


def test_additive_changes_with_defaults_are_compatible() -> None:
    class New(Old):
        added: str = "x"
        more: list[int] = Field(default_factory=list)
        note: str | int | None = None  # widened
        status: Literal["new", "done", "held"] = "new"  # an enum value added

    assert _problems(New) == []


class Other(Frozen):
    kind: Literal["b"] = "b"
    key: str


def test_a_new_union_member_is_compatible_and_a_dropped_one_is_not() -> None:
    old = _schema(Annotated[Old | Other, Field(discriminator="kind")])

    class Third(Frozen):
        kind: Literal["c"] = "c"

    wider = _schema(Annotated[Old | Other | Third, Field(discriminator="kind")])
    assert schemas.compatibility_problems(old, wider) == []
    problems = schemas.compatibility_problems(old, _schema(Old))
    assert any("kind 'b' is no longer accepted" in p for p in problems), problems


@pytest.mark.parametrize("change, expected", [
    ("required", "required field added without a default"),
    ("removed", "field removed or renamed"),
    ("renamed", "field removed or renamed"),
    ("narrowed", "type narrowed"),
    ("optional_to_required", "note"),
    ("enum", "enum lost"),
    ("bound", "minLength narrowed"),
])
def test_incompatible_changes_are_named(change: str, expected: str) -> None:
    fields: dict = {"kind": (Literal["a"], "a"), "key": (str, ...), "count": (int, 0),
                    "note": (str | None, None), "status": (Literal["new", "done"], "new"),
                    "tags": (list[str], [])}
    if change == "required":
        fields["added"] = (str, ...)
    elif change == "removed":
        del fields["count"]
    elif change == "renamed":
        fields["total"] = fields.pop("count")
    elif change == "narrowed":
        fields["key"] = (int, ...)
    elif change == "optional_to_required":
        fields["note"] = (str, ...)
    elif change == "enum":
        fields["status"] = (Literal["new"], "new")
    elif change == "bound":
        fields["key"] = (Annotated[str, Field(min_length=3)], ...)
    from pydantic import create_model

    new = create_model("New", __base__=Frozen, **fields)
    problems = _problems(new)
    assert any(expected in p for p in problems), problems


def test_export_writes_each_version_once_and_refuses_incompatible_changes(tmp_path, monkeypatch) -> None:
    assert schemas.export(tmp_path)[0].startswith("wrote")
    assert schemas.check(tmp_path) == []
    assert schemas.export(tmp_path) == [f"every codec's current version is already in {tmp_path}"]

    class Tick(Frozen):  # a required field added: not compatible with the exported v1
        channel: str
        requested_at: str
        reason: str

    monkeypatch.setitem(CODECS, "rs.poll_tick", TypeAdapter(Tick))
    problems = schemas.check(tmp_path)
    assert any("rs.poll_tick" in p and "required field added" in p for p in problems), problems
    monkeypatch.setitem(schemas.VERSIONS, "rs.poll_tick", 2)
    with pytest.raises(ValueError, match="reason: required field added without a default"):
        schemas.export(tmp_path)
    assert schemas.committed_versions("rs.poll_tick", tmp_path) == [1]

    class CompatibleTick(Frozen):  # with a default: exported as v2, v1 kept
        channel: str
        requested_at: str
        reason: str = "timer"

    monkeypatch.setitem(CODECS, "rs.poll_tick", TypeAdapter(CompatibleTick))
    assert "wrote" in "".join(schemas.export(tmp_path))
    assert schemas.committed_versions("rs.poll_tick", tmp_path) == [1, 2]
    assert schemas.check(tmp_path) == []


@pytest.mark.parametrize("codec", sorted(CODECS))
def test_a_model_s_own_faster_writing_is_its_json(codec: str) -> None:
    """The records with a ``wire_json`` of their own (issue 16: order states and ERP requests
    write their order once per order object, SKU records their open lines by orjson) write the
    JSON ``model_dump_json`` writes, and read back as the record they were."""
    adapter = CODECS[codec]
    for member in schemas.members(adapter):
        record = adapter.validate_python(schemas.sample_of(member))
        written = record_json(record)
        assert orjson.loads(written) == orjson.loads(record.model_dump_json())
        assert codecs.decode(codec, codecs.encode(codec, record)) == record
        again = codecs.encode(codec, record)  # a second writing (an order's cached JSON) too
        assert codecs.decode(codec, again) == record


def test_an_erp_batch_writes_every_request() -> None:
    from retail_sync.streams.commands import ERP_COMMAND, ErpBatch

    requests = [ERP_COMMAND.validate_python(schemas.sample_of(m))
                for m in schemas.members(ERP_COMMAND)]
    batch = ErpBatch(requests=[*requests, *requests])
    assert orjson.loads(record_json(batch)) == orjson.loads(batch.model_dump_json())
    assert codecs.decode("rs.erp_request", codecs.encode("rs.erp_request", batch)) == batch


def test_an_order_is_written_once_while_it_lives() -> None:
    import gc

    from retail_sync.streams.models import _ORDER_JSON, Order, order_json

    order = Order.model_validate(schemas.sample_of(Order))
    first = order_json(order)
    assert order_json(order) is first and orjson.loads(first) == orjson.loads(
        order.model_dump_json())
    other = order.model_copy(update={"marketplace_order_id": "another"})
    assert orjson.loads(order_json(other))["marketplace_order_id"] == "another"
    held = len(_ORDER_JSON)
    del order, other
    gc.collect()
    assert len(_ORDER_JSON) == held - 2  # gone with their orders


def test_a_sku_record_s_open_lines_are_its_json_through_the_line_cache(monkeypatch) -> None:
    """An open line's JSON is kept while the same line object is open; a new line object under
    the key (reserved again) is written afresh, and a full cache starts over."""
    from datetime import UTC, datetime, timedelta

    from retail_sync.streams import stock

    at = datetime(2026, 12, 5, 20, 0, tzinfo=UTC)
    lines = {f"SKU|shopify:{i}#1": stock.OpenLine(f"shopify:{i}", "shopify", "1", 2, 1, i,
                                                  at + timedelta(microseconds=i))
             for i in range(5)}
    state = stock.StockState(sku="SKU", open=lines)
    assert orjson.loads(state.wire_json()) == orjson.loads(state.model_dump_json())
    again = {**lines, "SKU|shopify:3#1": lines["SKU|shopify:3#1"]._replace(quantity=2)}
    state = state.model_copy(update={"open": again})
    assert orjson.loads(state.wire_json())["open"]["SKU|shopify:3#1"][4] == 2
    monkeypatch.setattr(stock, "_OPEN_JSON_MAX", 2)
    assert orjson.loads(state.wire_json()) == orjson.loads(state.model_dump_json())
    assert len(stock._OPEN_JSON) == 5  # cleared past the bound, then written afresh
