"""The order index kept with the order states: a secondary index inside a table's RocksDB store.

A store with ``index_of`` (value -> the ids it is known by; the order-state table's is
``order_search.external_ids``) keeps, in each partition's database after every table key, one
entry ``INDEX_PREFIX + id + NUL + key`` per id of each value, and the key's ids (``IDS_OF +
key``). They are written in the same RocksDB write batch as the value, so the two never disagree,
not even after a crash; a changelog record applied (recovery, standby) updates them the same way,
from the ids its writer put in its header (``IDS_HEADER``) when it has them, so a partition
restored from its changelog comes with its index. The index so has no table, topic or changelog
of its own (it was an ``order-index`` table written by an index agent from
``order-index-updates``: three changelog records and a share of a topic record per order, issue
16). ``lookup(id)`` reads the partitions this worker holds active; the HTTP lookup asks every
worker for theirs (retail_sync/web.py).
Table scans (Faust's ``keys``/``items``, the retention sweep) stop where the entries begin.

A database this code creates is marked complete (``INDEX_BUILT``) at once; one written before
the index existed (an upgraded worker's data directory) is not, and is indexed once when its
partition's recovery completes (``build_index``: a scan in chunks of ``BUILD_CHUNK`` keys, each
read and written without yielding to the event loop, so an agent's write never interleaves with
the chunk that holds its key), then marked.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import rocksdict
from faust.types import TP, EventT

if TYPE_CHECKING:
    from faust.stores.rocksdb import Store as _Base
else:
    _Base = object

log = logging.getLogger(__name__)

#: where a partition's secondary index entries live in its database: ``INDEX_PREFIX + id + NUL +
#: key``. No UTF-8 text contains the byte 0xFF, so every table key sorts before them and a scan
#: of the table's keys stops where they begin
INDEX_PREFIX = b"\xffix\x00"
#: a lookup returns at most this many keys for one id (an id shared by more orders than this is
#: not an id worth following)
MAX_KEYS_PER_ID = 50

#: present when a partition's index holds every value's entries (sorts after every entry)
INDEX_BUILT = INDEX_PREFIX + b"\xff"
#: where a key's indexed ids are kept: ``IDS_OF + key`` -> its ids (``pack_ids``), written in the
#: same batch as its entries, so a write finds the entries it replaces without decoding the value
#: it replaces. No UTF-8 id has the byte 0xFE: these sort after every id's entries, before
#: ``INDEX_BUILT``. A key without one (a database from before them) falls back to its value
IDS_OF = INDEX_PREFIX + b"\xfe"
#: the changelog record header that carries the ids of the record's value, as its writer
#: computed them: a standby replica or a recovery indexes the record without decoding it
IDS_HEADER = "rs-ids"
#: keys indexed per step of ``build_index``
BUILD_CHUNK = 1000

IndexOf = Callable[[Any], Iterable[str]]


def index_key(external_id: str, key: bytes) -> bytes:
    return INDEX_PREFIX + external_id.encode("utf-8") + b"\x00" + key


def pack_ids(ids: Iterable[str]) -> bytes:
    """Ids (``indexable``: no NUL) as one value: NUL-separated, sorted."""
    return "\x00".join(sorted(ids)).encode("utf-8")


def unpack_ids(raw: bytes) -> set[str]:
    return set(raw.decode("utf-8").split("\x00")) if raw else set()


def header_ids(headers: Any) -> set[str] | None:
    """The ids an ``IDS_HEADER`` header of a record carries (None: it has none)."""
    if not headers:
        return None
    for name, value in (headers.items() if isinstance(headers, Mapping) else headers):
        if name == IDS_HEADER:
            return unpack_ids(value)
    return None


def table_items(db: Any, start: bytes | None = None) -> Iterator[tuple[bytes, bytes]]:
    """A partition database's (key, value) records in key order from ``start`` (None: the
    first), up to where the index entries begin (Faust's offset record included)."""
    it = db.iter()
    if start is None:
        it.seek_to_first()
    else:
        it.seek(start)
    while it.valid():
        key = it.key()
        if key.startswith(INDEX_PREFIX):
            return
        yield key, it.value()
        it.next()


def indexable(external_id: str) -> bool:
    """Ids with a NUL would be ambiguous in an entry's key: not indexed (no real id has one)."""
    return bool(external_id) and "\x00" not in external_id


class IndexedStore(_Base):
    """The secondary index of ``tables.rocks.Store`` (mixed in before Faust's RocksDB store,
    whose methods it uses: ``_db_for_partition``, ``_decode_key``/``_decode_value``,
    ``set_persisted_offset``, ``_key_index``)."""

    _index_of: IndexOf | None = None
    _ids_memo: tuple[Any, set[str]] | None = None  # (value, its ids): one write

    def active_partitions(self) -> list[int]:
        raise NotImplementedError  # the store's (tables/rocks.py)

    def _ids(self, value: Any) -> set[str]:
        assert self._index_of is not None
        if value is None:
            return set()
        return {i for i in self._index_of(value) if indexable(i)}

    def index_ids_once(self, value: Any) -> set[str] | None:
        """``value``'s ids (None: no index), kept for the store write of the same value that
        follows (the changelog record carries them: ``IDS_HEADER``)."""
        if self._index_of is None:
            return None
        ids = self._ids(value)
        self._ids_memo = (value, ids)
        return ids

    def _new_ids(self, value: Any) -> set[str]:
        memo, self._ids_memo = self._ids_memo, None
        return memo[1] if memo is not None and memo[0] is value else self._ids(value)

    @staticmethod
    def _ids_entry(db: Any, ekey: bytes) -> set[str] | None:
        """The ids ``ekey`` is indexed by in ``db``, from its ``IDS_OF`` entry (None: it has
        none: no value, or one written before these entries; its value's ids are the answer)."""
        raw = db.get(IDS_OF + ekey)
        return None if raw is None else unpack_ids(raw)

    def _move_index(self, batch: Any, ekey: bytes, before: set[str],
                    after: set[str] | None) -> None:
        """Add to ``batch`` what moves ``ekey``'s index entries from the ids ``before`` to
        ``after`` (None: the key is deleted)."""
        now = after or set()
        for gone in before - now:
            batch.delete(index_key(gone, ekey))
        for added in now - before:
            batch.put(index_key(added, ekey), b"")
        if after is None:
            batch.delete(IDS_OF + ekey)
        else:
            batch.put(IDS_OF + ekey, pack_ids(after))

    def _write_indexed(self, partition: int, ekey: bytes, encoded: bytes | None, old: Any,
                       new: Any) -> None:
        """The value (None: delete) and its index entries in one RocksDB write."""
        db = self._db_for_partition(partition)
        batch = rocksdict.WriteBatch(raw_mode=True)
        if encoded is None:
            batch.delete(ekey)
        else:
            batch.put(ekey, encoded)
        before = self._ids_entry(db, ekey)
        self._move_index(batch, ekey, self._ids(old) if before is None else before,
                         None if encoded is None else self._new_ids(new))
        db.write(batch)
        if encoded is not None:
            self._key_index[ekey] = partition
        else:
            self._key_index.pop(ekey, None)

    def lookup(self, external_id: str, partitions: Iterable[int] | None = None) -> list[Any]:
        """The keys whose values are known by ``external_id``, from the index of ``partitions``
        (default: those this worker holds active), at most ``MAX_KEYS_PER_ID``."""
        if self._index_of is None or not indexable(external_id):
            return []
        prefix = INDEX_PREFIX + external_id.encode("utf-8") + b"\x00"
        found: list[Any] = []
        for partition in (self.active_partitions() if partitions is None else partitions):
            it = self._db_for_partition(partition).iter()
            it.seek(prefix)
            while it.valid() and len(found) < MAX_KEYS_PER_ID:
                entry = it.key()
                if not entry.startswith(prefix):
                    break
                found.append(self._decode_key(entry[len(prefix):]))
                it.next()
        return found

    def _visible_keys(self, db: Any) -> Iterator[bytes]:
        for key in super()._visible_keys(db):
            if self._index_of is not None and key.startswith(INDEX_PREFIX):
                return  # the index entries sort after every key: the keys are done
            yield key

    def _visible_items(self, db: Any) -> Iterator[tuple[bytes, bytes]]:
        for key, value in super()._visible_items(db):
            if self._index_of is not None and key.startswith(INDEX_PREFIX):
                return
            yield key, value

    def _apply_indexed(self, events: list[EventT[Any]]) -> None:
        """Changelog records into their partitions' databases with their index entries, one
        write batch per partition (Faust's ``apply_changelog_batch`` with the index)."""
        batches: dict[int, Any] = {}
        latest: dict[tuple[int, bytes], set[str]] = {}  # this batch's ids so far
        offsets: dict[TP, int] = {}
        for event in events:
            msg = event.message
            offsets[msg.tp] = max(msg.offset, offsets.get(msg.tp, msg.offset))
            key = msg.key or b""
            if key.startswith(INDEX_PREFIX):
                continue  # not a key of ours (the prefix is never a table key)
            partition = msg.partition
            batch = batches.get(partition)
            if batch is None:
                batch = batches[partition] = rocksdict.WriteBatch(raw_mode=True)
            before = latest.get((partition, key))  # written before in this batch
            if before is None:  # as the database has it
                db = self._db_for_partition(partition)
                before = self._ids_entry(db, key)
                if before is None:
                    raw_old = db.get(key)
                    before = self._ids(None if raw_old is None else self._decode_value(raw_old))
            after: set[str] | None = None
            if msg.value is None:
                batch.delete(key)
            else:
                batch.put(key, msg.value)
                after = header_ids(msg.headers)  # the writer's, when it sent them
                if after is None:
                    after = self._ids(self._decode_value(msg.value))
            self._move_index(batch, key, before, after)
            latest[(partition, key)] = after if after is not None else set()
        for partition, batch in batches.items():
            self._db_for_partition(partition).write(batch)
        for tp, offset in offsets.items():
            self.set_persisted_offset(tp, offset)

    # --- a database from before the index: indexed once --------------------------------------

    def _open_for_partition(self, partition: int) -> Any:
        fresh = not Path(self.partition_path(partition)).exists()
        db = super()._open_for_partition(partition)
        if fresh and self._index_of is not None:
            db.put(INDEX_BUILT, b"")  # created by this code: every write indexes itself
        return db

    async def on_recovery_completed(self, active_tps: set[TP], standby_tps: set[TP]) -> None:
        await super().on_recovery_completed(active_tps, standby_tps)
        if self._index_of is None:
            return
        topic = self.table.changelog_topic.get_topic_name()
        for tp in sorted(active_tps | standby_tps):
            if tp.topic == topic:
                await self.build_index(tp.partition)

    async def build_index(self, partition: int) -> int:
        """Index every value of ``partition`` unless its database is marked complete; then mark
        it. Returns how many values were indexed (0: it was complete)."""
        db = self._db_for_partition(partition)
        if db.get(INDEX_BUILT) is not None:
            return 0
        log.info("indexing %s partition %d (a database from before the order index)",
                 self.table.name, partition)
        done, cursor = 0, None
        while True:
            batch = rocksdict.WriteBatch(raw_mode=True)
            cursor, n = self._index_chunk(db, cursor, batch)
            db.write(batch)
            done += n
            if cursor is None:
                break
            await asyncio.sleep(0)  # between chunks: an agent's write indexes itself
        db.put(INDEX_BUILT, b"")
        log.info("indexed %d values of %s partition %d", done, self.table.name, partition)
        return done

    def _index_chunk(self, db: Any, start: bytes | None, batch: Any) -> tuple[bytes | None, int]:
        """Add the entries of up to ``BUILD_CHUNK`` values from ``start`` to ``batch``; the key
        to go on from (None: the values are done) and how many were indexed."""
        n = 0
        for key, raw in table_items(db, start):
            if n == BUILD_CHUNK:
                return key, n
            if key == self.offset_key:
                continue
            try:
                value = self._decode_value(raw)
            except Exception as exc:  # noqa: BLE001 - not a value of ours: nothing to index
                log.warning("not indexed: %r in %s (%s)", key, self.table.name, exc)
            else:
                self._move_index(batch, key, set(), self._ids(value))
                n += 1
        return None, n

