"""Personal data on a live worker (issue 13): with a token without ``pii`` no GET view of the admin
listener (every one the served OpenAPI document lists) and no line of the worker's log holds the
customer data the test sent (names, emails, streets, phones from the Shopify order factory, an
email inside a body that is not JSON, an email and a phone in an operator's cancel reason); with
``pii`` the order view shows them."""

from __future__ import annotations

import re
from typing import Any

import aiohttp
import orjson
import pytest

from retail_sync.simulators.shopify.simulator import ShopifyOrderFactory
from retail_sync.stack import Stack
from tests.integration.helpers import eventually, headers, order_body, post_webhook

pytestmark = pytest.mark.integration


def personal_values(order: dict[str, Any]) -> set[str]:
    """What the order discloses about its buyer, as sent."""
    values = {order["email"], order["customer"]["email"]}
    for name in ("shipping_address", "billing_address"):
        address = order[name]
        values |= {address["name"], f"{address['first_name']} {address['last_name']}",
                   address["address1"], address["phone"]}
    return {v for v in values if v}


async def get(session: aiohttp.ClientSession, url: str, hdrs: dict[str, str]) -> tuple[int, str]:
    async with session.get(url, headers=hdrs) as resp:
        return resp.status, await resp.text()


async def test_no_view_and_no_log_line_shows_customer_data_without_pii(stack: Stack) -> None:
    stack.env["RETAIL_SYNC_LOG_LEVEL"] = "debug"  # debug lines carry request bodies
    worker = await stack.start_worker()
    factory = ShopifyOrderFactory(seed=29)
    sent: set[str] = set()
    orders = []
    for _ in range(4):
        order, body = order_body(factory)
        assert (await post_webhook(worker.ingress_url, body, headers(body)))[0] == 200
        orders.append(order)
        sent |= personal_values(order)
    # a mapping exception: its payload is the raw record with the whole marketplace body
    broken, body = order_body(factory, currency="dollars")
    assert (await post_webhook(worker.ingress_url, body, headers(body)))[0] == 200
    sent |= personal_values(broken)
    # a decode exception: a body that is not JSON, kept verbatim
    junk = b"not json: please call back zoe.quinn.4711@example.net"
    assert (await post_webhook(worker.ingress_url, junk, headers(junk)))[0] == 400
    sent.add("zoe.quinn.4711@example.net")
    keys = [f"shopify:{o['id']}" for o in orders]

    async def all_known() -> bool:
        return all([(await worker.get_json(f"/orders/{k}"))[0] == 200 for k in keys])

    await eventually(all_known, timeout_s=60)
    # an operator's free text with personal data lands in the audit trail and the timeline
    status, _ = await worker.post_json(f"/orders/{keys[0]}/cancel", {
        "reason": "buyer rang from 555-867-5309, write to ada.byron.1815@example.org"})
    assert status == 202
    sent |= {"555-867-5309", "ada.byron.1815@example.org"}

    async def exceptions_recorded() -> bool:
        _, answer = await worker.get_json("/exceptions")
        return answer["summary"]["total"] >= 2

    await eventually(exceptions_recorded, timeout_s=30)

    viewer = stack.admin_headers("metrics", "viewer")  # every GET view, no pii
    skus = sorted({line["sku"] for o in orders for line in o["line_items"] if line.get("sku")})
    async with aiohttp.ClientSession() as session:
        doc = orjson.loads((await get(session, f"{worker.url}/openapi.json", {}))[1])
        gets = {path for path, ops in doc["paths"].items() if "get" in ops}
        urls = {
            "/": ["/"], "/openapi.json": ["/openapi.json"], "/health": ["/health"],
            "/health/live": ["/health/live"], "/metrics": ["/metrics"],
            "/orders/{order_key}": [f"/orders/{k}" for k in keys],
            "/orders/lookup": [f"/orders/lookup?id={orders[0]['id']}",
                               f"/orders/lookup?id={keys[1]}"],
            "/exceptions": ["/exceptions", "/exceptions?kind=mapping", "/exceptions?kind=decode"],
            "/inventory/{sku}": [f"/inventory/{s}" for s in skus],
            "/audit": ["/audit", f"/audit?target={keys[0]}"],
            "/reconciliation": ["/reconciliation"],
            "/reconciliation/jobs": ["/reconciliation/jobs"],
            "/reconciliation/jobs/{job_id}": ["/reconciliation/jobs/none"],
            "/dashboard/ops": ["/dashboard/ops"], "/dashboard/finance": ["/dashboard/finance"],
            "/dashboard/search": ["/dashboard/search"],
            "/dashboard/static/{name}": ["/dashboard/static/dashboard.js"],
            "/dashboard/data": ["/dashboard/data"],
            "/dashboard/orders": [f"/dashboard/orders?q={orders[0]['id']}",
                                  f"/dashboard/orders?q={orders[1]['email']}",
                                  f"/dashboard/orders?q={keys[1]}"],
        }
        assert gets <= set(urls), f"GET views the scan does not visit: {gets - set(urls)}"
        answers = {}
        for template in gets:
            for path in urls[template]:
                answers[path] = await get(session, worker.url + path, viewer)
        pii_view = await get(session, f"{worker.url}/orders/{keys[1]}",
                             stack.admin_headers("viewer", "pii"))

    assert answers[f"/orders/{keys[0]}"][0] == 200
    exceptions = orjson.loads(answers["/exceptions"][1])["exceptions"]
    assert {e["kind"] for e in exceptions} >= {"mapping", "decode"}
    for path, (status, text) in answers.items():
        leaked = sorted(v for v in sent if v.lower() in text.lower())
        assert not leaked, f"{path} ({status}) shows {leaked}"
    masked = orjson.loads(answers[f"/orders/{keys[1]}"][1])
    assert re.fullmatch(r"\w\*\*\*@\w\*\*\*\.com", masked["order"]["customer"]["email"])
    assert masked["order"]["shipping_address"]["city"] == orders[1]["shipping_address"]["city"]

    # with pii: the order as it is
    assert pii_view[0] == 200
    shown = orjson.loads(pii_view[1])["order"]
    assert shown["customer"]["email"] == orders[1]["email"]
    assert shown["shipping_address"]["line1"] == orders[1]["shipping_address"]["address1"]

    log = worker.log_path.read_text(errors="replace")
    assert len(log.splitlines()) > 5
    leaked = sorted(v for v in sent if v.lower() in log.lower())
    assert not leaked, f"the worker log shows {leaked}"
