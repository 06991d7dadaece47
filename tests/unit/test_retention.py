"""Order retention: which orders leave the hot tables, how a sweep walks a partition, and what
the index and stock agents forget (tables/retention.py, ARCHITECTURE §5f.5)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import rocksdict

from retail_sync.agents.stock import forget_lines
from retail_sync.streams.commands import ForgetLines
from retail_sync.streams.events import CancelRequested
from retail_sync.streams.models import Money, Order, OrderLine, OrderStatus, RefundRecord, ShipmentRecord
from retail_sync.streams.state import Correlation, OrderState, TimelineEntry
from retail_sync.streams.stock import Pending, Reservation, StockState, reservation_key
from retail_sync.tables import retention
from retail_sync.tables.retention import _iterate, last_change, retirable, scan, too_old_to_take

NOW = datetime(2026, 6, 1, tzinfo=UTC)
AGE = timedelta(days=30)


def _state(key: str = "shopify:1", status: OrderStatus = OrderStatus.SHIPPED,
           changed: datetime = NOW - timedelta(days=31), **kw) -> OrderState:
    zero = Money(amount=Decimal("0"), currency="EUR")
    order = Order(
        channel="shopify", marketplace_order_id=key.split(":")[1], created_at=changed,
        updated_at=changed, currency="EUR",
        lines=[OrderLine(line_id="1", sku="SKU-A", quantity=1, unit_price=zero, tax=zero,
                         discount=zero)],
        subtotal=zero, shipping=zero, tax_total=zero, discount_total=zero, total=zero)
    shipped = ShipmentRecord(shipment_id="S1", lines={"1": 1}, carrier="ups",
                             tracking_number="T1", shipped_at=changed, delivery_note="DN-1",
                             marketplace_confirmed_at=changed)
    fields = {"shipments": {"S1": shipped}} if status == OrderStatus.SHIPPED else {}
    fields.update(kw)
    return OrderState(
        order_key=key, channel="shopify", status=status, order=order,
        correlation=Correlation(marketplace_order_id=key.split(":")[1], erp_sales_order="SO-1"),
        timeline=[TimelineEntry(event="received", system="shopify", at=changed - timedelta(1)),
                  TimelineEntry(event="shipped", system="wms", at=changed)],
        received_at=changed - timedelta(days=1), **fields)


def test_a_closed_order_past_the_age_of_its_last_change_is_retired():
    assert last_change(_state()) == NOW - timedelta(days=31)
    assert retirable(_state(), NOW, AGE)
    assert retirable(_state(status=OrderStatus.CANCELLED), NOW, AGE)
    assert retirable(_state(status=OrderStatus.REFUNDED), NOW, AGE)


def test_a_recent_or_open_order_stays():
    assert not retirable(_state(changed=NOW - timedelta(days=29)), NOW, AGE)
    for status in (OrderStatus.RECEIVED, OrderStatus.STOCK_PENDING, OrderStatus.ERP_PENDING,
                   OrderStatus.ERP_FAILED, OrderStatus.ERP_CONFIRMED, OrderStatus.CANCEL_PENDING,
                   OrderStatus.PARTIALLY_SHIPPED):
        assert not retirable(_state(status=status), NOW, AGE), status


def test_a_closed_order_with_something_on_its_way_stays():
    old = NOW - timedelta(days=40)
    unposted = ShipmentRecord(shipment_id="S2", lines={"1": 1}, carrier="ups",
                              tracking_number="T2", shipped_at=old)  # no delivery note yet
    assert not retirable(_state(shipments={"S2": unposted}), NOW, AGE)
    refund = RefundRecord(refund_id="R1", lines={"1": 1}, amount=Decimal("1"), reason="x",
                          restock=True, source="erp", requested_at=old)  # no credit note yet
    assert not retirable(_state(status=OrderStatus.PARTIALLY_REFUNDED, refunds={"R1": refund}),
                         NOW, AGE)
    cancel = CancelRequested(order_key="shopify:1", by="operator", reason="x", at=old)
    assert not retirable(_state(status=OrderStatus.CANCELLED, cancel=cancel), NOW, AGE)


def test_an_order_created_before_the_retention_age_is_not_taken_as_new():
    assert too_old_to_take(NOW - AGE, NOW, AGE)
    assert not too_old_to_take(NOW - AGE + timedelta(seconds=1), NOW, AGE)


def _records(states: list[OrderState]) -> list[tuple[bytes, bytes]]:
    rows = [(s.order_key.encode(), s.model_dump_json().encode()) for s in states]
    rows.append((b"__faust\x00offset__", b"42"))
    return sorted(rows)


def test_a_sweep_reads_a_batch_and_continues_where_it_stopped():
    states = [_state(f"shopify:{n}", changed=NOW - timedelta(days=31 if n % 2 else 1))
              for n in range(10, 20)]
    rows = _records(states)
    decode = OrderState.model_validate_json
    seen, cursor, sweeps = [], None, 0
    while True:
        start = 0 if cursor is None else [k for k, _ in rows].index(cursor)
        keys, cursor = scan(iter(rows[start:]), 4, decode, NOW, AGE)
        seen += keys
        sweeps += 1
        assert len(keys) <= 4
        if cursor is None:
            break
    assert sweeps == 3  # 11 records (10 orders and Faust's offset) by 4
    assert seen == [f"shopify:{n}" for n in range(11, 20, 2)]


def test_a_sweep_walks_a_rocksdb_partition_from_its_cursor(tmp_path):
    db = rocksdict.Rdict(str(tmp_path / "p0"), options=rocksdict.Options(raw_mode=True))
    try:
        for key, value in _records([_state(f"shopify:{n}") for n in range(100, 107)]):
            db.put(key, value)
        decode = OrderState.model_validate_json
        first, cursor = scan(_iterate(db, None), 5, decode, NOW, AGE)
        rest, end = scan(_iterate(db, cursor), 5, decode, NOW, AGE)
        assert first + rest == [f"shopify:{n}" for n in range(100, 107)]
        assert end is None and cursor is not None
    finally:
        db.close()


def test_a_sweep_stops_where_the_order_index_entries_begin(tmp_path, caplog):
    from retail_sync.tables import store_index

    db = rocksdict.Rdict(str(tmp_path / "p0"), options=rocksdict.Options(raw_mode=True))
    try:
        for key, value in _records([_state(f"shopify:{n}") for n in range(100, 103)]):
            db.put(key, value)
            db.put(store_index.index_key("SO-" + key.decode(), key), b"")  # sorts after every order
        keys, end = scan(_iterate(db, None), 100, OrderState.model_validate_json, NOW, AGE)
        assert keys == [f"shopify:{n}" for n in range(100, 103)] and end is None
        assert "not an order state" not in caplog.text  # no index entry was read as an order
    finally:
        db.close()


def test_the_stock_agent_forgets_only_lines_that_hold_nothing():
    def line(line_id: str, status: str) -> Reservation:
        return Reservation(order_key="shopify:1", channel="shopify", line_id=line_id,
                           requested=1, quantity=1, status=status, reserved_at=NOW)
    keys = {n: reservation_key("SKU-A", "shopify:1", n) for n in "123456"}
    sku = StockState(sku="SKU-A", seq=10, pending={keys["6"]: Pending(
        quantity=1, erp_created="2026-11-27 12:00:00.000000")})
    table: dict = {keys["1"]: line("1", "consumed"), keys["2"]: line("2", "released"),
                   keys["3"]: line("3", "open"),
                   # committed: handed over to the ERP (not pending any more), or still pending
                   keys["5"]: line("5", "committed"), keys["6"]: line("6", "committed"),
                   "SKU-A": sku}
    deleted = forget_lines(table, ForgetLines(sku="SKU-A", order_key="shopify:1",
                                              line_ids=["1", "2", "3", "4", "5", "6"], at=NOW))
    assert deleted == 3
    assert set(table) == {keys["3"], keys["6"], "SKU-A"}


def test_the_archive_topic_is_named_after_the_app():
    assert retention.archive_topic_name("rs-1") == "rs-1.order-archive"
