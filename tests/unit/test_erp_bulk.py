"""The ERP dispatch agent posting a batch in bulk (issue 16), falling back to one by one when the
bulk is refused. The connector's bulk post on the ERP simulator (``frappe.client.insert_many``) is
tested in test_erp_connector.py, beside the single post."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import pytest

from retail_sync.agents import erp_dispatch
from retail_sync.agents.outbox import Outbox
from retail_sync.connectors.contracts import ErpPostResult, SalesOrderPost
from retail_sync.connectors.errors import PermanentError
from retail_sync.streams.commands import ErpBatch, ErpPostRequest
from retail_sync.streams.events import OrderEvents
from tests.unit.test_batches import PARTITIONS, keys_by_partition
from tests.unit.test_erp_connector import make_order
from tests.unit.test_marketplace_commands import app_and_topics, context

NOW = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)


class _Erp:
    """Bulk posts that fail (``refuse``) or answer; single posts recorded."""

    def __init__(self, refuse: bool) -> None:
        self.refuse, self.bulk_calls = refuse, 0
        self.single: list[str] = []

    async def create_sales_orders(self, posts: list[SalesOrderPost]) -> list[ErpPostResult]:
        self.bulk_calls += 1
        if self.refuse:
            raise PermanentError("Could not find Item: NO-SUCH-ITEM", status=417)
        return [ErpPostResult(f"SO-{p.order_key}", True, NOW) for p in posts]

    async def create_sales_order(self, order_key: str, order: Any, *,
                                 backorders: Any = None) -> ErpPostResult:
        self.single.append(order_key)
        return ErpPostResult(f"SO-{order_key}", True, NOW)


@pytest.mark.parametrize("refuse", [False, True])
async def test_the_dispatch_agent_posts_a_batch_in_bulk_or_one_by_one(refuse: bool) -> None:
    app, topics, sent = app_and_topics([])
    ctx = context(app, topics, {})
    keys = keys_by_partition("shopify:")[0][:3]
    batch = ErpBatch(requests=[ErpPostRequest(order_key=k, order=make_order(k.split(":")[1]),
                                              received_at=NOW, requested_at=NOW) for k in keys])
    erp = _Erp(refuse)
    outbox = Outbox(topics, PARTITIONS)
    await asyncio.wait_for(erp_dispatch.dispatch_batch(
        ctx, lambda: erp, batch, outbox, asyncio.Semaphore(4)), 5)  # type: ignore[arg-type]
    await outbox.flush()
    assert erp.bulk_calls == 1
    assert sorted(erp.single) == (sorted(keys) if refuse else [])  # refused: one by one
    [(_, record)] = sent[topics.order_events.get_topic_name()]
    assert isinstance(record, OrderEvents)
    assert sorted((e.order_key, e.erp_sales_order) for e in record.events) == sorted(
        (k, f"SO-{k}") for k in keys)
