"""Order state tables.

- ``order-state``: key order_key -> OrderState. Written only by the order agent, whose input topic
  (order-events) is keyed by order_key, so each key has a single writer and the changelog
  partition matches the source partition.
- ``order-index``: key any external id (marketplace order id, ERP sales-order number) -> the
  order_keys known by it. Its keys differ from the stream's key, so it hashes its own key
  (``use_partitioner=True``) and lookups are routed to the owner of that hash.
"""

from __future__ import annotations

import faust

from retail_sync.settings import Settings


def _options(settings: Settings) -> dict[str, int]:
    return {"block_cache_size": settings.rocksdb_block_cache_bytes}


def order_state_table(app: faust.App, settings: Settings) -> faust.Table:
    return app.Table(
        "order-state",
        key_type=str,
        key_serializer="raw",
        value_serializer="rs.order_state",
        partitions=settings.partitions,
        options=_options(settings),
        help="Canonical order, lifecycle status and correlation ids, by order_key.",
    )


def order_index_table(app: faust.App, settings: Settings) -> faust.Table:
    return app.Table(
        "order-index",
        key_type=str,
        key_serializer="raw",
        value_serializer="json",
        partitions=settings.partitions,
        use_partitioner=True,
        options=_options(settings),
        help="External id (marketplace order id, ERP sales order) -> order_keys.",
    )
