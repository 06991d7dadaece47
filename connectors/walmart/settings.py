"""Walmart's settings (env ``RETAIL_SYNC_WALMART_*``); the central Settings inherits them."""

from __future__ import annotations

from pydantic import AnyHttpUrl, Field, SecretStr

from retail_sync.connectors.plugin import ConnectorSettings


class WalmartSettings(ConnectorSettings):
    """Walmart Marketplace: Orders v3 (polled, acknowledged) and inventory (outbound)."""

    walmart_base_url: AnyHttpUrl | None = Field(
        None, description="e.g. https://marketplace.walmartapis.com; unset: Walmart is off.")
    walmart_client_id: str = "demo-client-id"
    walmart_client_secret: SecretStr = SecretStr("demo-client-secret")
    walmart_svc_name: str = "Walmart Marketplace"
    walmart_lookback_days: float = Field(7.0, gt=0, description="Released orders created since.")
    walmart_acknowledge_rate_per_s: float = Field(
        8.0, gt=0, description="Acknowledge budget: 80% of a 10/s plan, headroom for clock skew.")
    walmart_acknowledge_burst: int = Field(8, ge=1)
    walmart_bulk_min_skus: int = Field(
        20, ge=1, description="Pushes of at least this many SKUs use the bulk inventory feed; "
        "smaller ones PUT /v3/inventory per SKU.")
    walmart_inventory_rate_per_s: float = Field(
        3.0, gt=0, description="Client-side budget for PUT /v3/inventory (90% of 200/min).")
    walmart_inventory_burst: int = Field(10, ge=1)
    walmart_feeds_per_hour: float = Field(
        9.0, gt=0, description="Client-side budget for bulk inventory feeds (90% of 10/hour); "
        "when it is spent, large pushes fall back to paced single updates.")
