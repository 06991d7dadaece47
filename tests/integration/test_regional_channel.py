"""The regional marketplace end to end: CSV batch files in a drop dir, a real broker and worker.

Good orders reach the ERP exactly once; orders with unknown status codes or malformed rows become
sync-exception records naming the file and row; after a restart only new files are ingested."""

from __future__ import annotations

import json

import orjson
import pytest

from retail_sync.simulators.regional.simulator import RegionalSimulator
from retail_sync.stack import Stack
from tests.integration.helpers import eventually

pytestmark = pytest.mark.integration


def _po_numbers(stack: Stack) -> set[str]:
    assert stack.erp is not None
    return {o.doc["po_no"] for o in stack.erp.orders.values() if o.doc["po_no"].startswith("regional:")}


def _to_erp(sim: RegionalSimulator) -> set[str]:
    """Good orders that must reach the ERP: all but those first listed as cancelled."""
    return {f"regional:{ref}" for ref in sim.good_refs if sim.orders[ref].state() != "cancelled"}


async def _state(worker, key: str):
    status, state = await worker.get_json(f"/orders/{key}")
    return (status, state) if status == 200 else None


async def _mapping_exceptions(stack: Stack) -> list[dict]:
    records = [orjson.loads(r.value) for r in await stack.read_topic("sync-exceptions")]
    return [r for r in records if r["kind"] == "mapping" and r.get("channel") == "regional"]


async def test_regional_batches_reach_the_erp_once_and_bad_rows_become_exceptions(
        stack: Stack, tmp_path) -> None:
    drop = tmp_path / "regional-drop"
    sim = RegionalSimulator(drop, seed=7)
    first = sim.write_batch(15)
    second = sim.write_batch(20, unknown_rate=0.2, malformed_rate=0.2)
    assert sim.bad_refs, "the seed must produce some bad orders"
    stack.env.update({
        "RETAIL_SYNC_REGIONAL_DROP_DIR": str(drop),
        "RETAIL_SYNC_POLL_INTERVAL_S": "0.5",
    })
    worker = await stack.start_worker()
    want = _to_erp(sim)
    await eventually(lambda: _po_numbers(stack) == want, timeout_s=60)
    # orders the marketplace already lists as cancelled are recorded, never sent to the ERP
    gone = {f"regional:{ref}" for ref in sim.good_refs} - want
    for key in gone:
        status, state = await eventually(lambda k=key: _state(worker, k), timeout_s=30)
        assert state["status"] == "cancelled" and state["correlation"]["erp_sales_order"] is None

    async def all_bad_recorded():
        found = await _mapping_exceptions(stack)
        return found if len(found) >= len(sim.bad_refs) else None

    records = await eventually(all_bad_recorded, timeout_s=30)
    by_key = {r["source_key"]: r for r in records}
    assert set(by_key) == {f"regional:{ref}" for ref in sim.bad_refs}
    for ref in sim.bad_refs:
        record = by_key[f"regional:{ref}"]
        assert second.name in record["reason"] and " row " in record["reason"]
        payload = json.loads(json.loads(record["payload"])["body"])  # the raw message's body
        assert payload["file"] == second.name
        assert {row["order_ref"] for row in payload["rows"]} == {ref}
        assert all("_row" in row for row in payload["rows"])

    await stack.restart(worker)
    third = sim.write_batch(10)
    want = _to_erp(sim)
    await eventually(lambda: _po_numbers(stack) == want, timeout_s=60)
    assert stack.erp is not None and stack.erp.stats()["orders_created"] == len(want)
    raw = await stack.read_topic("orders-raw")
    files = [json.loads(orjson.loads(r.value)["body"])["file"] for r in raw]
    # every order of every file once: the restarted worker resumed after the second file
    assert len(raw) == sim.stats()["orders"]
    assert files.count(first.name) == 15 and files.count(second.name) == 20
    assert files.count(third.name) == 10
