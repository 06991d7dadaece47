"""The table store's decoded-value cache and its incremental figures (issue 16), on the real
RocksDB store the worker opens (tables/rocks.py), with a stream event's partition set as Faust
sets it while an agent handles an event."""

from __future__ import annotations

import random
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import faust
from faust.types import TP

from retail_sync import dashboard
from retail_sync.settings import Settings
from retail_sync.streams.codecs import decode, encode
from retail_sync.streams.models import OrderStatus, ShipmentRecord
from retail_sync.streams.stock import Reservation, StockState, Told
from retail_sync.tables.figures import PartitionFigures
from retail_sync.tables.orders import order_state_table, stock_table
from tests.unit.test_order_index import NOW, _Event, _In, _state


def _tables(tmp_path: Path, **env: Any) -> tuple[Any, Any]:
    settings = Settings(app_id="cache-test", datadir=tmp_path, **env)
    app = faust.App("cache-test", store="rocksdb://", datadir=str(tmp_path), autodiscover=False)
    tables = order_state_table(app, settings), stock_table(app, settings)
    for t in tables:  # every partition active, as on a worker that owns them all
        t.data.active_partitions = lambda t=t: sorted(t.data._dbs)
    return tables


def _counting(store: Any, method: str = "_decode_value") -> list[int]:
    """Count the calls of the store's ``method`` (a one-element list, read after)."""
    calls = [0]
    original = getattr(store, method)

    def counted(*args: Any) -> Any:
        calls[0] += 1
        return original(*args)
    setattr(store, method, counted)
    return calls


def _states() -> list[Any]:
    shipped = _state("SAL-ORD-1").model_copy(update={"shipments": {"S1": ShipmentRecord(
        shipment_id="S1", lines={"1": 1}, carrier="UPS", tracking_number="1Z",
        shipped_at=NOW.replace(hour=2), sales_invoice="ACC-SINV-1")}})
    return [_state(None), _state("SAL-ORD-2"), shipped,
            shipped.model_copy(update={"status": OrderStatus.CANCELLED})]


def test_a_cached_value_is_what_decoding_its_record_gives() -> None:
    for state in _states():
        assert decode("rs.order_state", encode("rs.order_state", state)) == state


def test_reads_in_the_owning_partition_decode_once_writes_and_deletes_keep_it_current(
        tmp_path: Path) -> None:
    orders, _ = _tables(tmp_path)
    store = orders.data
    decodes = _counting(store)
    first, second = _states()[:2]
    with _In(1):
        store["k"] = first
        assert store["k"] is first and "k" in store  # the written object, no decode
        assert decodes[0] == 0
        store["k"] = second
        assert store["k"] is second
        del store["k"]
        assert "k" not in store
        assert store._decoded is not None and not store._decoded
    with _In(1):
        store["k"] = first
    store._decoded.clear()
    with _In(1):
        assert store["k"] == first and decodes[0] == 1  # read from RocksDB once...
        assert store["k"] is store["k"] and decodes[0] == 1  # ...then from the cache
    with _In(2):  # another partition: Faust reads that partition's database, where k is not
        assert "k" not in store
    assert store["k"] == first  # outside a stream event: RocksDB, as Faust reads it
    # a changelog record applied (recovery, standby) replaces the cached value
    store.apply_changelog_batch([_Event(1, b"k", encode("rs.order_state", second))],
                                to_key=None, to_value=None)
    with _In(1):
        assert store["k"] == second


async def test_a_rebalance_empties_the_cache(tmp_path: Path) -> None:
    orders, _ = _tables(tmp_path)
    store = orders.data
    with _In(0):
        store["k"] = _states()[0]
    assert store._decoded
    store.app.assignor.assigned_standbys = lambda: set()
    await store.on_rebalance(set(), {TP("x", 0)}, set())
    assert not store._decoded


def test_the_cache_is_bounded_by_the_setting(tmp_path: Path) -> None:
    orders, stock = _tables(tmp_path, order_cache_entries="3", table_cache_entries="5")
    with _In(0):
        for i in range(10):
            orders.data[f"k{i}"] = _states()[0]
            stock.data[f"SKU-{i}"] = StockState(sku=f"SKU-{i}")
        assert len(orders.data._decoded) == 3  # the order table's own setting
        assert len(stock.data._decoded) == 5  # the stock table's
        assert orders.data["k0"] == _states()[0]  # evicted, read back from RocksDB
    off, stock_off = _tables(tmp_path / "off", order_cache_entries="0", table_cache_entries="0")
    assert off.data._decoded is None and stock_off.data._decoded is None


def _scan(store: Any, figures: PartitionFigures) -> dict[Any, int]:
    fresh = PartitionFigures(figures.contribution)
    return fresh.total(store.active_partitions(), store.decoded_items)


def test_incremental_figures_equal_a_full_scan_after_writes_and_deletes(tmp_path: Path) -> None:
    orders, stock = _tables(tmp_path)
    ats = {"shopify": 0, "amazon": 3}
    kept = PartitionFigures(dashboard.order_contribution)
    kept_stock = PartitionFigures(dashboard.stock_contribution(lambda sku, state: ats))
    orders.data.watch(kept)
    stock.data.watch(kept_stock)
    rng = random.Random(16)
    states = _states()
    keys = [f"shopify:{i}" for i in range(40)]
    for _ in range(3):  # the figures are read (partitions scanned once) between rounds
        for _ in range(300):
            key = rng.choice(keys)
            with _In(hash(key) % 4):
                if rng.random() < 0.2:
                    if key in orders.data:
                        del orders.data[key]  # e.g. a retention delete (tables/retention.py)
                else:
                    orders.data[key] = rng.choice(states)
            sku = f"SKU-{rng.randrange(6)}"
            with _In(hash(sku) % 4):
                told = {c: Told(quantity=rng.choice([0, 3]), at=NOW, ok=rng.random() < 0.8)
                        for c in rng.sample(["shopify", "amazon", "ebay"], 2)}
                stock.data[sku] = StockState(sku=sku, told=told)
                stock.data[f"{sku}|o#1"] = Reservation(order_key="o", channel="shopify", line_id="1",
                                                       quantity=1, requested=1, reserved_at=NOW)
        assert orders.data.figures_total(kept) == _scan(orders.data, kept)
        assert stock.data.figures_total(kept_stock) == _scan(stock.data, kept_stock)
    assert kept.scans <= 4 + 1  # each partition scanned once (its first read), not per read
    got = dashboard.render_order_figures(orders.data.figures_total(kept))
    values = [orders.data.decoded_items(p) for p in orders.data.active_partitions()]
    assert got == dashboard.order_figures(v for part in values for _, v in part)
    assert got["orders"] > 0 and got["cancelled_by_cause"]


def test_figures_of_a_revoked_or_recovered_partition_are_rebuilt_by_one_scan(
        tmp_path: Path) -> None:
    orders, _ = _tables(tmp_path)
    kept = PartitionFigures(dashboard.order_contribution)
    orders.data.watch(kept)
    with _In(2):
        orders.data["a"] = _states()[0]
    assert orders.data.figures_total(kept)[("orders",)] == 1 and kept.scans == 1
    # a record of partition 2 recovered from the changelog: not seen by a write
    orders.data.apply_changelog_batch(
        [_Event(2, b"b", encode("rs.order_state", _states()[1]))], to_key=None, to_value=None)
    assert orders.data.figures_total(kept)[("orders",)] == 2 and kept.scans == 2
    orders.data.active_partitions = lambda: []  # revoked: its figures leave with it
    assert orders.data.figures_total(kept) == {}


def test_a_write_encodes_its_value_once_for_the_changelog_and_the_store(tmp_path: Path) -> None:
    orders, _ = _tables(tmp_path)
    store, state = orders.data, _states()[2]
    encodes, sent = _counting(store, "_encode_value"), []
    orders.partition_for_key = lambda key: 1  # the current event's (Faust checks its topic)
    orders.changelog_topic.send_soon = lambda **kw: sent.append(kw) or SimpleNamespace(
        message=SimpleNamespace(partition=kw["partition"]))
    with _In(1):
        orders["k"] = state
    assert encodes[0] == 1
    [record] = sent
    assert record["value_serializer"] == "raw" and record["partition"] == 1
    assert record["value"] == encode("rs.order_state", state)  # what the changelog carries...
    store._decoded.clear()
    with _In(1):
        assert store["k"] == state  # ...is what the store holds
    with _In(1):
        store["other"] = state  # a store write of its own (recovery, tests): encoded there
    assert encodes[0] == 2
    with _In(1):
        del orders["k"]  # a delete: a tombstone, no value encoded
    assert sent[-1]["value"] is None and encodes[0] == 2


def test_persisted_offsets_are_written_at_most_every_interval_and_before_a_revoke(
        tmp_path: Path) -> None:
    orders, _ = _tables(tmp_path)
    store, tp = orders.data, TP(orders.changelog_topic.get_topic_name(), 1)

    def on_disk() -> int | None:
        raw = store._db_for_partition(1).get(store.offset_key)
        return None if raw is None else int(raw)
    store.set_persisted_offset(tp, 5)
    assert on_disk() == 5  # the first one at once
    store.set_persisted_offset(tp, 6)
    store.set_persisted_offset(tp, 7)
    assert on_disk() == 5 and store.persisted_offset(tp) == 7  # in memory: behind, never ahead
    store._offsets_written[tp] -= 1.0  # the interval has passed
    store.set_persisted_offset(tp, 8)
    assert on_disk() == 8
    store.set_persisted_offset(tp, 9)
    assert on_disk() == 8
    store.revoke_partitions(orders, {tp})
    assert 1 not in store._dbs and store.persisted_offset(tp) == 9  # written before closing


def test_get_reads_the_store_once_and_answers_as_faust_would(tmp_path: Path) -> None:
    orders, _ = _tables(tmp_path)
    store, state = orders.data, _states()[1]
    with _In(1):
        store["k"] = state
    store._decoded.clear()
    reads = _counting(store, "_db_for_partition")
    with _In(1):
        assert orders.get("k") == state and reads[0] == 1  # one read of RocksDB, decoded once
        assert orders.get("k") is orders.get("k") and reads[0] == 1  # then the cache
        assert orders.get("absent") is None and orders.get("absent", 7) == 7
    with _In(2):
        assert orders.get("k") is None  # another partition's database, as Faust reads it
    assert orders.get("k") == state  # outside a stream event: every partition, as Faust reads
