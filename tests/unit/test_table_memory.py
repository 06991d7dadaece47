"""The worker's RocksDB memory is bounded by settings, whatever the tables and partitions.

Each table write adds an entry to a memtable, which stays in memory until it is flushed; with
Faust's defaults (64 MiB memtables, one block cache per partition) a worker's memory grew by the
size of everything it wrote until each of its 16 databases reached 64 MiB (ARCHITECTURE §5f.5).
These tests open the real table stores (rocksdict) as the worker does."""

from __future__ import annotations

import os
from pathlib import Path

import faust

from retail_sync.settings import Settings
from retail_sync.tables.orders import order_state_table, stock_table

MIB = 1024 * 1024


def _stores(tmp_path: Path, **env: str):
    settings = Settings(app_id="mem-test", datadir=tmp_path, **env)
    app = faust.App("mem-test", store="rocksdb://", datadir=str(tmp_path), autodiscover=False)
    tables = [order_state_table(app, settings), stock_table(app, settings)]
    return [t._new_store_by_url(t._store or app.conf.store) for t in tables]


def _memtables(db) -> int:
    return db.property_int_value("rocksdb.cur-size-all-mem-tables")


def _write(db, megabytes: int, tag: str) -> None:
    value = os.urandom(4096)  # incompressible, like a serialized order state is not, but worse
    for i in range(megabytes * 256):
        db.put(f"{tag}-{i}".encode(), value)


def test_memtables_of_every_partition_together_stay_within_the_write_buffer_budget(tmp_path):
    order_state, stock = _stores(tmp_path)  # default budget: 16 MiB for the whole worker
    dbs = [order_state._db_for_partition(p) for p in range(4)] + [stock._db_for_partition(0)]
    for round_ in range(3):
        for n, db in enumerate(dbs):
            _write(db, 8, f"r{round_}-db{n}")  # 120 MiB written in all
    total = sum(_memtables(db) for db in dbs)
    assert total <= 16 * MIB + 8 * MIB, f"memtables hold {total / MIB:.0f} MiB"  # + one in flush
    assert dbs[0].get(b"r0-db0-0") is not None  # what left memory is on disk, still readable


def test_every_partition_shares_one_block_cache(tmp_path):
    order_state, stock = _stores(tmp_path, rocksdb_block_cache_bytes=str(4 * MIB))
    assert order_state.rocksdb_options.cache is stock.rocksdb_options.cache
    assert order_state.rocksdb_options.cache.get_usage() <= 4 * MIB
