"""Bulk Sales Orders (issue 16): ``frappe.client.insert_many`` on the ERP simulator through the
real connector: a few requests for many orders, exactly once, all or nothing; and the ERP
dispatch agent posting a batch in bulk, falling back to one by one when the bulk is refused."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import aiohttp
import pytest

from retail_sync.agents import erp_dispatch
from retail_sync.agents.outbox import Outbox
from retail_sync.connectors.contracts import ErpPostResult, SalesOrderPost
from retail_sync.connectors.erpnext.bulk import order_doc as bulk_doc
from retail_sync.connectors.erpnext.client import ErpNextConnector
from retail_sync.connectors.errors import PermanentError
from retail_sync.simulators.erpnext.simulator import ErpSimConfig, ErpSimulator, run_erp_simulator
from retail_sync.streams.commands import ErpBatch, ErpPostRequest
from retail_sync.streams.events import OrderEvents
from tests.unit.test_batches import PARTITIONS, keys_by_partition
from tests.unit.test_erp_connector import make_order
from tests.unit.test_marketplace_commands import app_and_topics, context

NOW = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)


@pytest.fixture
async def sim() -> AsyncIterator[ErpSimulator]:
    simulator = await run_erp_simulator("127.0.0.1", 0, ErpSimConfig(seed=1))
    yield simulator
    await simulator.stop()


@pytest.fixture
async def erp(sim: ErpSimulator) -> AsyncIterator[ErpNextConnector]:
    assert sim.base_url
    connector = ErpNextConnector(sim.base_url, "demo-key", "demo-secret", timeout_s=5.0)
    yield connector
    await connector.close()


def posts(*ids: str) -> list[SalesOrderPost]:
    return [SalesOrderPost(f"shopify:{i}", make_order(i)) for i in ids]


async def test_many_orders_in_three_requests_exactly_once(sim: ErpSimulator,
                                                          erp: ErpNextConnector) -> None:
    [early] = await erp.create_sales_orders(posts("1"))  # an order the ERP already holds
    assert early.created and early.created_at is not None
    before = sim.stats()["posts_received"]
    results = await erp.create_sales_orders(posts("2", "1", "3", "2"))  # "2" twice: one order
    assert sim.stats()["posts_received"] - before == 1  # one insert_many for "2" and "3"
    assert [r.created for r in results] == [True, False, True, True]
    assert results[1] == ErpPostResult(early.erp_sales_order, False, early.created_at)
    assert results[0] == results[3]
    for key, result in zip(["shopify:2", "shopify:3"], [results[0], results[2]], strict=True):
        stored = sim.order_by_po_no(key)
        assert stored is not None and stored.doc["name"] == result.erp_sales_order
        assert stored.doc["docstatus"] == 1  # submitted: the ERP reserves, as a single post
        assert result.created_at is not None
    again = await erp.create_sales_orders(posts("2", "3"))  # a retry: found, nothing new
    assert [r.erp_sales_order for r in again] == [results[0].erp_sales_order,
                                                  results[2].erp_sales_order]
    assert not any(r.created for r in again) and len(sim.orders) == 3


async def test_more_than_two_hundred_go_in_requests_of_two_hundred(
        sim: ErpSimulator, erp: ErpNextConnector) -> None:
    before = sim.stats()["posts_received"]
    results = await erp.create_sales_orders(posts(*(str(i) for i in range(201))))
    assert sim.stats()["posts_received"] - before == 2
    assert len({r.erp_sales_order for r in results}) == 201 and len(sim.orders) == 201


async def test_one_refused_order_refuses_the_whole_request(sim: ErpSimulator,
                                                            erp: ErpNextConnector) -> None:
    bad = SalesOrderPost("shopify:bad", make_order("9").model_copy(update={"lines": [
        make_order("9").lines[0].model_copy(update={"sku": "NO-SUCH-ITEM"})]}))
    with pytest.raises(PermanentError, match="NO-SUCH-ITEM"):
        await erp.create_sales_orders([*posts("7", "8"), bad])
    assert sim.orders == {}  # all or nothing, as one Frappe request's transaction


async def test_the_simulator_refuses_what_frappe_refuses(sim: ErpSimulator,
                                                         erp: ErpNextConnector) -> None:
    auth = {"Authorization": "token demo-key:demo-secret"}
    url = f"{sim.base_url}/api/method/frappe.client.insert_many"
    doc = bulk_doc(erp, posts("1")[0])  # a valid Sales Order, as the connector writes it
    async with aiohttp.ClientSession() as http:
        async with http.post(url, json={"docs": [doc] * 201}, headers=auth) as resp:
            assert resp.status == 417 and "Only 200" in await resp.text()
        async with http.post(url, json={"docs": [doc, doc]}, headers=auth) as resp:
            assert resp.status == 417 and "must be unique" in await resp.text()  # within one
        async with http.post(url, json={"docs": [doc]}) as resp:
            assert resp.status in (401, 403)  # no token
        assert sim.orders == {}
        async with http.post(url, json={"docs": json.dumps([doc])}, headers=auth) as resp:
            assert resp.status == 200  # docs as JSON text, as a form would send them
            [name] = (await resp.json())["message"]
    assert list(sim.orders) == [name]


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
