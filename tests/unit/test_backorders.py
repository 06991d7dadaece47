"""Backordered units on the order's side (streams/rules/lifecycle.apply, streams/rules/aftersale): the ERP is
told which units have no stock, the stock agent is told to keep them waiting, and when goods
arrive (BackorderReleased) they go to the warehouse as a fulfilment order of their own, once, and
never for an order that is being cancelled or is cancelled."""

from datetime import UTC, datetime, timedelta

from retail_sync.connectors.shopify.mapper import map_order
from retail_sync.connectors.wms.client import order_key_of
from retail_sync.streams.commands import CommitStock, WmsCancel, WmsRelease
from retail_sync.streams.events import (
    BackorderReleased,
    CancelRequested,
    ErpOrderCancelled,
    ErpOrderPosted,
    FulfilmentCancelled,
    FulfilmentReleased,
    LineAllocation,
    OrderReceived,
    ShipmentReported,
    StockAnswered,
)
from retail_sync.streams.models import OrderStatus, ShipmentRecord
from retail_sync.streams.rules.lifecycle import apply
from tests.fixture_orders import shopify_order

FIXTURE = shopify_order()  # the sample with totals that add up (tests/fixture_orders.py)
T0 = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
KEY = "shopify:450789469"
GREEN, RED, BLACK = "466157049", "518995019", "703073504"  # one unit each
SKUS = {GREEN: "IPOD2008GREEN", RED: "IPOD2008RED", BLACK: "IPOD2008BLACK"}
SO = "SAL-ORD-2026-00007"


def step(state, event, minutes=0):
    return apply(state, event, T0 + timedelta(minutes=minutes), policy="backorder")


def backordered(short=(RED,)):
    """An order whose ``short`` lines found no stock, accepted as a backorder and confirmed by
    the ERP; returns the state and the confirmation's outcome."""
    order = map_order(FIXTURE)
    out = step(None, OrderReceived(order_key=KEY, order=order, delivery_id="d1", received_at=T0))
    state = out.state
    for line_id, sku in SKUS.items():
        out = step(state, StockAnswered(order_key=KEY, sku=sku, tracked=True, at=T0, lines=[
            LineAllocation(line_id=line_id, requested=1, reserved=0 if line_id in short else 1)]))
        state = out.state
    assert state.stock_decision == "backorder" and state.status is OrderStatus.ERP_PENDING
    assert out.erp_requests[0].backorders == dict.fromkeys(short, 1)
    out = step(state, ErpOrderPosted(order_key=KEY, erp_sales_order=SO, created=True,
                                     posted_at=T0, attempts=1, erp_created="2026-11-27 12:00:01"))
    return out.state, out


def arrived(line_id=RED, release_id=None, minutes=60):
    return BackorderReleased(order_key=KEY, sku=SKUS[line_id], lines={line_id: 1},
                             release_id=release_id or f"{SKUS[line_id]}@42", waited_s=3600,
                             at=T0 + timedelta(minutes=minutes))


def shipped(sid, lines):
    return ShipmentReported(order_key=KEY, at=T0, shipment=ShipmentRecord(
        shipment_id=sid, lines=dict.fromkeys(lines, 1), carrier="UPS", tracking_number=f"1Z{sid}",
        shipped_at=T0 + timedelta(minutes=90)))


def test_confirmation_releases_what_had_stock_and_tells_the_stock_agent_what_waits():
    state, out = backordered()
    [release] = out.wms_commands
    assert isinstance(release, WmsRelease) and release.reference is None
    assert {ln.line_id for ln in release.lines} == {GREEN, BLACK}
    commits = {c.sku: c for c in out.stock_commands if isinstance(c, CommitStock)}
    assert commits["IPOD2008RED"].backorders == {RED: 1}
    assert commits["IPOD2008GREEN"].backorders == {}


def test_goods_arriving_release_the_waiting_units_once_under_their_own_reference():
    state, _ = backordered()
    out = step(state, arrived())
    [release] = out.wms_commands
    assert release.reference == f"{KEY}#bo1" and [(ln.line_id, ln.quantity)
                                                   for ln in release.lines] == [(RED, 1)]
    assert release.erp_sales_order == SO and out.changed
    state = out.state
    assert state.timeline[-1].event == "backorder_released"
    # the same release again (a replay): asked again until the warehouse answered, not recorded
    again = step(state, arrived())
    assert not again.changed and [c.reference for c in again.wms_commands] == [f"{KEY}#bo1"]
    state = step(state, FulfilmentReleased(order_key=KEY, wms_reference="FO-2", at=T0,
                                           reference=f"{KEY}#bo1")).state
    assert state.backorders[f"{SKUS[RED]}@42"].wms_fulfilment_id == "FO-2"
    assert step(state, arrived()).wms_commands == []
    # a second release for units the order no longer waits for is refused, with a reason
    extra = step(state, arrived(release_id="IPOD2008RED@43"))
    assert extra.problem and "does not wait for" in extra.problem and extra.wms_commands == []


def test_the_order_is_shipped_only_when_the_backordered_units_shipped_too():
    state, _ = backordered()
    state = step(state, FulfilmentReleased(order_key=KEY, wms_reference="FO-1", at=T0)).state
    state = step(state, shipped("S1", [GREEN, BLACK])).state
    assert state.status is OrderStatus.PARTIALLY_SHIPPED
    state = step(state, arrived()).state  # a partially shipped order still takes its backorder
    state = step(state, shipped("S2", [RED])).state
    assert state.status is OrderStatus.SHIPPED


def test_every_line_backordered_goes_to_the_warehouse_only_when_goods_arrive():
    state, out = backordered(short=(GREEN, RED, BLACK))
    assert out.wms_commands == [] and state.correlation.wms_fulfilment_id is None
    out = step(state, arrived(GREEN, "IPOD2008GREEN@7"))
    assert [c.reference for c in out.wms_commands] == [f"{KEY}#bo1"]
    out = step(out.state, arrived(BLACK, "IPOD2008BLACK@9"))
    assert [c.reference for c in out.wms_commands] == [f"{KEY}#bo2"]


def test_a_cancellation_stops_the_backorder_fulfilments_too():
    state, _ = backordered()
    state = step(state, arrived()).state
    out = step(state, CancelRequested(order_key=KEY, by="shopify", at=T0, reason="customer"))
    [cancel] = out.wms_commands
    assert isinstance(cancel, WmsCancel) and cancel.references == [f"{KEY}#bo1"]


def test_goods_arriving_while_cancelling_wait_for_the_warehouse_answer():
    state, _ = backordered()
    state = step(state, CancelRequested(order_key=KEY, by="shopify", at=T0,
                                        reason="customer")).state
    out = step(state, arrived())
    assert out.changed and out.wms_commands == []  # kept, not sent: it may be cancelled
    # the warehouse had already shipped the rest: the cancellation is refused, the units go
    out = step(out.state, FulfilmentCancelled(order_key=KEY, ok=False, detail="already shipped",
                                              at=T0))
    assert [c.reference for c in out.wms_commands] == [f"{KEY}#bo1"]


def test_goods_arriving_for_a_cancelled_order_change_nothing():
    state, _ = backordered()
    state = step(state, CancelRequested(order_key=KEY, by="shopify", at=T0,
                                        reason="customer")).state
    state = step(state, FulfilmentCancelled(order_key=KEY, ok=True, detail="stopped",
                                            at=T0)).state
    out = step(state, ErpOrderCancelled(order_key=KEY, erp_sales_order=SO, reason="customer",
                                        at=T0))
    assert out.state.status is OrderStatus.CANCELLED
    late = step(out.state, arrived())
    assert not late.changed and late.wms_commands == [] and late.problem is None


def test_backorder_references_map_back_to_their_order():
    assert order_key_of(f"{KEY}#bo1") == KEY
    assert order_key_of(f"{KEY}#bo12") == KEY
    assert order_key_of(KEY) == KEY
    assert order_key_of("regional:A#b#bo3") == "regional:A#b"
    assert order_key_of("x#bo0") == "x#bo0"  # not one of ours: left as it is
