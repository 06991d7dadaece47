"""Walmart's rate plans per operation (requests per second, burst)."""

from __future__ import annotations

from retail_sync.connectors.ratelimit import Plan

#: Walmart publishes limits per seller and reports them live (x-current-token-count,
#: x-next-replenish-time); these are 90% of the plans our simulator enforces.
WALMART_PLANS: dict[str, Plan] = {
    "released": (18.0, 18), "orders": (18.0, 18), "acknowledge": (9.0, 9),
    "cancel": (9.0, 9), "shipping": (9.0, 9), "refund": (9.0, 9),
    "inventory": (3.0, 10), "feeds": (9 / 3600, 9), "feed_status": (18.0, 18),
}  # fmt: skip
