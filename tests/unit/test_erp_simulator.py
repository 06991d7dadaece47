"""The ERP simulator over real HTTP: Frappe-style create/read/list, idempotency, auth, faults."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import aiohttp
import pytest

from simulators.erp import ErpSimConfig, ErpSimulator, run_erp_simulator
from simulators.erp_docs import DocValidationError, build_sales_order

AUTH = {"Authorization": "token demo-key:demo-secret"}
SO = "/api/resource/Sales%20Order"


def doc(po_no: object = "shopify:1", **overrides: object) -> dict[str, object]:
    base: dict[str, object] = {
        "customer": "Marketplace Customer",
        "company": "Retail Sync Demo Ltd",
        "po_no": po_no,
        "transaction_date": "2026-01-10",
        "currency": "USD",
        "set_warehouse": "Stores - RSD",
        "marketplace": "shopify",
        "items": [
            {"item_code": "SKU-1", "item_name": "One", "qty": 2, "rate": "19.99"},
            {"item_code": "SKU-2", "qty": 1, "rate": 5},
        ],
        "taxes": [{"charge_type": "Actual", "account_head": "Sales Tax", "tax_amount": "2.70"}],
    }
    return {**base, **overrides}


@pytest.fixture
async def sim() -> AsyncIterator[ErpSimulator]:
    simulator = await run_erp_simulator("127.0.0.1", 0, ErpSimConfig(seed=7))
    yield simulator
    await simulator.stop()


@pytest.fixture
async def http(sim: ErpSimulator) -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(base_url=sim.base_url) as session:
        yield session


async def test_create_returns_draft_sales_order(http: aiohttp.ClientSession) -> None:
    async with http.post(SO, json=doc(), headers=AUTH) as resp:
        assert resp.status == 200
        assert "X-Idempotent-Replay" not in resp.headers
        data = (await resp.json())["data"]
    year = datetime.now(UTC).year
    assert data["name"] == f"SAL-ORD-{year}-00001"
    assert (data["doctype"], data["docstatus"], data["status"]) == ("Sales Order", 0, "Draft")
    assert data["grand_total"] == pytest.approx(2 * 19.99 + 5 + 2.70)
    assert data["per_delivered"] == 0 and data["per_billed"] == 0
    assert [i["idx"] for i in data["items"]] == [1, 2]
    assert data["items"][0]["amount"] == pytest.approx(39.98)
    assert data["marketplace"] == "shopify"


async def test_repeat_po_no_replays_same_document(
    sim: ErpSimulator, http: aiohttp.ClientSession
) -> None:
    async with http.post(SO, json=doc("shopify:9"), headers=AUTH) as resp:
        first = (await resp.json())["data"]
    async with http.post(SO, json=doc("shopify:9"), headers=AUTH) as resp:
        assert resp.status == 200
        assert resp.headers["X-Idempotent-Replay"] == "true"
        again = (await resp.json())["data"]
    assert again == first
    stats = sim.stats()
    assert (stats["orders_created"], stats["idempotent_replays"], stats["posts_received"]) == (
        1,
        1,
        2,
    )


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"customer": ""}, "customer"),
        ({"po_no": None}, "po_no"),
        ({"items": []}, "Items"),
        ({"items": [{"item_code": "A", "qty": 0, "rate": 1}]}, "must be positive"),
        ({"items": [{"item_code": "A", "qty": 1, "rate": "abc"}]}, "Rate must be a number"),
        ({"currency": "US$"}, "Currency"),
        ({"delivery_date": "2026-01-01"}, "Delivery Date"),
    ],
)
async def test_validation_errors_are_417(
    sim: ErpSimulator, http: aiohttp.ClientSession, overrides: dict[str, object], reason: str
) -> None:
    async with http.post(SO, json=doc(**overrides), headers=AUTH) as resp:
        assert resp.status == 417
        body = await resp.json()
    assert body["exc_type"] == "ValidationError"
    assert body["exception"].startswith("frappe.exceptions.ValidationError: ")
    assert reason in body["exception"]
    assert reason in json.loads(json.loads(body["_server_messages"])[0])["message"]
    assert sim.stats()["validation_errors"] == 1 and not sim.orders


async def test_bad_credentials_are_401(sim: ErpSimulator, http: aiohttp.ClientSession) -> None:
    bad = {"Authorization": "token demo-key:wrong"}
    async with http.post(SO, json=doc(), headers=bad) as resp:
        assert resp.status == 401
        assert (await resp.json())["exc_type"] == "AuthenticationError"
    async with http.get(SO) as resp:
        assert resp.status == 401
    assert sim.stats()["auth_failures"] == 2 and not sim.orders


async def test_read_and_list_with_filters(http: aiohttp.ClientSession) -> None:
    for n in range(3):
        async with http.post(SO, json=doc(f"shopify:{n}"), headers=AUTH) as resp:
            name = (await resp.json())["data"]["name"]
    async with http.get(f"{SO}/{name}", headers=AUTH) as resp:
        assert (await resp.json())["data"]["po_no"] == "shopify:2"
    async with http.get(f"{SO}/SAL-ORD-1999-00001", headers=AUTH) as resp:
        assert resp.status == 404
        assert (await resp.json())["exc_type"] == "DoesNotExistError"
    params = {
        "filters": json.dumps([["Sales Order", "po_no", "=", "shopify:1"]]),
        "fields": json.dumps(["name", "po_no"]),
    }
    async with http.get(SO, params=params, headers=AUTH) as resp:
        rows = (await resp.json())["data"]
    assert len(rows) == 1 and rows[0]["po_no"] == "shopify:1" and set(rows[0]) == {"name", "po_no"}
    params = {"filters": json.dumps([["marketplace", "=", "shopify"]]), "limit_page_length": "0"}
    async with http.get(SO, params=params, headers=AUTH) as resp:
        assert len((await resp.json())["data"]) == 3
    async with http.get(
        SO, params={"limit_page_length": "2", "limit_start": "2"}, headers=AUTH
    ) as resp:
        assert [set(r) for r in (await resp.json())["data"]] == [{"name"}]


async def test_injected_errors_have_no_effect(
    sim: ErpSimulator, http: aiohttp.ClientSession
) -> None:
    async with http.put("/_sim/config", json={"error_rate": 1.0, "error_status": 503}) as resp:
        assert (await resp.json())["error_rate"] == 1.0
    async with http.post(SO, json=doc(), headers=AUTH) as resp:
        assert resp.status == 503
        assert "exc_type" in await resp.json()
    assert sim.stats()["errors_injected"] == 1 and not sim.orders
    async with http.put("/_sim/config", json={"bogus": 1}) as resp:
        assert resp.status == 400


async def test_control_endpoints_report_orders_with_times(
    sim: ErpSimulator, http: aiohttp.ClientSession
) -> None:
    async with http.post(SO, json=doc("shopify:5"), headers=AUTH) as resp:
        assert resp.status == 200
    async with http.get("/_sim/orders") as resp:
        (row,) = await resp.json()
    assert row["po_no"] == "shopify:5"
    assert row["received_at_epoch"] == sim.order_by_po_no("shopify:5").received_at  # type: ignore[union-attr]
    assert datetime.fromisoformat(row["received_at"]).tzinfo is not None
    async with http.get("/_sim/stats") as resp:
        assert (await resp.json())["orders_created"] == 1
    async with http.post("/_sim/reset") as resp:
        assert resp.status == 200
    assert sim.stats()["orders_created"] == 0 and not sim.orders


def test_on_net_total_tax_and_discount() -> None:
    body = doc(
        discount_amount="4.98",
        apply_discount_on="Net Total",
        taxes=[{"charge_type": "On Net Total", "account_head": "VAT", "rate": 10}],
    )
    built = build_sales_order(body, now=datetime(2026, 1, 10, tzinfo=UTC))
    assert built["net_total"] == pytest.approx(44.98)
    assert built["taxes"][0]["tax_amount"] == pytest.approx(4.0)
    assert built["grand_total"] == pytest.approx(44.98 - 4.98 + 4.0)
    with pytest.raises(DocValidationError):
        build_sales_order(
            doc(taxes=[{"charge_type": "Bogus", "account_head": "X"}]), now=datetime.now(UTC)
        )
