"""Order state tables.

- ``order-state``: key order_key -> OrderState. Written only by the order agent, whose input topic
  (order-events) is keyed by order_key, so each key has a single writer and the changelog
  partition matches the source partition.
- ``order-index``: key any external id (marketplace order id, order name, ERP sales-order number)
  -> the order_keys known by it. Its keys differ from order_key, so the order agent does not
  write it: it sends an IndexEntry to order-index-updates, keyed by the external id, and the index
  agent writes it there. (``use_partitioner=True`` would not do: Faust sends the change to the
  hashed changelog partition but stores it locally under the event's partition, so on several
  workers the owner of the hashed partition never sees it until it recovers.)
"""

from __future__ import annotations

from typing import Any, Protocol

import faust

from retail_sync.tables import rocks


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

    def send_changelog(self, partition: int | None, key: Any, value: Any,
                       key_serializer: Any = None, value_serializer: Any = None) -> Any:
        """The value encoded once, for the changelog and the store write that follows
        (tables/rocks.py ``encode_once``)."""
        encode_once = getattr(self.data, "encode_once", None)
        if value is not None and value_serializer is None and encode_once is not None:
            value, value_serializer = encode_once(value), "raw"
        return super().send_changelog(partition, key, value, key_serializer, value_serializer)


def _table(app: faust.App, settings: TableSettings, name: str, codec: str, *,
           cache: bool = False, **kw: Any) -> faust.Table[str, Any]:
    """``cache``: keep decoded values (tables/rocks.py), only for values nobody mutates (our
    frozen pydantic models; not the plain JSON lists and dicts)."""
    table = CodecTable(
        app,
        name=name,
        value_codec=codec,
        key_type=str,
        partitions=settings.partitions,
        store=f"{rocks.SCHEME}:{name}",  # one RocksDB memory budget per worker (tables/rocks.py)
        options={"block_cache_size": settings.rocksdb_block_cache_bytes,
                 "write_buffer_budget": settings.rocksdb_write_buffer_bytes,
                 # decoded values kept (tables/rocks.py): this worker is each key's only writer
                 "decoded_cache_entries": settings.table_cache_entries if cache else 0},
        **kw,
    )
    app.tables.add(table)
    return table


def order_state_table(app: faust.App, settings: TableSettings) -> faust.Table[str, Any]:
    return _table(app, settings, "order-state", "rs.order_state", cache=True,
                  help="Canonical order, lifecycle status and correlation ids, by order_key.")


def order_index_table(app: faust.App, settings: TableSettings) -> faust.Table[str, Any]:
    return _table(app, settings, "order-index", "json",
                  help="External id (marketplace order id, ERP sales order) -> order_keys.")


def poll_cursor_table(app: faust.App, settings: TableSettings) -> faust.Table[str, Any]:
    return _table(app, settings, "poll-cursors", "json",
                  help="Polled channel -> its cursor (where the next poll starts) and counters.")


def stock_table(app: faust.App, settings: TableSettings) -> faust.Table[str, Any]:
    """SKU -> StockState, and ``SKU|order_key#line_id`` -> Reservation: one table for both, so a
    SKU's record and its lines share one changelog partition, written in order (lines first).
    Written only by the stock agent, whose input is keyed by SKU: Faust sends a table write to
    the changelog partition of the event being processed and stores it under that partition, so
    the composite keys live with their SKU."""
    return _table(app, settings, "stock", "rs.stock_record", cache=True,
                  help="SKU -> ERP positions, units held, what each channel was offered and "
                       "told; SKU|order line -> its reservation.")
