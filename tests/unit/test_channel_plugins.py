"""The channel registry (retail_sync/channels.py): the four built-in plugins carry the whole
contract, external ones come from the setting and from entry points, and an external plugin's
own settings are read from the environment and accepted by the start-up check."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from retail_sync import channels as registry
from retail_sync.channels import BUILTIN, channels, plugin_settings, plugin_variables
from retail_sync.settings import Settings
from retail_sync.startup_checks import unknown_variables
from tests.integration import toy_channel

TOY = "tests.integration.toy_channel:plugin"


def test_every_builtin_plugin_brings_the_whole_contract() -> None:
    assert [p.channel for p in BUILTIN] == ["shopify", "amazon", "walmart", "regional"]
    for plugin in BUILTIN:
        assert plugin.outbound is not None and plugin.reconcile is not None
        assert plugin.status is not None and plugin.status.channel == plugin.channel
        assert isinstance(Settings(), plugin.settings_model)  # Settings inherits its fields
    by_name = {p.channel: p for p in BUILTIN}
    assert by_name["shopify"].inbound is not None and by_name["shopify"].source is None
    assert all(by_name[n].source is not None for n in ("amazon", "walmart", "regional"))
    assert {n for n, p in by_name.items() if p.plans} == {"shopify", "amazon", "walmart"}


def test_an_external_plugin_comes_from_the_setting_with_its_own_settings(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("RETAIL_SYNC_TOY_FEED_FILE", str(tmp_path / "feed.jsonl"))
    settings = Settings(channel_plugins=TOY, app_id="rs-toy")
    found = channels(settings)
    assert set(found) == {"shopify", "amazon", "walmart", "regional", "toy"}
    values = plugin_settings(found["toy"], settings)
    assert isinstance(values, toy_channel.ToySettings)
    assert values.toy_feed_file == tmp_path / "feed.jsonl" and values.app_id == "rs-toy"
    # read twice, the same settings (one class per plugin model: a new class per read made two
    # reads of one plugin's settings unequal)
    assert plugin_settings(found["toy"], settings) == values
    source = found["toy"].source
    assert source is not None and isinstance(source(settings), toy_channel.ToyFileSource)
    assert found["toy"].outbound is not None and found["toy"].outbound(settings) is None  # no outbox


def test_an_external_plugin_comes_from_an_entry_point(monkeypatch: pytest.MonkeyPatch) -> None:
    class Point:
        name, value = "toy", TOY

        def load(self) -> Any:
            return toy_channel.plugin

    monkeypatch.setattr(registry, "entry_points",
                        lambda group: [Point()] if group == registry.ENTRY_POINT_GROUP else [])
    assert "toy" in channels(Settings())


def test_the_start_up_check_accepts_an_external_plugins_settings() -> None:
    environ = {"RETAIL_SYNC_CHANNEL_PLUGINS": TOY, "RETAIL_SYNC_TOY_FEED_FILE": "/tmp/feed"}
    assert "RETAIL_SYNC_TOY_OUTBOX_FILE" in plugin_variables(environ)
    assert unknown_variables(environ) == []
    assert [name for name, _ in unknown_variables({"RETAIL_SYNC_TOY_FEED_FILE": "x"})] == [
        "RETAIL_SYNC_TOY_FEED_FILE"]  # without the plugin it is no setting
