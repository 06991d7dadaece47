"""RocksDB with one memory budget per worker, whatever the number of tables and partitions.

Faust opens one RocksDB per table partition, each with its own block cache and its own memtables
(64 MiB each, up to 3, by Faust's defaults). Our 4 tables x 4 partitions made 16 databases whose
memtables only grew: a memtable is flushed to disk when it reaches its 64 MiB, and every table
write (the whole order state, ~10 times per order, plus Faust's offset record) adds an entry to
it, so a worker's resident memory rose by ~40 KiB per order until each database reached its
64 MiB (bench --only soak, docs/BENCHMARKS.md). Here every database of the worker shares

- one block cache of ``RETAIL_SYNC_ROCKSDB_BLOCK_CACHE_BYTES`` (was per partition), and
- one write buffer manager of ``RETAIL_SYNC_ROCKSDB_WRITE_BUFFER_BYTES``: when the memtables of
  all the worker's databases together pass it, RocksDB flushes the largest to disk,

so RocksDB's memory is bounded by the sum of the two settings (plus its small per-file index and
filter blocks). Selected with ``store="rsrocksdb://"`` (registered when this module is imported).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from typing import Any

import faust.stores
import rocksdict
from cachetools import LRUCache
from faust.stores import rocksdb as faust_rocksdb
from faust.streams import current_event
from faust.types import TP, EventT

from retail_sync.tables.figures import PartitionFigures
from retail_sync.tables.store_index import IndexedStore

SCHEME = "rsrocksdb"
#: one database's memtable before it is flushed, at most (RocksDB's default: 64 MiB); the shared
#: write buffer manager flushes earlier when all memtables together reach their budget
MAX_MEMTABLE_BYTES = 4 * 1024 * 1024
#: a partition's persisted changelog offset is written to its database at most this often
PERSIST_OFFSET_EVERY_S = 0.1

_shared: dict[tuple[int, int], tuple[rocksdict.Cache, rocksdict.WriteBufferManager]] = {}


def shared_memory(cache_bytes: int, write_buffer_bytes: int) -> tuple[Any, Any]:
    """The block cache and write buffer manager every database of this process shares."""
    key = (cache_bytes, write_buffer_bytes)
    if key not in _shared:
        _shared[key] = (rocksdict.Cache(cache_bytes),
                        rocksdict.WriteBufferManager(write_buffer_bytes, False))
    return _shared[key]


class StoredChangelog(faust.Schema[Any, Any]):
    """A changelog topic's schema that leaves read values as their bytes.

    Faust's conductor decodes every changelog record it reads into ``event.value``, but this
    store writes ``event.message.value`` (the bytes) and never looks at ``event.value``; the
    indexed store decodes the records it indexes itself (``IndexedStore._apply_indexed``). A
    worker with a standby replica reads every record its partner's tables write, and that decode
    was ~20 % of its CPU (issue 16, BENCHMARKS session 31). Writing is unchanged: the table's
    codec encodes. Only for tables on this store (``tables.orders._table``): Faust's memory
    store applies ``event.value``."""

    def loads_value(self, app: Any, message: Any, *, loads: Any = None,
                    serializer: Any = None) -> Any:
        return message.value


class BoundedRocksDBOptions(faust_rocksdb.RocksDBOptions):
    """Faust's options (rocksdict driver) with the shared cache and write buffer manager, and
    every write without RocksDB's write-ahead log (see ``Store``)."""

    def __init__(self, *, cache: Any, write_buffer_manager: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.cache, self.write_buffer_manager = cache, write_buffer_manager

    def open(self, path: Any, *, read_only: bool = False) -> Any:
        db = super().open(path, read_only=read_only)
        no_wal = rocksdict.WriteOptions()
        no_wal.disable_wal = True  # type: ignore[method-assign,assignment]  # a property (the stub: a method)
        db.set_write_options(no_wal)  # every put, delete and write batch of this database
        return db

    def as_options(self) -> Any:
        options = rocksdict.Options(raw_mode=True)
        options.create_if_missing(True)
        # None when the OS sets no limit (Faust's default is 90% of it): -1 is RocksDB's "no limit"
        options.set_max_open_files(self.max_open_files if self.max_open_files is not None else -1)
        options.set_write_buffer_size(self.write_buffer_size)
        options.set_target_file_size_base(self.target_file_size_base)
        options.set_max_write_buffer_number(self.max_write_buffer_number)
        options.set_write_buffer_manager(self.write_buffer_manager)
        table = rocksdict.BlockBasedOptions()
        table.set_bloom_filter(self.bloom_filter_size, block_based=True)
        table.set_block_cache(self.cache)
        table.set_index_type(rocksdict.BlockBasedIndexType.binary_search())
        options.set_block_based_table_factory(table)
        return options


class Store(IndexedStore, faust_rocksdb.Store):
    """Faust's RocksDB store, its databases drawing on the process's shared memory budget, with
    a cache of decoded values and figures kept up to date by the writes.

    Table ``options``: ``block_cache_size`` (the shared cache) and ``write_buffer_budget`` (the
    shared write buffer manager), both in bytes; ``decoded_cache_entries``: decoded values kept
    (LRU, 0: none).

    **Decoded-value cache.** Faust decodes the stored bytes on every read (the whole order state,
    ~3 KB of JSON, several times per order). Our tables have a single writer per key: the agent
    that owns the key's partition, through this store. So the value last written or read in a
    partition is what the partition holds until this worker writes it again, unless the partition
    changes under it: a changelog record applied (recovery, standby) drops the key's entry, a
    rebalance drops every entry. Entries are keyed (partition, key) and used only for reads in a
    stream event's partition, the partition Faust itself reads then; other reads (HTTP views) go
    to RocksDB. A read returns the very object cached, so values must not be mutated: our values
    are frozen pydantic models, and the rules build new containers rather than changing a
    state's (a cached value is also what ``decode(encode(value))`` gives: tests/unit/
    test_table_cache.py).

    **Figures** (``watch``): each write or delete tells the watching ``PartitionFigures`` the
    value before and after (the cached one, else read from the partition), so the dashboard and
    /metrics figures need no scan (tables/figures.py).

    **Encoded once.** A write encodes the value once: the table's changelog send
    (``CodecTable.send_changelog``, tables/orders.py) hands the bytes to the store write that
    follows it (Faust encoded each value twice, for the changelog and for RocksDB).

    **Persisted offsets, at most every** ``PERSIST_OFFSET_EVERY_S``. Faust writes the changelog
    offset into the partition's database after every acknowledged changelog record (a RocksDB put
    per record, ~2 % of the worker). Here the newest offset is kept in memory and written at most
    every 0.1 s per partition, and before a partition is revoked or the store stops. The offset
    on disk may so lag the data by up to 0.1 s of records, never lead it (a value is in RocksDB
    before its changelog record is sent): after a crash, recovery reads those records again and
    applies the same values (tests/unit/test_table_cache.py).

    **No write-ahead log** (issue 16, session 27). The changelog topic is what a table partition
    is rebuilt from, as in Kafka Streams, whose RocksDB stores write without RocksDB's WAL too:
    logging every write again to a local file cost ~6-9 us of the ~11-15 us of a write, ~5
    writes per order. Without it a crash (SIGKILL) loses what the memtables held since their
    last flush, values, index entries and the persisted offset alike: RocksDB flushes a
    database's writes in the order they were made, so what survives is a prefix of them, whose
    persisted offset never leads its data, and recovery reads the changelog again from that
    offset (tests/unit/test_rocks_no_wal.py kills a writer with SIGKILL and checks it). A clean
    close flushes the memtables.

    **Secondary index** (option ``index_of``: value -> the ids it is known by): entries written
    in the same RocksDB write batch as each value and with each changelog record applied,
    ``lookup(id)`` over the active partitions (tables/store_index.py, ``IndexedStore``)."""

    def __init__(self, *args: Any, options: dict[str, Any] | None = None, **kwargs: Any) -> None:
        options = dict(options or {})
        self._index_of = options.pop("index_of", None)
        entries = int(options.pop("decoded_cache_entries", 0))
        self._decoded: LRUCache[tuple[int, bytes], Any] | None = (
            LRUCache(maxsize=entries) if entries > 0 else None)
        self.figures: list[PartitionFigures] = []
        self._encoded: tuple[Any, bytes | None] | None = None  # (value, its bytes): one write
        self._pending_offsets: dict[TP, int] = {}
        self._offsets_written: dict[TP, float] = {}
        budget = int(options.pop("write_buffer_budget", 16 * 1024 * 1024))
        options.setdefault("write_buffer_size", min(MAX_MEMTABLE_BYTES, budget))
        options.setdefault("max_write_buffer_number", 2)
        options["driver"] = "rocksdict"
        super().__init__(*args, options=options, **kwargs)
        base = self.rocksdb_options
        cache, manager = shared_memory(base.block_cache_size, budget)
        self.rocksdb_options = BoundedRocksDBOptions(
            cache=cache, write_buffer_manager=manager,
            max_open_files=base.max_open_files, write_buffer_size=base.write_buffer_size,
            max_write_buffer_number=base.max_write_buffer_number,
            target_file_size_base=base.target_file_size_base,
            block_cache_size=base.block_cache_size, bloom_filter_size=base.bloom_filter_size,
            use_rocksdict=True, ttl=base.ttl)

    # --- decoded-value cache and figures ----------------------------------------------------

    def _event_partition(self) -> int | None:
        """The partition Faust reads and writes now: the current stream event's (None: no
        event, or a table that does not read by it)."""
        event = current_event()
        if event is None or self.table.is_global or self.table.use_partitioner:
            return None
        return int(event.message.partition)

    def _cached(self, partition: int, key: bytes) -> Any:
        """The decoded value of ``key`` in ``partition`` (None: absent), from the cache or read."""
        if self._decoded is not None:
            value = self._decoded.get((partition, key))
            if value is not None:
                return value
        raw = self._db_for_partition(partition).get(key)
        if raw is None:
            return None
        value = self._decode_value(raw)
        if self._decoded is not None:
            self._decoded[(partition, key)] = value
        return value

    def __getitem__(self, key: Any) -> Any:
        partition = self._event_partition()
        if partition is None or self._decoded is None:
            return super().__getitem__(key)
        ekey = self._encode_key(key)
        value = self._cached(partition, ekey)
        if value is None:
            raise KeyError(key)
        self._key_index[ekey] = partition
        return value

    def __contains__(self, key: object) -> bool:
        partition = self._event_partition()
        if partition is not None and self._decoded is not None:
            ekey = self._encode_key(key)
            if (partition, ekey) in self._decoded:
                return True
        return super().__contains__(key)

    def encode_once(self, value: Any) -> bytes | None:
        """``value``'s bytes, kept for the store write of the same value that follows."""
        encoded = self._encode_value(value)
        self._encoded = (value, encoded)
        return encoded

    def __setitem__(self, key: Any, value: Any) -> None:
        partition = self._event_partition()
        ekey = self._encode_key(key)
        old = self._before(partition, ekey)
        memo, self._encoded = self._encoded, None
        encoded = memo[1] if memo is not None and memo[0] is value else self._encode_value(value)
        if self._index_of is not None and partition is not None:
            self._write_indexed(partition, ekey, encoded, old, value)
        else:
            self._set(ekey, encoded)
        if partition is None:  # Faust's _set needs an event: not reached
            return
        if self._decoded is not None:
            self._decoded[(partition, ekey)] = value
        for figures in self.figures:
            figures.change(partition, key, old, value)

    def __delitem__(self, key: Any) -> None:
        partition = self._event_partition()
        ekey = self._encode_key(key)
        old = self._before(partition, ekey)
        if self._index_of is not None and partition is not None:
            self._write_indexed(partition, ekey, None, old, None)
        else:
            self._del(ekey)
        self._forget(ekey)
        for figures in self.figures:
            if partition is None:
                figures.clear()  # a delete outside a stream event (not done): rescan
            else:
                figures.change(partition, key, old, None)

    def _before(self, partition: int | None, ekey: bytes) -> Any:
        """The value a write replaces, when the index or a watcher needs it (None: absent, or
        no one)."""
        if partition is None or (self._index_of is None and not any(
                partition in f.partitions for f in self.figures)):
            return None
        return self._cached(partition, ekey)

    def _forget(self, ekey: bytes) -> None:
        if self._decoded is not None:
            for partition in list(self._dbs):
                self._decoded.pop((partition, ekey), None)

    # --- persisted offsets, written at most every PERSIST_OFFSET_EVERY_S ------------------------

    def set_persisted_offset(self, tp: TP, offset: int) -> None:
        self._pending_offsets[tp] = offset
        now = time.monotonic()
        if now - self._offsets_written.get(tp, 0.0) >= PERSIST_OFFSET_EVERY_S:
            self._offsets_written[tp] = now
            self._write_offset(tp)

    def persisted_offset(self, tp: TP) -> int | None:
        pending = self._pending_offsets.get(tp)
        return pending if pending is not None else super().persisted_offset(tp)

    def _write_offset(self, tp: TP) -> None:
        offset = self._pending_offsets.pop(tp, None)
        if offset is not None:
            super().set_persisted_offset(tp, offset)

    def write_pending_offsets(self, tps: Iterable[TP] | None = None) -> None:
        """Write the offsets kept in memory (of ``tps``, else all) to their databases."""
        for tp in list(self._pending_offsets if tps is None else tps):
            if tp.partition in self._dbs:
                self._write_offset(tp)
            else:
                self._pending_offsets.pop(tp, None)

    def revoke_partitions(self, table: Any, tps: set[TP]) -> None:
        self.write_pending_offsets(tps)
        super().revoke_partitions(table, tps)

    async def stop(self) -> None:
        self.write_pending_offsets()
        await super().stop()

    def apply_changelog_batch(self, batch: Iterable[EventT[Any]], to_key: Any, to_value: Any) -> None:
        """Recovery and standby records change partitions under the cache and the figures."""
        events = list(batch)
        if self._index_of is not None:
            self._apply_indexed(events)
        else:
            super().apply_changelog_batch(events, to_key, to_value)
        stale: set[int] = set()
        for event in events:
            partition = event.message.partition
            stale.add(partition)
            if self._decoded is not None:
                self._decoded.pop((partition, event.message.key or b""), None)
        for figures in self.figures:
            for partition in stale:
                figures.stale(partition)

    async def on_rebalance(self, assigned: set[TP], revoked: set[TP], newly_assigned: set[TP],
                           generation_id: int = 0) -> None:
        await super().on_rebalance(assigned, revoked, newly_assigned, generation_id)
        if self._decoded is not None:
            self._decoded.clear()  # rare: the cache refills from the next reads
        for figures in self.figures:
            for tp in revoked | newly_assigned:
                figures.stale(tp.partition)

    def reset_state(self) -> None:
        self._pending_offsets.clear()
        super().reset_state()
        if self._decoded is not None:
            self._decoded.clear()
        for figures in self.figures:
            figures.clear()

    def watch(self, figures: PartitionFigures) -> None:
        """Keep ``figures`` up to date with this table's writes (tables/figures.py)."""
        self.figures.append(figures)

    def active_partitions(self) -> list[int]:
        """The partitions this worker holds active (those ``items()`` iterates)."""
        actives = self.app.assignor.assigned_actives()
        topic = self.table.changelog_topic.get_topic_name()
        return [p for p in list(self._dbs) if TP(topic=topic, partition=p) in actives]

    def decoded_items(self, partition: int) -> Iterator[tuple[Any, Any]]:
        """``partition``'s (key, value) pairs, decoded (one scan)."""
        for key, value in self._visible_items(self._db_for_partition(partition)):
            yield self._decode_key(key), self._decode_value(value)

    def figures_total(self, figures: PartitionFigures) -> dict[Any, int]:
        return figures.total(self.active_partitions(), self.decoded_items)


faust.stores.STORES.aliases[SCHEME] = f"{__name__}:Store"
