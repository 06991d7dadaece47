"""The warehouse (3PL / WMS) over its REST API: ``client`` (the WmsConnector), ``settings``
(``WmsSettings``); ``plugin`` registers it."""

from __future__ import annotations

from retail_sync.connectors.plugin import WmsPlugin
from retail_sync.connectors.wms.client import WmsClient
from retail_sync.connectors.wms.settings import WmsSettings

plugin = WmsPlugin(
    name="wms",
    description="The warehouse's REST API (fulfilment orders, returns, events)",
    settings_model=WmsSettings,
    connector=WmsClient.from_settings,
)

__all__ = ["WmsSettings", "plugin"]
