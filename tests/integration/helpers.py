"""Small helpers shared by the integration tests."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Callable
from typing import Any

import aiohttp

from simulators.shopify import ShopifyOrderFactory, sign

SECRET = "shpss_demo_secret"  # the worker's default RETAIL_SYNC_SHOPIFY_WEBHOOK_SECRET


async def eventually(check: Callable[[], Any], timeout_s: float = 30.0, every: float = 0.2) -> Any:
    """Poll ``check`` (sync or async) until it returns something truthy; fail with its last value."""
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if asyncio.iscoroutine(last):
            last = await last
        if last:
            return last
        await asyncio.sleep(every)
    raise AssertionError(f"condition not met within {timeout_s}s (last value: {last!r})")


def headers(body: bytes, *, webhook_id: str | None = None, secret: str = SECRET,
            topic: str = "orders/create") -> dict[str, str]:
    return {
        "Content-Type": "application/json",
        "X-Shopify-Topic": topic,
        "X-Shopify-Hmac-Sha256": sign(body, secret),
        "X-Shopify-Shop-Domain": "test-shop.myshopify.com",
        "X-Shopify-API-Version": "2024-04",
        "X-Shopify-Webhook-Id": webhook_id or str(uuid.uuid4()),
    }


async def post_webhook(url: str, body: bytes, hdrs: dict[str, str],
                       path: str = "/webhooks/shopify/orders/create") -> tuple[int, Any]:
    async with aiohttp.ClientSession() as session, \
            session.post(url + path, data=body, headers=hdrs) as resp:
        return resp.status, await resp.json(content_type=None)


def order_body(factory: ShopifyOrderFactory, **changes: Any) -> tuple[dict[str, Any], bytes]:
    order = {**factory.order(), **changes}
    return order, json.dumps(order).encode()
