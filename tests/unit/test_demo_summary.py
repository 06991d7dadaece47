"""The demo's closing summary and HTML report, from plain data (no worker, no browser)."""

import json
from pathlib import Path

from retail_sync.demo_report import render_html
from retail_sync.demo_summary import (
    cancel_cause,
    channel_grid,
    classify,
    closing_line,
    exceptions_grid,
    order_causes,
)
from retail_sync.report import counts_grid, duration, grid

RECORDED = Path(__file__).parent / "data" / "demo_run.json"  # run.json of a real demo run


def test_durations_above_a_second_are_in_seconds():
    assert duration(0.4256) == "426 ms"
    assert duration(1.75) == "1.75 s"
    assert duration(12.34) == "12.3 s"
    assert duration(250) == "250 s"
    assert duration(float("nan")) == "n/a"


def test_grid_aligns_columns_and_counters_are_tables_not_dicts():
    text = grid(["kind", "n"], [["mapping", 1], ["decode", 12]])
    lines = text.splitlines()
    assert lines[2].endswith(" 1") and lines[3].endswith("12") and len(lines[2]) == len(lines[3])
    wms = counts_grid({"orders_created": 120, "idempotent_replays": 0})
    assert "{" not in wms and "orders created" in wms and "idempotent replays" in wms
    kinds = exceptions_grid([{"kind": "mapping", "channel": "shopify"},
                             {"kind": "decode", "channel": "shopify"},
                             {"kind": "mapping", "channel": "regional"}])
    assert "{" not in kinds and "'" not in kinds
    assert kinds.splitlines()[-1].split() == ["all", "1", "2", "3"]


def test_cancellation_causes_are_told_apart():
    assert cancel_cause("NoInventory") == "stock"
    assert cancel_cause("SELLER_CANCEL_OUT_OF_STOCK") == "stock"
    assert cancel_cause("inventory") == "stock"
    assert cancel_cause("BuyerCanceled") == "buyer"
    assert cancel_cause("ShippingAddressUndeliverable") == "other"
    causes = order_causes({"amazon": [{"order_id": "A1", "reason": "NoInventory"},
                                      {"order_id": "A2", "reason": "BuyerCanceled"},
                                      {"order_id": "A3", "reason": "NoInventory"}],
                           "walmart": [{"order_id": "W1", "reason": "SELLER_CANCEL_OUT_OF_STOCK"}]},
                          buyer_asked={"amazon:A3"})
    assert causes == {"amazon:A1": "stock", "amazon:A2": "buyer", "amazon:A3": "buyer",
                      "walmart:W1": "stock"}


def test_in_flight_at_the_drain_timeout_is_not_lost():
    expected = {f"shopify:{n}" for n in range(6)}
    out = classify(expected, in_erp={"shopify:0", "shopify:1"},
                   causes={"shopify:2": "stock", "shopify:3": "buyer"},
                   worker_status={"shopify:4": "erp_pending", "shopify:5": None})
    assert (out.created, out.in_erp) == (6, 2)
    assert dict(out.cancelled) == {"stock": 1, "buyer": 1}
    assert out.in_flight == {"shopify:4": "erp_pending"}
    assert out.lost == ["shopify:5"]
    text = channel_grid({"shopify": out}, {"shopify": [0.4, 1.75]})
    header, _rule, row = text.splitlines()[1:4]
    cells = dict(zip(["channel", "created", "in_erp", "stock", "buyer", "other", "in_flight",
                      "lost"], row.split(), strict=False))
    assert cells == {"channel": "shopify", "created": "6", "in_erp": "2", "stock": "1",
                     "buyer": "1", "other": "0", "in_flight": "1", "lost": "1"}
    assert "1.75 s" in row and "[m]" in header
    line = closing_line(2, out, 60, ok=False)
    assert "1 for lack of stock, 1 at the buyer's request, 0 other" in line
    assert "1 still in flight at the drain timeout (60 s); 1 lost" in line


def test_html_report_is_drawn_from_a_recorded_run():
    record = json.loads(RECORDED.read_text())
    page = render_html(record)
    assert page.startswith("<!doctype html>") and record["run"] in page
    assert page.count("<svg") >= 5  # order -> ERP, flows, stock propagation, exceptions
    for name in record["channels"]:
        assert f"<td>{name}</td>" in page
    assert "Exceptions by kind" in page and "Stock propagation" in page
