"""The worker's views answer bad query parameters with 400 and a clear message, and an operator
cancellation needs no body (issue 11, item 6). A real worker process on the embedded broker."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest

from retail_sync.simulators.shopify.simulator import ShopifyOrderFactory
from retail_sync.stack import Stack, WorkerProcess
from tests.integration.helpers import eventually, headers, order_body, post_webhook

pytestmark = pytest.mark.integration


async def request(worker: WorkerProcess, method: str, path: str,
                  data: bytes | None = None) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as session, session.request(
            method, worker.url + path, data=data,
            headers={**worker.headers, "Content-Type": "application/json"}) as resp:
        text = await resp.text()
        try:
            return resp.status, await resp.json(content_type=None)
        except ValueError:
            return resp.status, text


BAD_QUERIES = [
    ("/orders/lookup", "'id' is required"),
    ("/orders/lookup?id=", "'id' is required"),
    ("/orders/lookup?id=%20", "'id' is required"),
    ("/audit?limit=-1", "limit must be a whole number from 0 to 10000"),
    ("/audit?since=yesterday", "since must be an ISO-8601 time"),
    ("/exceptions?limit=abc", "limit must be a whole number from 0 to 10000"),
    ("/exceptions?limit=-5", "limit must be a whole number from 0 to 10000"),
    ("/exceptions?limit=1.5", "limit must be a whole number from 0 to 10000"),
    ("/exceptions?older_than_s=nan", "older_than_s must be a number from 0"),
    ("/exceptions?older_than_s=-1", "older_than_s must be a number from 0"),
    ("/exceptions?newer_than_s=inf", "newer_than_s must be a number from 0"),
    ("/exceptions?kind=nope", "kind must be one of decode, mapping"),
]


async def test_bad_query_parameters_are_400_with_a_clear_message(stack: Stack) -> None:
    worker = await stack.start_worker()
    wrong = []
    for path, message in BAD_QUERIES:
        status, body = await request(worker, "GET", path)
        if status != 400 or not isinstance(body, dict) or message not in body.get("error", ""):
            wrong.append((path, status, body))
        elif "invalid literal" in body["error"] or "could not convert" in body["error"]:
            wrong.append((path, "Python's error text", body))
    assert not wrong, "\n".join(map(repr, wrong))

    status, body = await request(worker, "POST", "/exceptions/replay", b'{"kind": "nope"}')
    assert status == 400 and body["error"].startswith("kind must be one of"), body
    # good values still work
    assert (await request(worker, "GET", "/exceptions?limit=0&older_than_s=0"))[0] == 200
    assert (await request(worker, "GET", "/orders/lookup?id=nope"))[0] == 404


async def test_cancel_needs_no_body_and_uses_the_default_reason(stack: Stack) -> None:
    worker = await stack.start_worker()
    factory = ShopifyOrderFactory(seed=66)
    keys = []
    for _ in range(2):
        order, body = order_body(factory)
        status, _ = await post_webhook(worker.ingress_url, body, headers(body))
        assert status == 200
        keys.append(f"shopify:{order['id']}")
    for key in keys:
        await eventually(lambda k=key: _status_is(worker, k, "erp_confirmed"), timeout_s=60)

    for key, data in zip(keys, (b"{}", b""), strict=True):
        status, answer = await request(worker, "POST", f"/orders/{key}/cancel", data)
        assert status == 202, (data, status, answer)
        state = await eventually(lambda k=key: _status_is(worker, k, "cancelled"), timeout_s=60)
        assert "cancelled by an operator" in (state.get("cancel_reason") or ""), state
    status, answer = await request(worker, "POST", f"/orders/{keys[0]}/cancel", b"[1, 2]")
    assert status == 400 and "JSON object" in answer["error"], answer


async def _status_is(worker: WorkerProcess, key: str, wanted: str) -> dict | None:
    status, state = await worker.get_json(f"/orders/{key}")
    return state if status == 200 and state.get("status") == wanted else None
