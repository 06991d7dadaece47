"""What agents and views are given: the composition root builds one of these per app."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import faust

from connectors.base import ChannelPlugin, ErpConnector
from connectors.shopify_inbound import DeliveryDeduper
from retail_sync.metrics import Metrics
from retail_sync.settings import Settings
from streams.topics import Topics


@dataclass
class Tables:
    orders: faust.Table
    index: faust.Table
    cursors: faust.Table


@dataclass
class Context:
    app: faust.App
    settings: Settings
    topics: Topics
    tables: Tables
    metrics: Metrics
    erp_factory: Callable[[], ErpConnector]
    deduper: DeliveryDeduper
    channels: dict[str, ChannelPlugin]
