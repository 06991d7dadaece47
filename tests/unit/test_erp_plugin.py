"""A second ERP is one module and one registration (issue 15): the toy ERP in tests/unit/toy_erp.py,
named only by RETAIL_SYNC_ERP_PLUGIN, is what the app posts through and what reconciliation reads;
nothing in the engine names it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from retail_sync import erps, reconcile
from retail_sync.app import create_app
from retail_sync.connectors import erpnext
from retail_sync.connectors.erpnext.client import ErpNextConnector
from retail_sync.settings import Settings
from tests.unit import toy_erp

TOY = "tests.unit.toy_erp:plugin"
NOW = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)


@pytest.fixture
def toy_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Settings:
    monkeypatch.setenv("RETAIL_SYNC_ERP_PLUGIN", TOY)
    monkeypatch.setenv("RETAIL_SYNC_TOY_ERP_BOOK", "book-7")
    toy_erp.READS.clear()
    toy_erp.SALES_ORDERS.clear()
    return Settings(datadir=tmp_path, app_id="toy-erp-app")


def test_the_builtin_erp_is_erpnext_unless_a_setting_names_another(tmp_path: Path) -> None:
    settings = Settings(datadir=tmp_path)
    assert erps.erp_plugin(settings) is erpnext.plugin
    assert erps.settings_for(erpnext.plugin, settings) is settings  # Settings IS-A ErpNextSettings
    ctx = create_app(settings, "kafka://127.0.0.1:1")  # registration only: nothing starts
    assert isinstance(ctx.erp_factory(), ErpNextConnector)


def test_the_app_posts_through_the_configured_erp(toy_settings: Settings) -> None:
    ctx = create_app(toy_settings, "kafka://127.0.0.1:1")
    erp = ctx.erp_factory()
    assert isinstance(erp, toy_erp.ToyErp)
    # its own settings model, read from the environment over the shared values
    assert isinstance(erp.settings, toy_erp.ToyErpSettings)
    assert erp.settings.toy_erp_book == "book-7"
    assert erp.settings.app_id == "toy-erp-app"
    assert ctx.stock_feed_factory is not None
    assert isinstance(ctx.stock_feed_factory(), toy_erp.ToyStockFeed)
    assert ctx.erp_order_feed_factory is not None
    assert ctx.erp_order_feed_factory() is None  # the toy has no order feed


async def test_reconciliation_reads_the_configured_erp(toy_settings: Settings) -> None:
    toy_erp.SALES_ORDERS.append({"name": "TOY-1", "po_no": "shopify:1", "status": "To Deliver",
                                 "docstatus": 1, "grand_total": 10, "per_delivered": 0,
                                 "currency": "USD"})
    report = await reconcile.reconcile(toy_settings, channels=[], lookback=timedelta(days=2),
                                       now=NOW)
    assert report.channels == {}
    kinds = [kind for kind, _ in toy_erp.READS]
    assert kinds == ["sales_orders"]
    settings, since = toy_erp.READS[0][1]
    assert isinstance(settings, toy_erp.ToyErpSettings) and settings.toy_erp_book == "book-7"
    assert since == NOW - timedelta(days=2)
    assert await reconcile.read_credit_notes(toy_settings, ["shopify:1"]) == {}
    assert toy_erp.READS[-1] == ("credit_notes", (settings, ["shopify:1"]))


def test_a_bad_erp_plugin_is_named(tmp_path: Path) -> None:
    with pytest.raises(erps.ErpPluginError, match="not an ErpPlugin"):
        erps.load_erp_plugin("tests.unit.toy_erp:ToyErp")
    with pytest.raises(erps.ErpPluginError, match="cannot be loaded"):
        erps.load_erp_plugin("tests.unit.toy_erp:nothing")
    with pytest.raises(erps.ErpPluginError, match="neither built in"):
        erps.load_erp_plugin("odoo")


def test_the_start_up_check_accepts_the_configured_erps_own_settings() -> None:
    from retail_sync.startup_checks import unknown_variables

    own = {"RETAIL_SYNC_TOY_ERP_BOOK": "book-7"}
    assert unknown_variables({**own, "RETAIL_SYNC_ERP_PLUGIN": TOY}) == []
    assert [name for name, _ in unknown_variables(own)] == ["RETAIL_SYNC_TOY_ERP_BOOK"]
