"""The order index, kept with the order states (tables/rocks.py, issue 16): the ids an order is
known by (``order_search.external_ids``), written in the same RocksDB write batch as the state,
rebuilt from the changelog on recovery, invisible to the table's own keys. On the real store the
worker opens, with a stream event's partition set as Faust sets it."""

from __future__ import annotations

import random
import weakref
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import faust
from faust.streams import _current_event
from faust.types import TP

from retail_sync.settings import Settings
from retail_sync.streams.codecs import decode, encode
from retail_sync.streams.models import Customer, Money, Order, OrderLine, OrderStatus, ShipmentRecord
from retail_sync.streams.state import Correlation, OrderState
from retail_sync.tables import store_index
from retail_sync.tables.order_search import email_index_id, external_ids
from retail_sync.tables.orders import order_state_table

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def _state(erp: str | None = None, key: str = "shopify:1001") -> OrderState:
    zero = Money(amount=Decimal("0"), currency="EUR")
    oid = key.split(":", 1)[1]
    order = Order(
        channel="shopify", marketplace_order_id=oid, marketplace_order_name=f"#{oid}",
        created_at=NOW, updated_at=NOW, currency="EUR",
        lines=[OrderLine(line_id="1", sku="SKU", quantity=1, unit_price=zero, tax=zero,
                         discount=zero)],
        subtotal=zero, shipping=zero, tax_total=zero, discount_total=zero, total=zero,
    )
    return OrderState(
        order_key=key, channel="shopify",
        status=OrderStatus.ERP_CONFIRMED if erp else OrderStatus.ERP_PENDING, order=order,
        correlation=Correlation(marketplace_order_id=oid, marketplace_order_name=f"#{oid}",
                                erp_sales_order=erp),
        timeline=[], received_at=NOW,
    )


def _shipped(state: OrderState, tracking: str) -> OrderState:
    return state.model_copy(update={"shipments": {"S1": ShipmentRecord(
        shipment_id=f"SHP-{tracking}", lines={"1": 1}, carrier="UPS", tracking_number=tracking,
        shipped_at=NOW.replace(hour=2))}})


class _Event:
    def __init__(self, partition: int, key: bytes = b"", value: bytes | None = None,
                 offset: int = 0, headers: Any = None) -> None:
        self.message = SimpleNamespace(partition=partition, key=key, value=value,
                                       tp=TP("order-state-changelog", partition), offset=offset,
                                       headers=headers)


class _In:
    """Faust's current event while an agent handles one of ``partition``."""

    def __init__(self, partition: int) -> None:
        self.event = _Event(partition)

    def __enter__(self) -> None:
        self.token = _current_event.set(weakref.ref(self.event))

    def __exit__(self, *exc: Any) -> None:
        _current_event.reset(self.token)


def _store(tmp_path: Path, name: str = "w") -> Any:
    settings = Settings(app_id="index-test", datadir=tmp_path / name)
    app = faust.App("index-test", store="rocksdb://", datadir=str(tmp_path / name),
                    autodiscover=False)
    store = order_state_table(app, settings).data
    store.active_partitions = lambda: sorted(store._dbs)  # every partition active
    return store


SALT = "index-test"  # salt_of(settings): the app id when no salt is set


def test_external_ids_an_unconfirmed_order_has_only_its_search_ids() -> None:
    assert external_ids(_state()) == []  # its key is derived from the marketplace id
    assert external_ids(_state(), SALT) == ["#1001"]
    assert external_ids(_state("SAL-ORD-1")) == ["SAL-ORD-1"]


def test_a_write_indexes_its_ids_a_later_write_moves_them_a_delete_drops_them(
        tmp_path: Path) -> None:
    store = _store(tmp_path)
    with _In(1):
        store["shopify:1001"] = _state()
    assert store.lookup("#1001") == ["shopify:1001"]
    assert store.lookup("SAL-ORD-1") == []
    with _In(1):
        store["shopify:1001"] = _state("SAL-ORD-1")
        store["shopify:1001"] = _shipped(_state("SAL-ORD-1"), "1Z1")
    assert store.lookup("SAL-ORD-1") == ["shopify:1001"]
    assert store.lookup("1Z1") == ["shopify:1001"] == store.lookup("SHP-1Z1")
    with _In(1):  # the tracking number corrected: the old one no longer finds the order
        store["shopify:1001"] = _shipped(_state("SAL-ORD-1"), "1Z2")
    assert store.lookup("1Z1") == [] and store.lookup("1Z2") == ["shopify:1001"]
    with _In(1):
        del store["shopify:1001"]
    assert [store.lookup(i) for i in ("#1001", "SAL-ORD-1", "1Z2")] == [[], [], []]
    assert list(store._dbs[1].keys()) == [store_index.INDEX_BUILT]  # nothing left behind


def test_one_id_finds_every_order_it_names_in_every_partition(tmp_path: Path) -> None:
    store = _store(tmp_path)
    email = Customer(email="Jane.Doe@Example.com")
    for partition, key in ((0, "shopify:1"), (2, "shopify:2"), (2, "shopify:3")):
        state = _state(key=key)
        with _In(partition):
            store[key] = state.model_copy(update={"order": state.order.model_copy(
                update={"customer": email})})
    assert sorted(store.lookup(email_index_id("jane.doe@example.com", SALT))) == [
        "shopify:1", "shopify:2", "shopify:3"]
    assert store.lookup(email_index_id("jane.doe@example.com", SALT), partitions=[0]) == [
        "shopify:1"]  # a partition not asked for is not read


def test_the_index_is_not_part_of_the_table(tmp_path: Path) -> None:
    store = _store(tmp_path)
    with _In(0):
        store["shopify:1"] = _state("SAL-ORD-1", key="shopify:1")
        store["shopify:2"] = _shipped(_state("SAL-ORD-2", key="shopify:2"), "1Z")
    store.app.assignor.assigned_actives = lambda: {TP(store.table.changelog_topic.get_topic_name(), 0)}
    assert sorted(store.keys()) == ["shopify:1", "shopify:2"]
    assert len(store) == 2 and len(list(store.items())) == 2
    assert len(list(store._dbs[0].keys())) > 2  # the index entries are there, after the keys


def test_an_id_with_a_nul_is_not_indexed(tmp_path: Path) -> None:
    store = _store(tmp_path)
    with _In(0):
        store["shopify:1"] = _state("SO\x00X", key="shopify:1")
    assert store.lookup("SO\x00X") == [] and store.lookup("SO") == []
    assert [k for k in store._dbs[0].keys() if b"SO" in k] == []  # (its order name is indexed)
    assert store.lookup("#1") == ["shopify:1"]


def _changelog(live: Any, seed: int = 7) -> tuple[list[_Event], dict[str, OrderState | None]]:
    """Random writes and deletes on ``live`` and the changelog they make, each write's record in
    order; a record carries its ids (``IDS_HEADER``, as ``CodecTable.send_changelog`` sends them)
    or, as a record from Faust's own sends or from before the header did, none."""
    rng = random.Random(seed)
    changelog: list[_Event] = []
    final: dict[str, OrderState | None] = {}
    for offset in range(300):
        n = rng.randrange(12)
        key, partition = f"shopify:{n}", n % 3
        state: OrderState | None
        roll = rng.random()
        if roll < 0.15:
            state = None
        elif roll < 0.5:
            state = _state(key=key)
        elif roll < 0.8:
            state = _state(f"SAL-ORD-{rng.randrange(6)}", key=key)
        else:
            state = _shipped(_state(f"SAL-ORD-{n}", key=key), f"1Z{rng.randrange(4)}")
        with _In(partition):
            if state is None:
                if key in live:
                    del live[key]
            else:
                live[key] = state
        final[key] = state
        value = None if state is None else encode("rs.order_state", state)
        headers = None
        if state is not None and rng.random() < 0.7:
            ids = live.index_ids_once(state)
            headers = [(store_index.IDS_HEADER, store_index.pack_ids(ids))]
        changelog.append(_Event(partition, key.encode(), value, offset, headers))
    return changelog, final


def test_recovery_from_the_changelog_rebuilds_the_same_index(tmp_path: Path) -> None:
    """The changelog of random writes applied in batches to an empty store, as recovery on a new
    disk does: both stores answer every lookup as the final states say they should, and hold the
    same bytes."""
    live = _store(tmp_path, "live")
    changelog, final = _changelog(live)
    recovered = _store(tmp_path, "recovered")
    for start in range(0, len(changelog), 37):  # recovery applies the changelog in batches
        recovered.apply_changelog_batch(changelog[start:start + 37], to_key=None, to_value=None)
    expected: dict[str, set[str]] = {}
    for key, state in final.items():
        for i in external_ids(state, SALT) if state is not None else []:
            expected.setdefault(i, set()).add(key)
    ids = set(expected) | {f"SAL-ORD-{i}" for i in range(6)} | {f"1Z{i}" for i in range(4)}
    for i in sorted(ids):
        assert set(live.lookup(i)) == expected.get(i, set()), i
        assert set(recovered.lookup(i)) == expected.get(i, set()), i
    for partition in range(3):  # byte for byte: the same states and the same index entries
        assert (list(live._db_for_partition(partition).items())
                == [(k, v) for k, v in recovered._db_for_partition(partition).items()
                    if k != recovered.offset_key])


async def test_a_lookup_asks_every_other_worker_and_names_those_that_do_not_answer() -> None:
    """``web.lookup_everywhere``: this worker's keys, the keys each other worker holding
    order-state partitions answers (``scope=local``, the caller's Authorization forwarded), and
    the workers that did not answer (one answers 500, one is not listening)."""
    from aiohttp import web

    from retail_sync.broker import free_port
    from retail_sync.web import lookup_everywhere

    asked: list[tuple[str, str | None, str | None]] = []
    broken_key = web.AppKey("broken", bool)

    async def local(request: web.Request) -> web.Response:
        asked.append((request.query["id"], request.query.get("scope"),
                      request.headers.get("Authorization")))
        if request.app[broken_key]:
            return web.json_response({"error": "boom"}, status=500)
        return web.json_response({"id": request.query["id"], "order_keys": ["shopify:2"]})

    runners, urls = [], []
    for broken in (False, True):
        app = web.Application()
        app[broken_key] = broken
        app.router.add_get("/orders/lookup", local)
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        runners.append(runner)
        urls.append(f"http://127.0.0.1:{runner.addresses[0][1]}")
    me, away = "http://127.0.0.1:1/", f"http://127.0.0.1:{free_port()}"
    topic = {"index-test-order-state-changelog": [0]}
    metadata = {me: topic, urls[0] + "/": topic, urls[1]: topic, away: topic,
                "http://idle:1": {"index-test-order-state-changelog": []}}  # holds none: not asked
    ctx = SimpleNamespace(
        tables=SimpleNamespace(orders=SimpleNamespace(
            name="order-state", lookup=lambda i: ["shopify:1"] if i == "SO-1" else [])),
        settings=SimpleNamespace(web_url=me),
        app=SimpleNamespace(router=SimpleNamespace(table_metadata=lambda name: metadata)))
    try:
        keys, unreached = await lookup_everywhere(ctx, "SO-1", {"Authorization": "Bearer t"},
                                                  timeout_s=2)
    finally:
        for runner in runners:
            await runner.cleanup()
    assert keys == ["shopify:1", "shopify:2"]
    assert sorted(unreached) == sorted([urls[1], away])
    assert sorted(asked) == [("SO-1", "local", "Bearer t")] * 2  # me and the idle one not asked


async def test_a_database_from_before_the_index_is_indexed_once_when_recovery_completes(
        tmp_path: Path, monkeypatch: Any) -> None:
    """An upgraded worker's data directory: states written without the index (no entries, no
    mark). Recovery completing indexes them, in chunks (here of 2), then marks the database;
    the next start finds it marked and indexes nothing."""
    old = _store(tmp_path)
    old._index_of = None  # the code before the index
    for n in range(5):
        with _In(0):
            old[f"shopify:{n}"] = _state(f"SAL-ORD-{n}", key=f"shopify:{n}")
    old._dbs[0].delete(store_index.INDEX_BUILT)  # a database the old code made: never marked
    old._dbs[0].put(b"garbage", b"\x00not json")  # a value that does not decode: skipped
    old._dbs[0].close()
    monkeypatch.setattr(store_index, "BUILD_CHUNK", 2)
    store = _store(tmp_path)  # the same directory, with the index
    assert store.lookup("SAL-ORD-3") == []
    topic = store.table.changelog_topic.get_topic_name()
    await store.on_recovery_completed({TP(topic, 0)}, set())
    assert [store.lookup(f"SAL-ORD-{n}") for n in range(5)] == [
        [f"shopify:{n}"] for n in range(5)]
    assert store._dbs[0].get(store_index.INDEX_BUILT) == b""
    assert await store.build_index(0) == 0  # marked: not again


def test_a_standby_indexes_records_that_carry_their_ids_without_decoding_them(
        tmp_path: Path) -> None:
    """What a standby replica reads: every record with its ids. Applied in batches, no value is
    decoded (the old ids come from the key's ``IDS_OF`` entry), and the index is the live one."""
    live = _store(tmp_path, "live")
    changelog, _ = _changelog(live, seed=11)
    for event in changelog:
        if event.message.value is not None and event.message.headers is None:
            state = decode("rs.order_state", event.message.value)
            event.message.headers = [(store_index.IDS_HEADER,
                                      store_index.pack_ids(live.index_ids_once(state)))]
    standby = _store(tmp_path, "standby")

    def no_decode(raw: bytes) -> Any:
        raise AssertionError("a standby decoded a value")

    standby._decode_value = no_decode
    for start in range(0, len(changelog), 23):
        standby.apply_changelog_batch(changelog[start:start + 23], to_key=None, to_value=None)
    for partition in range(3):
        assert (list(live._db_for_partition(partition).items())
                == [(k, v) for k, v in standby._db_for_partition(partition).items()
                    if k != standby.offset_key])


def test_a_database_without_the_ids_entries_falls_back_to_its_values(tmp_path: Path) -> None:
    """A database written before the ``IDS_OF`` entries: a changelog record moves a key's index
    entries from the ids of the value it replaces (decoded), and leaves the key's entry."""
    store = _store(tmp_path)
    with _In(0):
        store["shopify:1"] = _shipped(_state("SAL-ORD-1", key="shopify:1"), "1Z1")
    db = store._db_for_partition(0)
    db.delete(store_index.IDS_OF + b"shopify:1")  # as it was before them
    value = encode("rs.order_state", _state("SAL-ORD-2", key="shopify:1"))
    store.apply_changelog_batch([_Event(0, b"shopify:1", value, 5)], to_key=None, to_value=None)
    assert store.lookup("SAL-ORD-1") == [] and store.lookup("1Z1") == []
    assert store.lookup("SAL-ORD-2") == ["shopify:1"]
    assert store_index.unpack_ids(db.get(store_index.IDS_OF + b"shopify:1")) == {
        "SAL-ORD-2", "#1"}
