"""Amazon's settings (env ``RETAIL_SYNC_AMAZON_*``); the central Settings inherits them."""

from __future__ import annotations

from pydantic import AnyHttpUrl, Field, SecretStr

from retail_sync.connectors.plugin import ConnectorSettings


class AmazonSettings(ConnectorSettings):
    """Amazon Selling Partner API: Orders v0 (polled) and Listings/Feeds (outbound)."""

    amazon_base_url: AnyHttpUrl | None = Field(
        None, description="SP-API endpoint, e.g. https://sellingpartnerapi-na.amazon.com; unset: off.")
    amazon_access_token: SecretStr = SecretStr("Atza|simulated-lwa-token")
    amazon_marketplace_ids: str = "ATVPDKIKX0DER"
    amazon_lookback_hours: float = Field(24.0, gt=0, description="First poll starts this far back.")
    amazon_seller_id: str = Field("A2SIMSELLER01", description="Seller id for Listings/Feeds.")
    amazon_feed_min_skus: int = Field(
        20, ge=1, description="Pushes of at least this many SKUs go through JSON_LISTINGS_FEED; "
        "smaller ones patch each listing.")
