"""Walmart: Marketplace Orders v3 released orders polled in and acknowledged, inventory and order
actions out. ``plugin`` registers all of it with the engine."""

from __future__ import annotations

from retail_sync.connectors.plugin import ChannelPlugin, ReconcileReader
from retail_sync.connectors.walmart import mapper, reconcile
from retail_sync.connectors.walmart.client import WalmartSource
from retail_sync.connectors.walmart.outbound import WalmartOutbound
from retail_sync.connectors.walmart.plan import WALMART_PLANS
from retail_sync.connectors.walmart.settings import WalmartSettings
from retail_sync.connectors.walmart.status import TABLE

plugin = ChannelPlugin(
    "walmart", mapper.map_order, WalmartSource.from_settings,
    "Marketplace Orders v3 released + acknowledge (poll)",
    outbound=WalmartOutbound.from_settings,
    settings_model=WalmartSettings,
    plans=WALMART_PLANS,
    status=TABLE,
    reconcile=ReconcileReader(reconcile.read_walmart, reconcile.configured),
)

__all__ = ["plugin"]
