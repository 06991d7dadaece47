"""Deprecated: moved to connectors/contracts.py (Protocols, value types) and connectors/plugin.py
(ChannelPlugin). Kept briefly so importers not yet rewritten keep working; removed in issue 15."""

from retail_sync.connectors.contracts import *  # noqa: F403
from retail_sync.connectors.plugin import ChannelPlugin  # noqa: F401
