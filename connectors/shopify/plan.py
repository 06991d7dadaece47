"""Shopify's rate plan (requests per second, burst) for the Admin REST API."""

from __future__ import annotations

from retail_sync.connectors.ratelimit import Plan

#: Shopify Admin REST: one leaky bucket per store and app, 40 calls leaking at 2/s (Plus: 80 at
#: 4/s); we keep 2 calls free for other tools of the same app.
SHOPIFY_BUCKET, SHOPIFY_HEADROOM = 40, 2
SHOPIFY_PLANS: dict[str, Plan] = {"admin": (SHOPIFY_BUCKET / 20, SHOPIFY_BUCKET - SHOPIFY_HEADROOM)}
