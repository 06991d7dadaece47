"""ERP stock: the simulator's pure stock book, and ErpStockFeed polling Bins over real HTTP."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import AnyHttpUrl

from retail_sync.connectors.erpnext.frappe import frappe_time
from retail_sync.connectors.erpnext.stock_feed import (
    ErpStockFeed,
    bin_query,
    parse_warehouses,
    stock_level,
    whole_units,
)
from retail_sync.connectors.errors import DecodeError, PermanentError, RateLimitedError, RetryableError
from retail_sync.settings import Settings
from retail_sync.simulators.erpnext.docs import DocValidationError
from retail_sync.simulators.erpnext.simulator import ErpSimConfig, ErpSimulator, run_erp_simulator
from retail_sync.simulators.erpnext.stock import (
    DELIVERY_NOTE,
    RECONCILIATION,
    STOCK_ENTRY,
    FrappeClock,
    StockBook,
)
from retail_sync.streams.models import StockLevel

WH = "Stores - RSD"
T0 = datetime(2026, 1, 10, 12, 0, tzinfo=UTC)


def book() -> StockBook:
    return StockBook(FrappeClock())


def receipt(*rows: tuple[str, int], warehouse: str = WH) -> dict[str, Any]:
    items = [{"item_code": c, "qty": q, "t_warehouse": warehouse} for c, q in rows]
    return {"stock_entry_type": "Material Receipt", "docstatus": 1, "items": items}


def issue(*rows: tuple[str, int], warehouse: str = WH) -> dict[str, Any]:
    items = [{"item_code": c, "qty": q, "s_warehouse": warehouse} for c, q in rows]
    return {"stock_entry_type": "Material Issue", "docstatus": 1, "items": items}


def order(name: str, *rows: tuple[str, int, int], warehouse: str = WH) -> dict[str, Any]:
    """A submitted Sales Order as the simulator stores it: (item_code, qty, backorder qty)."""
    items = [
        {"item_code": c, "qty": float(q), "warehouse": warehouse, "custom_backorder_qty": b}
        for c, q, b in rows
    ]
    return {"name": name, "set_warehouse": warehouse, "items": items}


def qty(stock: StockBook, item_code: str, warehouse: str = WH) -> tuple[float, float]:
    found = stock.bins[item_code, warehouse]
    return found.actual_qty, found.reserved_qty


# --- the clock --------------------------------------------------------------------------------


def test_clock_strictly_increases_within_one_microsecond() -> None:
    clock = FrappeClock(lambda: T0)
    stamps = [clock.stamp() for _ in range(3)]
    assert stamps == [
        "2026-01-10 12:00:00.000000",
        "2026-01-10 12:00:00.000001",
        "2026-01-10 12:00:00.000002",
    ]


# --- documents moving stock -------------------------------------------------------------------


def test_receipt_issue_and_reconciliation_move_bins_and_write_the_ledger() -> None:
    stock = book()
    entry = stock.submit(STOCK_ENTRY, receipt(("A", 10), ("B", 2)))
    assert entry["name"].startswith("MAT-STE-") and entry["docstatus"] == 1
    assert qty(stock, "A") == (10, 0) and qty(stock, "B") == (2, 0)
    stock.submit(STOCK_ENTRY, issue(("A", 3)))
    reco = stock.submit(RECONCILIATION, {"docstatus": 1, "items": [
        {"item_code": "B", "warehouse": WH, "qty": 7}]})  # fmt: skip
    assert qty(stock, "A") == (7, 0) and qty(stock, "B") == (7, 0)
    rows = [(e["item_code"], e["actual_qty"], e["qty_after_transaction"], e["voucher_type"])
            for e in stock.ledger]  # fmt: skip
    assert rows == [
        ("A", 10, 10, STOCK_ENTRY),
        ("B", 2, 2, STOCK_ENTRY),
        ("A", -3, 7, STOCK_ENTRY),
        ("B", 5, 7, RECONCILIATION),
    ]
    assert stock.ledger[-1]["voucher_no"] == reco["name"]
    assert stock.ledger[-1]["modified"] == stock.bins["B", WH].modified > reco["creation"]


def test_every_bin_change_gets_a_later_modified() -> None:
    stock = book()
    stock.submit(STOCK_ENTRY, receipt(("A", 1), ("B", 1), ("A", 1)))
    first = {k: b.modified for k, b in stock.bins.items()}
    assert first["A", WH] < first["B", WH] and qty(stock, "A") == (2, 0)  # one bump per Bin
    stock.submit(STOCK_ENTRY, receipt(("A", 1)))
    assert stock.bins["A", WH].modified > first["B", WH]
    assert stock.bins["A", WH].creation == first["A", WH]


@pytest.mark.parametrize(
    ("doctype", "body", "reason"),
    [
        (STOCK_ENTRY, {"stock_entry_type": "Material Transfer", "items": [{}]}, "not supported"),
        (STOCK_ENTRY, receipt(("A", 0)), "must be positive"),
        (STOCK_ENTRY, receipt(("A", -1)), "must be positive"),
        (STOCK_ENTRY, receipt(("A", 1.5)), "whole number"),  # type: ignore[arg-type]
        (STOCK_ENTRY, {**receipt(("A", 1)), "items": [{"item_code": "A", "qty": 1}]},
         "Target warehouse is mandatory"),
        (STOCK_ENTRY, issue(("A", 6)), "6 units of Item A needed"),
        (STOCK_ENTRY, issue(("A", 3), ("A", 3)), "6 units of Item A needed"),
        (STOCK_ENTRY, issue(("NEW", 1)), "1 units of Item NEW needed"),
        (RECONCILIATION, {"items": [{"item_code": "A", "qty": 1}]}, "Warehouse is mandatory"),
        (RECONCILIATION, {"items": []}, "Items"),
        (DELIVERY_NOTE, {"docstatus": 1, "items": [
            {"item_code": "A", "qty": 9, "warehouse": WH}]}, "9 units of Item A needed"),
        (DELIVERY_NOTE, {"docstatus": 1, "items": [
            {"item_code": "A", "qty": 1, "warehouse": WH, "against_sales_order": "SO-X"}]},
         "SO-X is not a submitted order"),
        (DELIVERY_NOTE, {"docstatus": 2, "items": [
            {"item_code": "A", "qty": 1, "warehouse": WH}]}, "docstatus"),
    ],
)  # fmt: skip
def test_refused_documents_change_nothing(doctype: str, body: Any, reason: str) -> None:
    stock = book()
    stock.submit(STOCK_ENTRY, receipt(("A", 5)))
    before = (qty(stock, "A"), len(stock.ledger), stock.bins["A", WH].modified)
    with pytest.raises(DocValidationError, match=reason):
        stock.submit(doctype, body)
    assert (qty(stock, "A"), len(stock.ledger), stock.bins["A", WH].modified) == before
    assert not stock.documents[doctype] or doctype == STOCK_ENTRY
    assert len(stock.documents[STOCK_ENTRY]) == 1


def test_a_draft_is_stored_and_moves_nothing() -> None:
    stock = book()
    draft = stock.submit(STOCK_ENTRY, {**receipt(("A", 5)), "docstatus": 0})
    assert draft["docstatus"] == 0 and not stock.bins and not stock.ledger
    assert stock.find(STOCK_ENTRY, draft["name"]) == draft


# --- sales orders: reservations, oversold units, shipments ------------------------------------


def test_submitted_order_reserves_stock_items_once() -> None:
    stock = book()
    stock.submit(STOCK_ENTRY, receipt(("A", 5)))
    before = stock.bins["A", WH].modified
    so = order("SO-1", ("A", 2, 0), ("A", 1, 0), ("SERVICE", 4, 0))
    stock.submit_sales_order(so)
    stock.submit_sales_order(so)  # a replay reserves nothing again
    assert qty(stock, "A") == (5, 3) and stock.bins["A", WH].doc()["projected_qty"] == 2
    assert stock.bins["A", WH].modified > before
    assert ("SERVICE", WH) not in stock.bins and stock.oversold_units() == 0


def test_oversold_units_count_beyond_available_less_backorders() -> None:
    stock = book()
    stock.submit(STOCK_ENTRY, receipt(("A", 5), ("B", 1)))
    stock.submit_sales_order(order("SO-1", ("A", 4, 0)))  # 5 free: fine
    stock.submit_sales_order(order("SO-2", ("A", 3, 0)))  # 1 free: 2 oversold
    stock.submit_sales_order(order("SO-3", ("A", 2, 2)))  # none free, both accepted backorders
    stock.submit_sales_order(order("SO-4", ("B", 3, 1), ("B", 1, 0)))  # 1 free: 1, then 1 more
    assert stock.oversold == {"A": 2, "B": 2} and stock.oversold_units() == 4
    assert qty(stock, "A") == (5, 9)


def test_delivery_against_an_order_lowers_on_hand_and_its_reservation() -> None:
    stock = book()
    stock.submit(STOCK_ENTRY, receipt(("A", 5)))
    stock.submit_sales_order(order("SO-1", ("A", 2, 0)))
    stock.submit_sales_order(order("SO-2", ("A", 1, 0)))
    note = stock.submit(DELIVERY_NOTE, {"docstatus": 1, "set_warehouse": WH, "items": [
        {"item_code": "A", "qty": 3, "against_sales_order": "SO-1"},
        {"item_code": "SERVICE", "qty": 1, "against_sales_order": "SO-1"}]})  # fmt: skip
    assert note["status"] == "To Bill" and note["name"].startswith("MAT-DN-")
    assert qty(stock, "A") == (2, 1)  # SO-1 frees its 2, SO-2 still holds 1
    assert [(e["voucher_type"], e["actual_qty"]) for e in stock.ledger][-1] == (DELIVERY_NOTE, -3)
    stock.submit(DELIVERY_NOTE, {"docstatus": 1, "items": [
        {"item_code": "A", "qty": 1, "warehouse": WH}]})  # fmt: skip
    assert qty(stock, "A") == (1, 1)  # not against an order: the reservation stays


def test_a_return_puts_goods_back_and_touches_no_reservation() -> None:
    stock = book()
    stock.submit(STOCK_ENTRY, receipt(("A", 5)))
    stock.submit_sales_order(order("SO-1", ("A", 2, 0)))
    stock.submit(DELIVERY_NOTE, {"docstatus": 1, "items": [
        {"item_code": "A", "qty": 1, "warehouse": WH, "against_sales_order": "SO-1"}]})  # fmt: skip
    back = stock.submit(DELIVERY_NOTE, {"docstatus": 1, "is_return": 1, "items": [
        {"item_code": "A", "qty": -1, "warehouse": WH, "against_sales_order": "SO-1"},
        {"item_code": "SERVICE", "qty": -1, "warehouse": WH}]})  # fmt: skip
    assert (back["status"], back["is_return"], back["items"][0]["qty"]) == ("Return", 1, -1)
    assert qty(stock, "A") == (5, 1)
    assert stock.ledger[-1]["actual_qty"] == 1 and stock.ledger[-1]["voucher_no"] == back["name"]
    with pytest.raises(DocValidationError, match="negative"):
        stock.submit(DELIVERY_NOTE, {"docstatus": 1, "is_return": 1, "items": [
            {"item_code": "A", "qty": 1, "warehouse": WH}]})  # fmt: skip


def test_releasing_an_order_frees_what_it_still_reserves() -> None:
    stock = book()
    stock.submit(STOCK_ENTRY, receipt(("A", 5)))
    stock.submit_sales_order(order("SO-1", ("A", 3, 1)))
    stock.submit_sales_order(order("SO-2", ("A", 1, 0)))
    before = stock.bins["A", WH].modified
    stock.release_sales_order("SO-1")
    assert qty(stock, "A") == (5, 1) and stock.bins["A", WH].modified > before
    stock.release_sales_order("SO-1")  # twice: nothing more
    assert qty(stock, "A") == (5, 1)
    with pytest.raises(DocValidationError, match="not a submitted order"):
        stock.submit(DELIVERY_NOTE, {"docstatus": 1, "items": [
            {"item_code": "A", "qty": 1, "warehouse": WH, "against_sales_order": "SO-1"}]})  # fmt: skip


# --- the feed over HTTP -----------------------------------------------------------------------


@pytest.fixture
async def sim() -> AsyncIterator[ErpSimulator]:
    simulator = await run_erp_simulator("127.0.0.1", 0, ErpSimConfig(seed=3))
    yield simulator
    await simulator.stop()


@pytest.fixture
async def feed(sim: ErpSimulator) -> AsyncIterator[ErpStockFeed]:
    assert sim.base_url
    stock_feed = ErpStockFeed(sim.base_url, "demo-key", "demo-secret", timeout_s=2.0)
    yield stock_feed
    await stock_feed.close()


def skus(levels: Any) -> list[str]:
    return [level.sku for level in levels]


async def test_poll_reads_everything_then_changes_from_the_cursor(
    sim: ErpSimulator, feed: ErpStockFeed
) -> None:
    assert (await feed.poll(None)).levels == [] and (await feed.poll("x")).cursor == "x"
    sim.receive("A", 3)
    sim.receive("B", 4, warehouse="Other - RSD")
    first = await feed.poll(None)
    assert skus(first.levels) == ["A", "B"]
    assert first.levels[0] == StockLevel(sku="A", warehouse=WH, actual_qty=3, reserved_qty=0,
                                         modified=frappe_time(sim.bins()[0]["modified"]))
    assert frappe_time(first.cursor) == first.levels[-1].modified  # the cursor: Frappe's text
    again = await feed.poll(first.cursor)  # the cursor's instant is read again, never skipped
    assert skus(again.levels) == ["B"] and again.cursor == first.cursor
    sim.set_stock("A", 1)
    later = await feed.poll(first.cursor)
    assert [(lv.sku, lv.actual_qty) for lv in later.levels] == [("B", 4), ("A", 1)]


async def test_poll_pages_through_more_than_500_rows(sim: ErpSimulator, feed: ErpStockFeed) -> None:
    for n in range(1203):
        sim.receive(f"SKU-{n:04d}", n + 1)
    result = await feed.poll(None)
    assert skus(result.levels) == [f"SKU-{n:04d}" for n in range(1203)]
    assert result.levels[-1].actual_qty == 1203
    assert result.cursor == max(b["modified"] for b in sim.bins())


async def test_changes_between_pages_skip_nothing(sim: ErpSimulator, feed: ErpStockFeed) -> None:
    """A Bin of page 1 changing before page 2 is read would shift an offset by one."""
    for n in range(1000):
        sim.receive(f"SKU-{n:04d}", 1)
    pages = 0
    read_page = feed._http.get_data

    async def page_then_change(*args: Any, **kwargs: Any) -> Any:
        nonlocal pages
        pages += 1
        rows = await read_page(*args, **kwargs)
        if pages == 1:
            sim.set_stock("SKU-0000", 9)
        return rows

    feed._http.get_data = page_then_change  # type: ignore[method-assign]
    levels = (await feed.poll(None)).levels
    assert set(skus(levels)) == {f"SKU-{n:04d}" for n in range(1000)}
    assert [lv.actual_qty for lv in levels if lv.sku == "SKU-0000"] == [1, 9]


async def test_a_full_page_at_one_instant_is_stepped_over(
    sim: ErpSimulator, feed: ErpStockFeed
) -> None:
    """Real ERPNext can stamp many Bins in one instant; the feed still reads each once."""
    for n in range(700):
        sim.receive(f"SKU-{n:04d}", 1)
    same = sim.bins()[0]["modified"]
    for found in sim.stock.bins.values():
        found.modified = same
    sim.receive("LATE", 1)
    result = await feed.poll(same)
    assert len(result.levels) == 701 and len(set(skus(result.levels))) == 701
    assert result.levels[-1].sku == "LATE"


async def test_warehouse_filter(sim: ErpSimulator) -> None:
    assert sim.base_url
    sim.receive("A", 1)
    sim.receive("A", 2, warehouse="Returns - RSD")
    sim.receive("A", 3, warehouse="Outlet - RSD")
    settings = Settings(  # type: ignore[call-arg]
        erp_base_url=AnyHttpUrl(sim.base_url),
        erp_stock_warehouses=" Stores - RSD, Outlet - RSD ,",
    )
    stock_feed = ErpStockFeed.from_settings(settings)
    try:
        levels = (await stock_feed.poll(None)).levels
    finally:
        await stock_feed.close()
    assert [(lv.warehouse, lv.actual_qty) for lv in levels] == [(WH, 1), ("Outlet - RSD", 3)]


async def test_feed_errors_map_to_the_sync_hierarchy(sim: ErpSimulator) -> None:
    assert sim.base_url
    bad = ErpStockFeed(sim.base_url, "demo-key", "wrong")
    try:
        with pytest.raises(PermanentError) as info:
            await bad.poll(None)
        assert info.value.status == 401
    finally:
        await bad.close()
    url = sim.base_url
    await sim.stop()
    gone = ErpStockFeed(url, "demo-key", "demo-secret", timeout_s=1.0)
    try:
        with pytest.raises(RetryableError):
            await gone.poll(None)
    finally:
        await gone.close()


async def test_feed_status_errors(feed: ErpStockFeed, monkeypatch: pytest.MonkeyPatch) -> None:
    answers = iter([(429, "{}", {"Retry-After": "2"}), (503, "down", {}), (200, '{"data": 1}', {})])

    async def answer(*_args: Any, **_kwargs: Any) -> tuple[int, str, dict[str, str]]:
        return next(answers)

    monkeypatch.setattr(feed._http, "request", answer)
    with pytest.raises(RateLimitedError) as info:
        await feed.poll(None)
    assert info.value.retry_after == 2.0
    with pytest.raises(RetryableError):
        await feed.poll(None)
    with pytest.raises(DecodeError):
        await feed.poll(None)


def test_pure_mapping() -> None:
    assert [whole_units(v, "q") for v in (2.0, 2.5, 3.49999, -1.5, None, "4")] == [2, 3, 3, -2, 0, 4]
    with pytest.raises(DecodeError):
        whole_units("lots", "q")
    with pytest.raises(DecodeError):
        stock_level({"item_code": "A", "warehouse": WH})
    row = {"item_code": "A", "warehouse": WH, "actual_qty": 5.0, "reserved_qty": 1.0,
           "modified": "2026-01-10 12:00:00.000001"}  # fmt: skip
    assert stock_level(row) == StockLevel(sku="A", warehouse=WH, actual_qty=5, reserved_qty=1,
                                            modified=datetime(2026, 1, 10, 12, 0, 0, 1, UTC))
    with pytest.raises(DecodeError):  # the ERP's order of positions must be a time
        stock_level({**row, "modified": "yesterday"})
    query = bin_query("T", ["W"], start=500, page_size=500)
    assert query["filters"] == '[["Bin", "modified", ">=", "T"], ["Bin", "warehouse", "in", ["W"]]]'
    assert query["order_by"] == "modified asc, name asc" and query["limit_start"] == "500"
    assert bin_query(None, [], start=0, page_size=5)["filters"] == "[]"
    assert parse_warehouses("") == () and parse_warehouses("a, b") == ("a", "b")
