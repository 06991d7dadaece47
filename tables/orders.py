"""Order state tables.

- ``order-state``: key order_key -> OrderState. Written only by the order agent, whose input topic
  (order-events) is keyed by order_key, so each key has a single writer and the changelog
  partition matches the source partition.
  Its store keeps a secondary index, external id -> order keys (ERP sales order, shipments,
  tracking numbers, invoices, the order name, the email's salted hash:
  ``order_search.external_ids``), in the same RocksDB databases and write batches as the states
  (tables/rocks.py): no table, topic or changelog of its own; a partition restored from the
  changelog comes with its index. ``CodecTable.lookup`` reads the partitions this worker holds;
  the HTTP lookup asks every worker (retail_sync/web.py).
"""

from __future__ import annotations

from typing import Any, Protocol

import faust
from mode.utils.compat import want_bytes

from retail_sync.tables import changelog, order_search, rocks, store_index


class TableSettings(Protocol):
    """The values a table is built with (``retail_sync.settings.Settings`` has them)."""

    @property
    def partitions(self) -> int: ...
    @property
    def rocksdb_block_cache_bytes(self) -> int: ...
    @property
    def rocksdb_write_buffer_bytes(self) -> int: ...
    @property
    def table_cache_entries(self) -> int: ...
    @property
    def order_cache_entries(self) -> int: ...
    @property
    def app_id(self) -> str: ...
    @property
    def order_search_email_salt(self) -> Any: ...


class CodecTable(faust.Table[str, Any]):
    """A Table whose values are carried by a registered codec (our pydantic models).

    Faust derives a table's serializers from Faust model types only, and fixes them in the
    changelog topic as soon as the table is added to the app, so they are set here, during
    construction, before ``app.tables.add``."""

    def __init__(self, app: faust.App, *, value_codec: str, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self.key_serializer = "raw"
        self.value_serializer = value_codec

    def get(self, key: Any, default: Any = None) -> Any:
        """One store read (Faust's ``get``, UserDict's, asks ``key in`` twice and then reads:
        three lookups, each encoding the key, for one value)."""
        self.on_key_get(key)
        try:
            return self.data[key]
        except KeyError:
            return default

    def lookup(self, external_id: str) -> list[str]:
        """The keys of this worker's active partitions whose values are known by
        ``external_id`` (the store's secondary index; [] for a table without one)."""
        lookup = getattr(self.data, "lookup", None)
        return list(lookup(external_id)) if lookup is not None else []

    def send_changelog(self, partition: int | None, key: Any, value: Any,
                       key_serializer: Any = None, value_serializer: Any = None) -> Any:
        """The value encoded once, for the changelog and the store write that follows
        (tables/rocks.py ``encode_once``); inside a batch handler's ``changelog.collecting``
        the record is kept for the batch's record batch (tables/changelog.py)."""
        headers = None
        ids_once = getattr(self.data, "index_ids_once", None)
        if value is not None and ids_once is not None:
            ids = ids_once(value)  # the value's index ids: a standby need not decode it
            if ids is not None:
                headers = [(store_index.IDS_HEADER, store_index.pack_ids(ids))]
        encode_once = getattr(self.data, "encode_once", None)
        if value is not None and value_serializer is None and encode_once is not None:
            value, value_serializer = encode_once(value), "raw"
        batch = changelog.current()  # a batch handler's: kept, sent as a record batch at its end
        if batch is not None and partition is not None and key_serializer is None \
                and (value is None or value_serializer == "raw"):
            return batch.keep(self, partition, None if key is None else want_bytes(key),
                              None if value is None else want_bytes(value), headers)
        if headers is None:
            return super().send_changelog(partition, key, value, key_serializer,
                                          value_serializer)
        return self.changelog_topic.send_soon(  # Faust's send_changelog, with the headers
            key=key, value=value, partition=partition, headers=headers,
            key_serializer=key_serializer or self.key_serializer,
            value_serializer=value_serializer or self.value_serializer,
            callback=self._on_changelog_sent, eager_partitioning=True)


def _table(app: faust.App, settings: TableSettings, name: str, codec: str, *,
           cache: int = 0, index_of: store_index.IndexOf | None = None,
           **kw: Any) -> CodecTable:
    """``cache``: decoded values kept (tables/rocks.py; 0: none), only for values nobody mutates
    (our frozen pydantic models; not the plain JSON lists and dicts). ``index_of``: the ids a value
    is found by (the store's secondary index)."""
    extra = {"index_of": index_of} if index_of is not None else {}
    table = CodecTable(
        app,
        name=name,
        value_codec=codec,
        key_type=str,
        partitions=settings.partitions,
        store=f"{rocks.SCHEME}:{name}",  # one RocksDB memory budget per worker (tables/rocks.py)
        schema=rocks.StoredChangelog(),  # the store applies changelog records as bytes
        options={"block_cache_size": settings.rocksdb_block_cache_bytes,
                 "write_buffer_budget": settings.rocksdb_write_buffer_bytes,
                 # decoded values kept (tables/rocks.py): this worker is each key's only writer
                 "decoded_cache_entries": cache,
                 **extra},
        **kw,
    )
    app.tables.add(table)
    return table


def order_state_table(app: faust.App, settings: TableSettings) -> CodecTable:
    salt = order_search.salt_of(settings)
    return _table(app, settings, "order-state", "rs.order_state",
                  cache=settings.order_cache_entries,
                  index_of=lambda state: order_search.external_ids(state, salt),
                  help="Canonical order, lifecycle status and correlation ids, by order_key; "
                       "indexed by the other ids it is known by.")


def poll_cursor_table(app: faust.App, settings: TableSettings) -> faust.Table[str, Any]:
    return _table(app, settings, "poll-cursors", "json",
                  help="Polled channel -> its cursor (where the next poll starts) and counters.")


def stock_table(app: faust.App, settings: TableSettings) -> faust.Table[str, Any]:
    """SKU -> StockState, and ``SKU|order_key#line_id`` -> Reservation: one table for both, so a
    SKU's record and its lines share one changelog partition, written in order (lines first).
    Written only by the stock agent, whose input is keyed by SKU: Faust sends a table write to
    the changelog partition of the event being processed and stores it under that partition, so
    the composite keys live with their SKU."""
    return _table(app, settings, "stock", "rs.stock_record", cache=settings.table_cache_entries,
                  help="SKU -> ERP positions, units held, what each channel was offered and "
                       "told; SKU|order line -> its reservation.")
