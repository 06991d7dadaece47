"""The warehouse's settings: the ``wms_*`` fields of the central Settings that say where the WMS
is (``RETAIL_SYNC_WMS_BASE_URL``, ...). A plain pydantic model the central Settings inherits; how
often the engine polls it (``wms_poll_interval_s``) stays in the central Settings."""

from __future__ import annotations

from pydantic import AnyHttpUrl, Field, SecretStr

from retail_sync.connectors.plugin import ConnectorSettings


class WmsSettings(ConnectorSettings):
    """Where the warehouse management system is and its API key; no URL: no fulfilment."""

    wms_base_url: AnyHttpUrl | None = Field(
        None, description="Warehouse management system (or its simulator); unset: no fulfilment.")
    wms_api_key: SecretStr = SecretStr("demo-wms-key")
    wms_timeout_s: float = Field(10.0, gt=0)


__all__ = ["WmsSettings"]
