"""The Shopify simulator's configuration (``PUT /_sim/config`` changes it while it runs)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

JSON = dict[str, Any]


@dataclass
class ShopifySimConfig:
    webhook_url: str
    secret: str
    shop_domain: str = "retail-sync-demo.myshopify.com"
    api_version: str = "2024-04"
    rate_per_s: float = 10
    duplicate_rate: float = 0.0
    malformed_rate: float = 0.0
    unmappable_rate: float = 0.0
    max_attempts: int = 5  # 1 + retries
    retry_backoff_s: float = 0.5  # doubled after every failed attempt
    request_timeout_s: float = 5.0  # Shopify's total timeout
    concurrency: int = 32
    seed: int | None = None
    access_token: str = "shpat_demo"  # noqa: S105 - demo credential of a simulator
    api_bucket_capacity: int = 40  # Shopify Plus: 80
    api_leak_per_s: float = 2.0  # Shopify Plus: 4
    location_id: int = 905684977
    listing_mode: str = "refuse"  # "refuse" | "allow" (see simulators/listings.py)
    skus: list[str] | None = None  # SKUs generated orders draw from; None: the factory's default
    extra_skus: list[str] = field(default_factory=list)  # more products, never ordered
    max_quantity: int = 3  # units per generated line: 1..max_quantity
    edit_rate: float = 0.0  # share of good orders edited (a unit or a line less) after creation
    edit_delay_s: float = 0.5  # ... that long after their orders/create was accepted

    def updated(self, changes: JSON) -> ShopifySimConfig:
        """A copy with ``changes`` applied (coerced to each field's type); unknown fields raise."""
        unknown = set(changes) - {f.name for f in fields(self)}
        if unknown:
            raise ValueError(f"unknown config fields: {sorted(unknown)}")
        merged = asdict(self)
        for name, value in changes.items():
            merged[name] = _coerce(name, merged[name], value)
        if merged["listing_mode"] not in ("refuse", "allow"):
            raise ValueError("listing_mode must be 'refuse' or 'allow'")
        if merged["max_quantity"] < 1 or merged["api_bucket_capacity"] < 1:
            raise ValueError("max_quantity and api_bucket_capacity must be >= 1")
        if not 0 <= merged["edit_rate"] <= 1 or merged["edit_delay_s"] < 0:
            raise ValueError("edit_rate must be within 0..1 and edit_delay_s >= 0")
        return ShopifySimConfig(**merged)


def _coerce(name: str, current: Any, value: Any) -> Any:
    if name in ("skus", "extra_skus"):
        if value is None and name == "skus":
            return None
        if not isinstance(value, list) or not value and name == "skus":
            raise ValueError(f"{name} must be a non-empty list of SKUs")
        return [str(v) for v in value]
    if name == "seed":
        return None if value is None else int(value)
    if isinstance(current, bool):
        if not isinstance(value, bool):
            raise ValueError(f"{name} must be true or false")
        return value
    return type(current)(value)


__all__ = ["ShopifySimConfig"]
