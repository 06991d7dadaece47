"""The channel registry: which marketplaces this engine speaks, each as one ChannelPlugin.

Built-in channels are listed here (``BUILTIN``: one package each under connectors/, exporting
``plugin``). More come from the setting ``RETAIL_SYNC_CHANNEL_PLUGINS`` (a comma-separated list of
``module:attribute`` naming ChannelPlugin objects) and from the entry points of the group
``retail_sync.channels`` (each naming a ChannelPlugin), so a new marketplace is one package and
one registration, and no change to the engine. A configured plugin may replace a built-in one.

An external plugin's ``settings_model`` (a ConnectorSettings) is built from the environment
(prefix ``RETAIL_SYNC_``) over the shared values of the central Settings (``plugin_settings``);
the built-in ones are part of the central Settings already. The wiring takes everything else
about a channel from its plugin: its rate plans, status table, reconciliation reader and webhook
hooks.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Mapping
from importlib.metadata import entry_points
from typing import Any

from retail_sync.connectors import amazon, regional, shopify, walmart
from retail_sync.connectors.plugin import ChannelPlugin
from retail_sync.settings import ENV_PREFIX, Settings
from retail_sync.settings import plugin_settings as own_settings
from retail_sync.streams.status import StatusTable

BUILTIN: tuple[ChannelPlugin, ...] = (shopify.plugin, amazon.plugin, walmart.plugin, regional.plugin)
ENTRY_POINT_GROUP = "retail_sync.channels"


class PluginError(ValueError):
    """A configured channel plugin cannot be loaded."""


def _checked(plugin: Any, ref: str) -> ChannelPlugin:
    if not isinstance(plugin, ChannelPlugin):
        raise PluginError(f"channel plugin {ref!r} is a {type(plugin).__name__}, not a ChannelPlugin")
    return plugin


def load_plugin(ref: str) -> ChannelPlugin:
    module_name, _, attribute = ref.strip().partition(":")
    if not module_name or not attribute:
        raise PluginError(f"channel plugin {ref!r} must look like 'package.module:attribute'")
    try:
        plugin = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as exc:
        raise PluginError(f"channel plugin {ref!r} cannot be loaded: {exc}") from exc
    return _checked(plugin, ref)


def entry_point_plugins() -> list[ChannelPlugin]:
    """The ChannelPlugin objects named by the installed distributions' entry points."""
    found = []
    for point in entry_points(group=ENTRY_POINT_GROUP):
        try:
            plugin = point.load()
        except (ImportError, AttributeError) as exc:
            raise PluginError(f"channel plugin entry point {point.name!r} ({point.value}) cannot "
                              f"be loaded: {exc}") from exc
        found.append(_checked(plugin, point.value))
    return found


def external_plugins(refs: str) -> list[ChannelPlugin]:
    """The plugins of the entry points, then those the setting names (a later one wins)."""
    return [*entry_point_plugins(),
            *(load_plugin(ref) for ref in filter(None, (r.strip() for r in refs.split(","))))]


def plugin_settings(plugin: ChannelPlugin, settings: Any) -> Any:
    """The settings ``plugin``'s factories take (``retail_sync.settings.plugin_settings``)."""
    return own_settings(plugin.settings_model, settings)


def _configured(plugin: ChannelPlugin, settings: Any) -> ChannelPlugin:
    """The plugin as these settings shape it: its mapper built from them (``configure``), and
    its factories and reader given its own settings model."""
    values = plugin_settings(plugin, settings)
    if plugin.configure is not None:
        plugin = dataclasses.replace(plugin, mapper=plugin.configure(values))
    if values is settings:
        return plugin
    replaced: dict[str, Any] = {}
    if plugin.source is not None:
        replaced["source"] = _bound(plugin.source, values)
    if plugin.outbound is not None:
        replaced["outbound"] = _bound(plugin.outbound, values)
    return dataclasses.replace(plugin, **replaced) if replaced else plugin


def _bound(factory: Any, values: Any) -> Any:
    """A factory that builds from ``values`` (the plugin's own settings) whatever it is given."""
    return lambda _settings: factory(values)


def channels(settings: Settings) -> dict[str, ChannelPlugin]:
    """Every channel of this engine by name; a configured plugin may replace a built-in one."""
    found = {plugin.channel: plugin for plugin in BUILTIN}
    for plugin in external_plugins(settings.channel_plugins):
        found[plugin.channel] = plugin
    return {name: _configured(plugin, settings) for name, plugin in found.items()}


def status_tables(plugins: Mapping[str, ChannelPlugin] | None = None) -> dict[str, StatusTable]:
    """Every channel's status table (its plugin's ``status``), by channel; the built-in ones
    unless ``plugins`` is given."""
    chosen = plugins if plugins is not None else {p.channel: p for p in BUILTIN}
    return {name: p.status for name, p in chosen.items() if p.status is not None}


def plugin_variables(environ: Mapping[str, str]) -> list[str]:
    """The ``RETAIL_SYNC_*`` names of the settings of the external channel plugins ``environ``
    configures (``RETAIL_SYNC_CHANNEL_PLUGINS``, entry points), so the start-up check accepts
    them; none for one that cannot be loaded (creating the app says why)."""
    refs = next((v for k, v in environ.items() if k.upper() == f"{ENV_PREFIX}CHANNEL_PLUGINS"), "")
    try:
        plugins = external_plugins(refs)
    except PluginError:
        return []
    return sorted({ENV_PREFIX + name.upper() for p in plugins for name in p.settings_model.model_fields})


__all__ = ["BUILTIN", "ENTRY_POINT_GROUP", "PluginError", "channels", "load_plugin",
           "plugin_settings", "plugin_variables", "status_tables"]
