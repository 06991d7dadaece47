"""ERPNext's settings: the ``erp_*`` fields of the central Settings that say where the ERPNext
site is and how documents are booked there (``RETAIL_SYNC_ERP_BASE_URL``, ...).

A plain pydantic model (``ConnectorSettings``): the central ``retail_sync.settings.Settings``
inherits it, so a Settings IS-A ErpNextSettings and the connector's factories take either. The
engine-side knobs of whichever ERP is configured (retries, concurrency, poll intervals:
``erp_max_attempts``, ``erp_concurrency``, ``erp_stock_poll_interval_s``, ...) stay in the
central Settings.
"""

from __future__ import annotations

from typing import Literal

from pydantic import AnyHttpUrl, Field, SecretStr, field_validator

from retail_sync.connectors.erpnext.fields import parse_channel_customers
from retail_sync.connectors.plugin import ConnectorSettings


class ErpNextSettings(ConnectorSettings):
    """Where the ERPNext site is, its credentials, and the master data orders are booked under."""

    # --- ERP (ERPNext-style REST) -------------------------------------------------------
    erp_base_url: AnyHttpUrl = Field(AnyHttpUrl("http://127.0.0.1:8100"))
    erp_api_key: SecretStr = SecretStr("demo-key")
    erp_api_secret: SecretStr = SecretStr("demo-secret")
    erp_company: str = "Retail Sync Demo Ltd"
    erp_default_customer: str = Field(
        "Marketplace Customer",
        description="ERP Customer of orders from a channel RETAIL_SYNC_ERP_CHANNEL_CUSTOMERS "
                    "does not name.")
    erp_channel_customers: str = Field(
        "shopify=Shopify Customer,amazon=Amazon Customer,walmart=Walmart Customer,"
        "regional=Regional Customer",
        description="channel=ERP Customer pairs, comma-separated: each channel's orders are "
                    "posted under its own Customer (the buyer is kept on the order).")
    erp_warehouse: str = "Stores - RSD"
    erp_marketplace_warehouse: str = Field(
        "Marketplace Fulfilled - RSD",
        description="ERP warehouse of orders the marketplace ships from its own stock (Amazon "
                    "AFN): they reach the ERP (skip_delivery_note) but never reserve our stock "
                    "nor reach our WMS.")
    erp_timeout_s: float = Field(10.0, gt=0)
    erp_custom_fields_check: Literal["warn", "refuse", "off"] = Field(
        "warn", description="At worker start, ask the ERP for the Custom Fields the integration "
        "needs (connectors/erpnext/fields.py): 'warn' logs an error naming each one missing or not "
        "unique, 'refuse' exits 2 instead of starting, 'off' skips the check.")

    # --- ERP stock feed ------------------------------------------------------------------
    erp_stock_warehouses: str = Field(
        "", description="Comma-separated ERP warehouses whose stock is sellable; empty: all.")

    @field_validator("erp_channel_customers")
    @classmethod
    def _channel_customers(cls, value: str) -> str:
        parse_channel_customers(value)  # ValueError names the malformed pair
        return value


__all__ = ["ErpNextSettings"]
