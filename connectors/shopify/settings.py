"""Shopify's settings (env ``RETAIL_SYNC_SHOPIFY_*``); the central Settings inherits them."""

from __future__ import annotations

from pydantic import AnyHttpUrl, Field, SecretStr

from retail_sync.connectors.plugin import ConnectorSettings


class ShopifySettings(ConnectorSettings):
    """The webhook secret, the custom-item code and the Admin API the outbound side calls."""

    # --- Shopify-style inbound ----------------------------------------------------------
    shopify_webhook_secret: SecretStr = Field(
        SecretStr("shpss_demo_secret"), description="App client secret used to sign webhooks."
    )
    shopify_custom_item_code: str = Field(
        "MARKETPLACE-CUSTOM-ITEM", max_length=128,
        description="ERP item (a non-stock service item) that Shopify custom line items (no sku, "
        "no variant) are posted as, with their own title and price; never reserved in stock. "
        "Empty: such lines are a mapping exception.")

    # --- marketplace outbound -----------------------------------------------------------
    shopify_admin_base_url: AnyHttpUrl | None = Field(
        None, description="Shopify Admin API, e.g. https://shop.myshopify.com; unset: no pushes.")
    shopify_access_token: SecretStr = SecretStr("shpat_demo")
    shopify_api_version: str = "2024-04"
    shopify_location_id: int | None = Field(
        None, description="Location whose inventory level is set; unset: the first active one.")
