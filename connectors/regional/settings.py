"""The regional marketplace's settings (env ``RETAIL_SYNC_REGIONAL_*``); the central Settings
inherits them."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from retail_sync.connectors.plugin import ConnectorSettings


class RegionalSettings(ConnectorSettings):
    """CSV batch files in (drop directory) and out (outbox directory)."""

    regional_drop_dir: Path | None = Field(
        None, description="Directory the regional marketplace drops CSV batch files into; unset: off.")
    regional_status_codes: dict[str, str] = Field(
        default_factory=dict, description="Extra status codes, JSON object code -> canonical status.")
    regional_outbox_dir: Path | None = Field(
        None, description="Directory we write inventory and cancellation CSV files to for the "
        "regional marketplace; unset: no pushes.")
