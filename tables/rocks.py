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

from typing import Any

import faust.stores
import rocksdict
from faust.stores import rocksdb as faust_rocksdb

SCHEME = "rsrocksdb"
#: one database's memtable before it is flushed, at most (RocksDB's default: 64 MiB); the shared
#: write buffer manager flushes earlier when all memtables together reach their budget
MAX_MEMTABLE_BYTES = 4 * 1024 * 1024

_shared: dict[tuple[int, int], tuple[rocksdict.Cache, rocksdict.WriteBufferManager]] = {}


def shared_memory(cache_bytes: int, write_buffer_bytes: int) -> tuple[Any, Any]:
    """The block cache and write buffer manager every database of this process shares."""
    key = (cache_bytes, write_buffer_bytes)
    if key not in _shared:
        _shared[key] = (rocksdict.Cache(cache_bytes),
                        rocksdict.WriteBufferManager(write_buffer_bytes, False))
    return _shared[key]


class BoundedRocksDBOptions(faust_rocksdb.RocksDBOptions):
    """Faust's options (rocksdict driver) with the shared cache and write buffer manager."""

    def __init__(self, *, cache: Any, write_buffer_manager: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.cache, self.write_buffer_manager = cache, write_buffer_manager

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


class Store(faust_rocksdb.Store):
    """Faust's RocksDB store, its databases drawing on the process's shared memory budget.

    Table ``options``: ``block_cache_size`` (the shared cache) and ``write_buffer_budget`` (the
    shared write buffer manager), both in bytes."""

    def __init__(self, *args: Any, options: dict[str, Any] | None = None, **kwargs: Any) -> None:
        options = dict(options or {})
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


faust.stores.STORES.aliases[SCHEME] = f"{__name__}:Store"
