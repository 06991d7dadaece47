"""``Frozen.model_copy`` (streams/models.py, issue 16): the shallow copy done by hand gives what
pydantic's ``model_copy`` gives, for a sample of every record kind of every codec, with and
without ``update``; a deep copy is still pydantic's."""

from __future__ import annotations

import pytest
from pydantic import BaseModel, ValidationError

from retail_sync.streams import schemas
from retail_sync.streams.codecs import CODECS
from retail_sync.streams.models import Frozen


def _records() -> list[Frozen]:
    out = []
    for adapter in CODECS.values():
        for member in schemas.members(adapter):
            record = adapter.validate_python(schemas.sample_of(member))
            if isinstance(record, Frozen):
                out.append(record)
    return out


def _same(a: BaseModel, b: BaseModel) -> None:
    assert type(a) is type(b)
    assert a == b
    assert a.__dict__ == b.__dict__
    assert a.__pydantic_fields_set__ == b.__pydantic_fields_set__
    assert a.__pydantic_extra__ == b.__pydantic_extra__
    assert a.__pydantic_private__ == b.__pydantic_private__
    assert a.model_dump_json() == b.model_dump_json()


@pytest.mark.parametrize("record", _records(), ids=lambda r: type(r).__name__)
def test_a_copy_is_pydantic_s_copy(record: Frozen) -> None:
    ours, theirs = record.model_copy(), BaseModel.model_copy(record)
    _same(ours, theirs)
    assert ours is not record and ours.__dict__ is not record.__dict__
    assert ours.__pydantic_fields_set__ is not record.__pydantic_fields_set__
    name = next(iter(type(record).model_fields))
    update = {name: getattr(record, name)}
    unset = [n for n in type(record).model_fields if n not in record.__pydantic_fields_set__]
    if unset:
        update[unset[0]] = getattr(record, unset[0])
    _same(record.model_copy(update=update), BaseModel.model_copy(record, update=update))


def test_an_update_changes_only_the_copy_and_marks_its_fields_set() -> None:
    from retail_sync.streams.models import Money
    money = Money(amount=1, currency="EUR")
    changed = money.model_copy(update={"currency": "USD"})
    assert (money.currency, changed.currency) == ("EUR", "USD")
    assert changed.__pydantic_fields_set__ == {"amount", "currency"}
    with pytest.raises(ValidationError):  # still frozen
        changed.currency = "GBP"  # type: ignore[misc]


def test_a_deep_copy_is_pydantic_s() -> None:
    record = next(r for r in _records() if type(r).__name__ == "OrderState")
    deep = record.model_copy(deep=True)
    assert deep == record and deep.order is not record.order
