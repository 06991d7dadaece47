"""The regional marketplace: CSV batch files in (drop directory), CSV files out (outbox).
``plugin`` registers all of it with the engine."""

from __future__ import annotations

from typing import Any

from retail_sync.connectors.plugin import ChannelPlugin, Mapper, ReconcileReader
from retail_sync.connectors.regional import mapper, reconcile
from retail_sync.connectors.regional.inbound import RegionalFileSource
from retail_sync.connectors.regional.outbound import RegionalOutbound
from retail_sync.connectors.regional.settings import RegionalSettings
from retail_sync.connectors.regional.status import TABLE


def _mapper(settings: Any) -> Mapper:
    """The status table is extended from settings (``regional_status_codes``)."""
    codes = getattr(settings, "regional_status_codes", None)
    return mapper.make_mapper(codes) if codes else mapper.map_order


plugin = ChannelPlugin(
    "regional", mapper.map_order, RegionalFileSource.from_settings,
    "regional marketplace CSV batch files (file drop)",
    outbound=RegionalOutbound.from_settings,
    settings_model=RegionalSettings,
    status=TABLE,
    reconcile=ReconcileReader(reconcile.read_regional, reconcile.configured),
    configure=_mapper,
)

__all__ = ["plugin"]
