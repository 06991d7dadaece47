"""The worker's start-up check of the ERP's Custom Fields (connectors/erpnext/fields_check.py), over
HTTP against the ERP simulator, which answers ``GET /api/resource/Custom Field`` from
connectors/erpnext/fields.py CUSTOM_FIELDS (less what a test says its site lacks)."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from retail_sync.connectors.erpnext.fields import CUSTOM_FIELDS
from retail_sync.connectors.erpnext.fields_check import check, messages, problems_of
from retail_sync.connectors.erpnext.frappe import FrappeSession
from retail_sync.simulators.erpnext.simulator import ErpSimConfig, ErpSimulator

ROOT = Path(__file__).resolve().parents[2]
ORDER_KEY = "Sales Order.custom_marketplace_order_key"
SHIPMENT = "Delivery Note.custom_shipment_id"


@pytest.fixture
async def erp() -> AsyncIterator[ErpSimulator]:
    sim = ErpSimulator(ErpSimConfig())
    await sim.start()
    yield sim
    await sim.stop()


def session(erp: ErpSimulator, secret: str = "demo-secret") -> FrappeSession:
    return FrappeSession(erp.base_url, "demo-key", secret, timeout_s=5)


async def test_a_site_with_every_custom_field_passes(erp: ErpSimulator) -> None:
    client = session(erp)
    try:
        result = await check(client)
        rows = await client.get_data(client.url("Custom Field"), "list", params={
            "filters": '[["dt","in",["Sales Order"]]]', "fields": '["dt","fieldname","unique"]',
            "limit_page_length": "0"})
    finally:
        await client.close()
    assert result.ok, result
    assert {r["fieldname"] for r in rows} == set(CUSTOM_FIELDS["Sales Order"])
    assert {r["dt"] for r in rows} == {"Sales Order"} and all(set(r) == {"dt", "fieldname", "unique"}
                                                              for r in rows)


async def test_a_missing_field_and_a_field_not_unique_are_named(erp: ErpSimulator) -> None:
    erp.set_config({"missing_custom_fields": [ORDER_KEY], "non_unique_custom_fields": [SHIPMENT]})
    client = session(erp)
    try:
        result = await check(client)
    finally:
        await client.close()
    assert len(result.problems) == 2, result
    assert "Sales Order.custom_marketplace_order_key" in result.problems[0]
    assert "missing" in result.problems[0]
    assert "Delivery Note.custom_shipment_id must be unique" in result.problems[1]
    lines, refuse = messages(result, "warn")
    assert not refuse and [level for level, _ in lines] == ["ERROR"] * 3
    assert messages(result, "refuse")[1] is True


async def test_an_erp_that_cannot_be_asked_is_a_warning_never_a_refusal(erp: ErpSimulator) -> None:
    client = session(erp, secret="wrong")
    try:
        result = await check(client)
    finally:
        await client.close()
    assert result.problems == [] and result.unverified and "Authentication" in result.unverified
    lines, refuse = messages(result, "refuse")
    assert not refuse and [level for level, _ in lines] == ["WARNING"]


def test_problems_of_reads_unique_as_erpnext_answers_it() -> None:
    rows = [{"dt": dt, "fieldname": name, "unique": df.get("unique", 0)}
            for dt, fields in CUSTOM_FIELDS.items() for name, df in fields.items()]
    assert problems_of(rows) == []
    rows[0]["unique"] = 0
    assert [p.split(" (")[0] for p in problems_of(rows)] == [
        f"Custom Field {rows[0]['dt']}.{rows[0]['fieldname']} must be unique"]


async def test_the_worker_refuses_to_start_when_told_to(erp: ErpSimulator) -> None:
    """Through the real command line: RETAIL_SYNC_ERP_CUSTOM_FIELDS_CHECK=refuse and a site
    without the order key field -> exit 2 naming it, before any broker is contacted."""
    erp.set_config({"missing_custom_fields": [ORDER_KEY]})
    clean = {k: v for k, v in os.environ.items() if not k.upper().startswith("RETAIL_SYNC_")}
    env = {**clean, "PYTHONPATH": str(ROOT), "RETAIL_SYNC_BROKER_URL": "kafka://127.0.0.1:1",
           "RETAIL_SYNC_ERP_BASE_URL": erp.base_url, "RETAIL_SYNC_ERP_CUSTOM_FIELDS_CHECK": "refuse"}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "retail_sync.cli", "worker", env=env, cwd=ROOT,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    _, err = await asyncio.wait_for(proc.communicate(), 60)
    stderr = err.decode()
    assert proc.returncode == 2, stderr
    assert "ERROR: ERP CUSTOM FIELDS: Custom Field Sales Order.custom_marketplace_order_key" in stderr
    assert "refusing to start" in stderr and "Traceback" not in stderr
