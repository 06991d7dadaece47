"""Shopify: Admin webhooks in (push), the Admin REST API out (inventory, cancel, fulfil,
refund). ``plugin`` registers all of it with the engine."""

from __future__ import annotations

from typing import Any

from retail_sync.connectors.plugin import ChannelPlugin, Mapper, ReconcileReader
from retail_sync.connectors.shopify import inbound, mapper, reconcile
from retail_sync.connectors.shopify.outbound import ShopifyOutbound
from retail_sync.connectors.shopify.plan import SHOPIFY_PLANS
from retail_sync.connectors.shopify.settings import ShopifySettings
from retail_sync.connectors.shopify.status import TABLE


def _mapper(settings: Any) -> Mapper:
    """The custom-item code (``shopify_custom_item_code``) is a setting."""
    code = getattr(settings, "shopify_custom_item_code", mapper.DEFAULT_CUSTOM_ITEM_CODE)
    return mapper.map_order if code == mapper.DEFAULT_CUSTOM_ITEM_CODE else mapper.make_mapper(code or None)


plugin = ChannelPlugin(
    "shopify", mapper.map_order, None, "Shopify Admin webhooks (push)",
    outbound=ShopifyOutbound.from_settings,
    settings_model=ShopifySettings,
    plans=SHOPIFY_PLANS,
    status=TABLE,
    reconcile=ReconcileReader(reconcile.read_shopify, reconcile.configured, reconcile.shopify_status),
    inbound=inbound.HOOKS,
    configure=_mapper,
)

__all__ = ["plugin"]
