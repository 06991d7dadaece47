"""Our tables' changelog topics leave read values as bytes (tables/rocks.py ``StoredChangelog``,
issue 16): the store applies ``event.message.value`` and never reads ``event.value``, and
decoding every record a standby replica reads cost ~20 % of its worker. Writing still encodes
with the table's codec."""

from __future__ import annotations

import asyncio
from pathlib import Path

import faust
from faust.types import TP
from faust.types.tuples import Message

from retail_sync.settings import Settings
from retail_sync.streams.codecs import decode, encode
from retail_sync.tables import changelog, store_index
from retail_sync.tables.orders import order_state_table, stock_table
from tests.unit.test_order_index import _state


def _message(topic: str, key: bytes, value: bytes | None) -> Message:
    return Message(topic=topic, partition=0, offset=0, timestamp=0.0, timestamp_type=0,
                   headers=None, key=key, value=value, checksum=None, tp=TP(topic, 0))


def _tables(tmp_path: Path) -> tuple[faust.App, list[faust.Table]]:
    settings = Settings(app_id="schema-test", datadir=tmp_path)
    app = faust.App("schema-test", store="rocksdb://", datadir=str(tmp_path), autodiscover=False)
    return app, [order_state_table(app, settings), stock_table(app, settings)]


def test_a_changelog_record_is_read_as_its_bytes_and_written_with_the_codec(
        tmp_path: Path) -> None:
    app, (orders, _) = _tables(tmp_path)
    state = _state("SAL-ORD-1")
    value = encode("rs.order_state", state)
    topic = orders.changelog_topic
    # what Faust's table manager reads the changelog through: a clone on its queue
    reader = topic.clone_using_queue(asyncio.Queue())
    message = _message(topic.get_topic_name(), b"shopify:1001", value)
    event = asyncio.run(reader.decode(message))
    assert event.value == value and isinstance(event.value, bytes)
    assert event.key == "shopify:1001"
    tomb = asyncio.run(reader.decode(_message(topic.get_topic_name(), b"shopify:1001", None)))
    assert tomb.value is None
    written, _ = topic.prepare_value(state, topic.value_serializer)
    assert decode("rs.order_state", written) == state


def test_every_table_on_our_store_reads_its_changelog_as_bytes(tmp_path: Path) -> None:
    app, tables = _tables(tmp_path)
    for table in tables:
        topic = table.changelog_topic
        raw = b'{"not": "a record of this codec"}'  # decoding would raise
        event = asyncio.run(topic.decode(_message(topic.get_topic_name(), b"k", raw)))
        assert event.value == raw, table.name


async def test_an_order_state_record_carries_its_index_ids_in_a_batch_and_outside_one(
        tmp_path: Path) -> None:
    """``CodecTable.send_changelog``: the value's ids go in the ``rs-ids`` header, kept with the
    record in a batch handler's batch and handed to Faust's producer buffer outside one; a
    tombstone and a table without an index carry none."""
    app, (orders, stock) = _tables(tmp_path)
    state = _state("SAL-ORD-7")
    expected = [(store_index.IDS_HEADER, store_index.pack_ids({"SAL-ORD-7", "#1001"}))]
    batch = changelog.ChangelogBatch()
    with changelog.collecting(batch):
        orders.send_changelog(0, "shopify:1001", state)
        orders.send_changelog(0, "shopify:1001", None)
    [part] = batch._parts.values()
    assert [headers for _, _, headers in part.records] == [expected, None]
    assert decode("rs.order_state", part.records[0][1]) == state
    sent = orders.send_changelog(1, "shopify:1001", state)  # Faust's producer buffer
    assert list(sent.message.headers) == expected
    assert decode("rs.order_state", sent.message.value) == state
    batch = changelog.ChangelogBatch()
    with changelog.collecting(batch):
        stock.send_changelog(0, "SKU", b"{}", value_serializer="raw")
    [part] = batch._parts.values()
    assert part.records == [(b"SKU", b"{}", None)]
