"""The ERP registry: which ERP this engine posts to, as one ErpPlugin.

The built-in one is ERPNext (``connectors/erpnext``). Another is named by the setting
``RETAIL_SYNC_ERP_PLUGIN`` (``module:attribute`` of an ErpPlugin object, or the name of a
built-in one or of an entry point in the group ``retail_sync.erps``); nothing else in the engine
names an ERP. An external plugin's ``settings_model`` (a ConnectorSettings) is built from the
environment (prefix ``RETAIL_SYNC_``) plus the shared fields of the central Settings
(``settings_for``); the built-in ones are part of the central Settings already.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from importlib.metadata import entry_points
from typing import Any

from pydantic import BaseModel

from retail_sync.connectors import erpnext
from retail_sync.connectors.plugin import ErpPlugin
from retail_sync.settings import ENV_PREFIX, Settings, plugin_settings

BUILTIN: dict[str, ErpPlugin] = {erpnext.plugin.name: erpnext.plugin}
DEFAULT = erpnext.plugin.name
ENTRY_POINT_GROUP = "retail_sync.erps"


class ErpPluginError(ValueError):
    """The configured ERP plugin cannot be loaded."""


def _checked(plugin: Any, ref: str) -> ErpPlugin:
    if not isinstance(plugin, ErpPlugin):
        raise ErpPluginError(f"ERP plugin {ref!r} is a {type(plugin).__name__}, not an ErpPlugin")
    return plugin


def load_erp_plugin(ref: str) -> ErpPlugin:
    """The ErpPlugin ``ref`` names: a built-in name, an entry point name of the group
    ``retail_sync.erps``, or ``package.module:attribute``."""
    ref = ref.strip() or DEFAULT
    if ref in BUILTIN:
        return BUILTIN[ref]
    module_name, sep, attribute = ref.partition(":")
    if not sep:
        found = [ep for ep in entry_points(group=ENTRY_POINT_GROUP) if ep.name == ref]
        if not found:
            raise ErpPluginError(f"ERP plugin {ref!r} is neither built in ({', '.join(BUILTIN)}) "
                                 f"nor an entry point of {ENTRY_POINT_GROUP}, nor "
                                 "'package.module:attribute'")
        return _checked(found[0].load(), ref)
    if not module_name or not attribute:
        raise ErpPluginError(f"ERP plugin {ref!r} must look like 'package.module:attribute'")
    try:
        plugin = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as exc:
        raise ErpPluginError(f"ERP plugin {ref!r} cannot be loaded: {exc}") from exc
    return _checked(plugin, ref)


def erp_plugin(settings: Settings) -> ErpPlugin:
    """The ERP the settings name (``erp_plugin``; the built-in ERPNext when empty)."""
    return load_erp_plugin(settings.erp_plugin)


def settings_for(plugin: ErpPlugin, settings: Settings) -> BaseModel:
    """The settings ``plugin``'s factories take (``retail_sync.settings.plugin_settings``)."""
    return plugin_settings(plugin.settings_model, settings)


def plugin_variables(environ: Mapping[str, str]) -> list[str]:
    """The ``RETAIL_SYNC_*`` names of the settings of the ERP plugin ``environ`` configures
    (``RETAIL_SYNC_ERP_PLUGIN``), so the start-up check accepts them; none when it is a built-in
    one (its fields are settings already) or cannot be loaded (creating the app says why)."""
    ref = next((v for k, v in environ.items() if k.upper() == f"{ENV_PREFIX}ERP_PLUGIN"), "")
    try:
        plugin = load_erp_plugin(ref)
    except ErpPluginError:
        return []
    return sorted(ENV_PREFIX + name.upper() for name in plugin.settings_model.model_fields)


__all__ = ["BUILTIN", "DEFAULT", "ENTRY_POINT_GROUP", "ErpPluginError", "erp_plugin",
           "load_erp_plugin", "plugin_variables", "settings_for"]
