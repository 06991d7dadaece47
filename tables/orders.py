"""Order state tables.

- ``order-state``: key order_key -> OrderState. Written only by the order agent, whose input topic
  (order-events) is keyed by order_key, so each key has a single writer and the changelog
  partition matches the source partition.
- ``order-index``: key any external id (marketplace order id, ERP sales-order number) -> the
  order_keys known by it. Its keys differ from the stream's key, so it hashes its own key
  (``use_partitioner=True``) and lookups are routed to the owner of that hash.
"""

from __future__ import annotations

from typing import Any

import faust

from retail_sync.settings import Settings


def _table(app: faust.App, settings: Settings, name: str, codec: str, **kw: Any) -> faust.Table:
    table = app.Table(
        name,
        key_type=str,
        partitions=settings.partitions,
        options={"block_cache_size": settings.rocksdb_block_cache_bytes},
        **kw,
    )
    # Faust derives a table's serializers from Faust model types only; our values are pydantic
    # models carried by registered codecs, so name them before the store and changelog exist.
    table.key_serializer = "raw"
    table.value_serializer = codec
    return table


def order_state_table(app: faust.App, settings: Settings) -> faust.Table:
    return _table(app, settings, "order-state", "rs.order_state",
                  help="Canonical order, lifecycle status and correlation ids, by order_key.")


def order_index_table(app: faust.App, settings: Settings) -> faust.Table:
    return _table(app, settings, "order-index", "json", use_partitioner=True,
                  help="External id (marketplace order id, ERP sales order) -> order_keys.")
