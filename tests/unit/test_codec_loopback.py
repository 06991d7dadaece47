"""A worker reads back the records it wrote without decoding them again (streams/codecs.py
``Loopback``, issue 16).

* a record read as the bytes this codec wrote is the object that was written, once: a second
  read of the same bytes (a redelivery) decodes them, and so does a read of bytes it never wrote;
* the budget holds: the oldest records go first, a record too large is not kept, 0 is off;
* what makes it safe: decoding what a loopback codec writes gives an equal object of the same
  type, for every kind of record and every kind of item in a batch record.
"""

from __future__ import annotations

import pytest
from faust.serializers import codecs as faust_codecs

from retail_sync.streams import codecs, schemas
from retail_sync.streams.codecs import CODECS, LOOPBACK_CODECS, Loopback
from retail_sync.streams.commands import ERP_COMMAND, WMS_COMMAND, ErpBatch, StockBatch, WmsBatch
from retail_sync.streams.events import ORDER_EVENT, STOCK_EVENT, OrderEvents


@pytest.fixture
def loopback():
    codecs.set_loopback(1 << 20)
    yield
    codecs.set_loopback(0)


def _samples(codec: str) -> list:
    adapter = CODECS[codec]
    return [adapter.validate_python(schemas.sample_of(m)) for m in schemas.members(adapter)]


@pytest.mark.parametrize("codec", LOOPBACK_CODECS)
def test_a_record_read_back_is_the_written_object_once(codec: str, loopback) -> None:
    faust_codec = faust_codecs.get_codec(codec)
    for record in _samples(codec):
        written = faust_codec.dumps(record)
        read = faust_codec.loads(bytes(bytearray(written)))  # the consumer's own bytes object
        assert read is record
        again = faust_codec.loads(bytes(bytearray(written)))  # a redelivery: decoded
        assert again == record and again is not record


def test_bytes_it_never_wrote_are_decoded(loopback) -> None:
    codec = faust_codecs.get_codec("rs.order_event")
    record = _samples("rs.order_event")[0]
    other = codecs.encode("rs.order_event", record)  # written, then taken here
    assert codec.loads(other) is record
    elsewhere = record.model_dump_json().encode()  # another writer: no version key
    assert codec.loads(elsewhere) == record
    assert codec.loads(elsewhere) is not record


def test_off_decodes_everything() -> None:
    codecs.set_loopback(0)
    codec = faust_codecs.get_codec("rs.stock_event")
    assert codec.loopback is None
    record = _samples("rs.stock_event")[0]
    read = codec.loads(codec.dumps(record))
    assert read == record and read is not record


def test_the_budget_drops_the_oldest_and_skips_the_too_large() -> None:
    box = Loopback(max_bytes=800)
    records = [(b"%03d" % i * 20, object()) for i in range(20)]  # 60 bytes each
    for data, obj in records:
        box.keep(data, obj)
    assert len(box) == 13  # 13 x 60 <= 800
    assert box.take(records[0][0]) is None  # the oldest went first
    assert box.take(records[-1][0]) is records[-1][1]
    assert box.take(records[-1][0]) is None  # taken once
    box.keep(b"x" * 401, object())  # more than half the budget: not kept
    assert box.take(b"x" * 401) is None
    box.keep(b"y" * 400, object())  # half: kept (the oldest make room)
    assert box.take(b"y" * 400) is not None and box._bytes <= 800
    assert box.taken == 2


def test_the_same_bytes_written_twice_are_kept_once() -> None:
    box = Loopback(max_bytes=1000)
    first, second = object(), object()
    box.keep(b"same", first)
    box.keep(b"same", second)
    assert len(box) == 1
    assert box.take(b"same") is second
    assert box._bytes == 0


@pytest.mark.parametrize("codec, batch", [
    ("rs.order_event", lambda: OrderEvents(events=[ORDER_EVENT.validate_python(
        schemas.sample_of(m)) for m in schemas.members(ORDER_EVENT)])),
    ("rs.stock_event", lambda: StockBatch(items=[STOCK_EVENT.validate_python(
        schemas.sample_of(m)) for m in schemas.members(STOCK_EVENT)
        if m.__name__ in ("ReserveStock", "ReleaseStock", "CommitStock", "ForgetLines")])),
    ("rs.erp_request", lambda: ErpBatch(requests=[ERP_COMMAND.validate_python(
        schemas.sample_of(m)) for m in schemas.members(ERP_COMMAND)])),
    ("rs.wms_command", lambda: WmsBatch(commands=[WMS_COMMAND.validate_python(
        schemas.sample_of(m)) for m in schemas.members(WMS_COMMAND)])),
])
def test_decoding_what_it_writes_gives_the_same_record(codec: str, batch) -> None:
    """What the loopback relies on: the object a read would decode equals the written one, of
    the same type, item by item (pydantic's == compares the types too)."""
    records = [*_samples(codec), batch()]
    for record in records:
        decoded = codecs.decode(codec, codecs.encode(codec, record))
        assert type(decoded) is type(record)
        assert decoded == record
        for name in type(record).model_fields:
            value = getattr(record, name)
            if isinstance(value, list):
                assert [type(v) for v in getattr(decoded, name)] == [type(v) for v in value]
