"""The channel registry: which marketplaces this engine speaks, each as one ChannelPlugin.

Built-in channels are listed here; more come from settings (``RETAIL_SYNC_CHANNEL_PLUGINS``, a
comma-separated list of ``module:attribute`` naming ChannelPlugin objects), so a new marketplace
needs one connector module, one mapper and a setting, and no change to the engine.
"""

from __future__ import annotations

import dataclasses
import importlib
from typing import Any

from retail_sync.connectors.amazon import AmazonSource
from retail_sync.connectors.amazon_outbound import AmazonOutbound
from retail_sync.connectors.plugin import ChannelPlugin
from retail_sync.connectors.regional import RegionalFileSource
from retail_sync.connectors.regional_outbound import RegionalOutbound
from retail_sync.connectors.shopify_outbound import ShopifyOutbound
from retail_sync.connectors.walmart import WalmartSource
from retail_sync.connectors.walmart_outbound import WalmartOutbound
from retail_sync.settings import Settings
from retail_sync.streams.mappers import amazon, regional, shopify, walmart
from retail_sync.streams.mappers.shopify import MappingError


def _amazon(payload: Any) -> Any:
    """Polled Amazon deliveries carry the order and its items: {"order": ..., "items": [...]}."""
    if not isinstance(payload, dict) or "order" not in payload:
        raise MappingError("Amazon delivery must be {'order': ..., 'items': [...]}")
    return amazon.map_order(payload["order"], payload.get("items"))


BUILTIN: tuple[ChannelPlugin, ...] = (
    ChannelPlugin("shopify", shopify.map_order, None, "Shopify Admin webhooks (push)",
                  outbound=ShopifyOutbound.from_settings),
    ChannelPlugin("amazon", _amazon, AmazonSource.from_settings, "SP-API Orders v0 (poll)",
                  outbound=AmazonOutbound.from_settings),
    ChannelPlugin("walmart", walmart.map_order, WalmartSource.from_settings,
                  "Marketplace Orders v3 released + acknowledge (poll)",
                  outbound=WalmartOutbound.from_settings),
    ChannelPlugin("regional", regional.map_order, RegionalFileSource.from_settings,
                  "regional marketplace CSV batch files (file drop)",
                  outbound=RegionalOutbound.from_settings),
)


class PluginError(ValueError):
    """A configured channel plugin cannot be loaded."""


def load_plugin(ref: str) -> ChannelPlugin:
    module_name, _, attribute = ref.strip().partition(":")
    if not module_name or not attribute:
        raise PluginError(f"channel plugin {ref!r} must look like 'package.module:attribute'")
    try:
        plugin = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as exc:
        raise PluginError(f"channel plugin {ref!r} cannot be loaded: {exc}") from exc
    if not isinstance(plugin, ChannelPlugin):
        raise PluginError(f"channel plugin {ref!r} is a {type(plugin).__name__}, not a ChannelPlugin")
    return plugin


def channels(settings: Settings) -> dict[str, ChannelPlugin]:
    """Every channel of this engine by name; a configured plugin may replace a built-in one."""
    found = {plugin.channel: plugin for plugin in BUILTIN}
    if settings.shopify_custom_item_code != shopify.DEFAULT_CUSTOM_ITEM_CODE:
        found["shopify"] = dataclasses.replace(
            found["shopify"], mapper=shopify.make_mapper(settings.shopify_custom_item_code or None))
    if settings.regional_status_codes:  # the regional status table is extended from settings
        found["regional"] = dataclasses.replace(
            found["regional"], mapper=regional.make_mapper(settings.regional_status_codes))
    for ref in filter(None, (r.strip() for r in settings.channel_plugins.split(","))):
        plugin = load_plugin(ref)
        found[plugin.channel] = plugin
    return found
