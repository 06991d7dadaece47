"""Amazon: SP-API Orders v0 polled in, Listings/Feeds and order actions out. ``plugin`` registers
all of it with the engine."""

from __future__ import annotations

from retail_sync.connectors.amazon import mapper, reconcile
from retail_sync.connectors.amazon.client import AmazonSource
from retail_sync.connectors.amazon.outbound import AmazonOutbound
from retail_sync.connectors.amazon.plan import AMAZON_PLANS
from retail_sync.connectors.amazon.settings import AmazonSettings
from retail_sync.connectors.amazon.status import TABLE
from retail_sync.connectors.plugin import ChannelPlugin, ReconcileReader

plugin = ChannelPlugin(
    "amazon", mapper.map_delivery, AmazonSource.from_settings, "SP-API Orders v0 (poll)",
    outbound=AmazonOutbound.from_settings,
    settings_model=AmazonSettings,
    plans=AMAZON_PLANS,
    status=TABLE,
    reconcile=ReconcileReader(reconcile.read_amazon, reconcile.configured),
)

__all__ = ["plugin"]
