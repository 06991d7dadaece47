"""The order state machine after the ERP: shipments, cancellations, returns (streams/rules/aftersale.py
through streams/rules/lifecycle.apply), example by example, and as a property: whatever order the other
systems' answers arrive in, duplicated or late, the order converges to the same final state."""

import random
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from retail_sync.connectors.shopify.mapper import map_order
from retail_sync.streams.commands import (
    CommitStock,
    ErpCancelRequest,
    ErpPostRequest,
    ErpReturnRequest,
    ErpShipmentRequest,
    MarketplaceCancel,
    MarketplaceRefund,
    MarketplaceShipment,
    ReleaseStock,
    ReserveStock,
    WmsCancel,
    WmsExpectReturn,
    WmsRelease,
)
from retail_sync.streams.events import (
    BackorderReleased,
    CancelRequested,
    ErpOrderCancelled,
    ErpOrderFailed,
    ErpOrderPosted,
    ErpReturnPosted,
    ErpShipmentPosted,
    FulfilmentCancelled,
    FulfilmentReleased,
    LineAllocation,
    MarketplaceNotified,
    OrderReceived,
    ReturnReceived,
    ReturnRequested,
    ShipmentReported,
    StockAnswered,
)
from retail_sync.streams.models import OrderStatus, RefundRecord, ShipmentRecord
from retail_sync.streams.rules.lifecycle import apply
from tests.fixture_orders import shopify_order

FIXTURE = shopify_order()  # the sample with totals that add up (tests/fixture_orders.py)
T0 = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
KEY = "shopify:450789469"
LINES = ["466157049", "518995019", "703073504"]  # one unit each


def received(delivery="d1", **changes):
    order = map_order({**FIXTURE, **changes})
    return OrderReceived(order_key=order.order_key, order=order, delivery_id=delivery,
                         received_at=T0)


def shipment(sid, lines, minutes=5):
    return ShipmentReported(order_key=KEY, at=T0, shipment=ShipmentRecord(
        shipment_id=sid, lines=dict.fromkeys(lines, 1), carrier="UPS",
        tracking_number=f"1Z{sid}", shipped_at=T0 + timedelta(minutes=minutes)))


def refund(rid, lines, restock=True, source="erp"):
    return ReturnRequested(order_key=KEY, refund=RefundRecord(
        refund_id=rid, lines=dict.fromkeys(lines, 1), amount=Decimal("10.00"), reason="damaged",
        restock=restock, source=source, requested_at=T0 + timedelta(hours=1)))


class World:
    """The other systems, answering every command the way they would (deterministically).
    ``short``: lines with no stock (a backorder's units arrive as soon as the ERP confirmed);
    ``erp_fails``: the ERP refuses every post."""

    def __init__(self, short=frozenset(), erp_fails=False):
        self.so = "SAL-ORD-2026-00001"
        self.short = short
        self.erp_fails = erp_fails

    def answer(self, command):
        if isinstance(command, ReserveStock):
            return [StockAnswered(order_key=KEY, sku=command.sku, tracked=True, at=T0, lines=[
                LineAllocation(line_id=ln.line_id, requested=ln.quantity,
                               reserved=0 if ln.line_id in self.short else ln.quantity)
                for ln in command.lines])]
        if isinstance(command, CommitStock) and command.backorders:
            return [BackorderReleased(order_key=KEY, sku=command.sku, lines=command.backorders,
                                      release_id=f"{command.sku}@1", at=T0)]
        if isinstance(command, ErpPostRequest) and self.erp_fails:
            return [ErpOrderFailed(order_key=KEY, reason="417 no customer", failed_at=T0,
                                   attempts=3)]
        if isinstance(command, ErpPostRequest):
            return [ErpOrderPosted(order_key=KEY, erp_sales_order=self.so, created=True,
                                   posted_at=T0, attempts=1, erp_created="2026-11-27 12:00:01")]
        if isinstance(command, WmsRelease):
            return [FulfilmentReleased(order_key=KEY, wms_reference=f"FO-{command.reference or 1}",
                                       at=T0, reference=command.reference)]
        if isinstance(command, ErpShipmentRequest):
            sid = command.shipment.shipment_id
            return [ErpShipmentPosted(order_key=KEY, shipment_id=sid, delivery_note=f"DN-{sid}",
                                      sales_invoice=f"INV-{sid}", at=T0)]
        if isinstance(command, MarketplaceShipment):
            return [MarketplaceNotified(order_key=KEY, action="ship", ok=True, detail="ok",
                                        at=T0, reference=command.shipment.shipment_id)]
        if isinstance(command, WmsExpectReturn):
            return [ReturnReceived(order_key=KEY, refund_id=command.refund_id, at=T0)]
        if isinstance(command, ErpReturnRequest):
            rid = command.refund.refund_id
            return [ErpReturnPosted(order_key=KEY, refund_id=rid, credit_note=f"CN-{rid}",
                                    return_delivery_note=f"RDN-{rid}", at=T0)]
        if isinstance(command, MarketplaceRefund):
            return [MarketplaceNotified(order_key=KEY, action="refund", ok=True, detail="ok",
                                        at=T0, reference=command.refund.refund_id)]
        if isinstance(command, WmsCancel):
            return [FulfilmentCancelled(order_key=KEY, ok=True, detail="stopped", at=T0)]
        if isinstance(command, ErpCancelRequest):
            return [ErpOrderCancelled(order_key=KEY, erp_sales_order=command.erp_sales_order,
                                      reason=command.reason, at=T0)]
        return []  # ReleaseStock, CommitStock, MarketplaceCancel: no answer the order needs


def commands(out):
    return [*out.stock_commands, *out.erp_requests, *out.wms_commands,
            *out.marketplace_commands]


def run(external, rng=None, duplicate_rate=0.0, short=frozenset(), erp_fails=False):
    """Deliver ``external`` events and every answer in an order ``rng`` picks (or in order), with
    duplicates; returns the final state and every command sent. ``short``: lines without stock,
    accepted as a backorder; ``erp_fails``: the ERP refuses every post."""
    world, state, sent, problems = World(short, erp_fails), None, [], []
    policy = "backorder" if short else "cancel"
    pending = list(external)  # outside events, each caused by the one before it
    queue, delivered = [pending.pop(0)], []
    while queue or pending:
        if not queue:  # in order: the next outside event once everything is answered
            queue.append(pending.pop(0))
        index = rng.randrange(len(queue)) if rng else 0
        event = queue.pop(index)
        if rng and pending and event is external[len(external) - len(pending) - 1]:
            queue.append(pending.pop(0))  # out of order: it may overtake every answer
        if rng and delivered and rng.random() < duplicate_rate:
            queue.append(rng.choice(delivered))  # a redelivery, later
        out = apply(state, event, T0 + timedelta(minutes=len(delivered)), policy)
        delivered.append(event)
        if out.problem:
            problems.append(out.problem)
        state = out.state if out.state is not None else state
        for command in commands(out):
            sent.append(command)
            queue.extend(world.answer(command))
    return state, sent, problems


def final(state):
    """What must converge: everything but the order of the timeline."""
    return {
        "status": state.status, "correlation": state.correlation.model_dump(exclude={"delivery_ids"}),
        "shipments": {k: (v.delivery_note, v.sales_invoice, v.marketplace_confirmed_at is not None)
                      for k, v in state.shipments.items()},
        "refunds": {k: (v.credit_note, v.goods_received_at is not None,
                        v.marketplace_refunded_at is not None) for k, v in state.refunds.items()},
        "stock_decision": state.stock_decision,
        "backorders": {k: (v.reference, v.lines, v.wms_fulfilment_id)
                       for k, v in state.backorders.items()},
    }


# --- examples ----------------------------------------------------------------------------------


def test_happy_path_order_to_erp_to_warehouse_to_marketplace_to_invoice():
    state, sent, problems = run([received(), shipment("S1", LINES)])
    assert problems == [] and state.status is OrderStatus.SHIPPED
    assert state.correlation.erp_sales_order == "SAL-ORD-2026-00001"
    assert state.correlation.wms_fulfilment_id == "FO-1"
    s1 = state.shipments["S1"]
    assert (s1.delivery_note, s1.sales_invoice) == ("DN-S1", "INV-S1")
    assert s1.marketplace_confirmed_at is not None
    kinds = [type(c).__name__ for c in sent]
    assert kinds.index("ErpShipmentRequest") < kinds.index("MarketplaceShipment")  # ERP first
    events = [t.event for t in state.timeline]
    assert events.index("erp_delivery_note") < events.index("marketplace_ship_done")
    assert all(t.since_previous_s is not None for t in state.timeline[-4:])


def test_partial_shipment_then_the_rest():
    state, _, _ = run([received(), shipment("S1", LINES[:1])])
    assert state.status is OrderStatus.PARTIALLY_SHIPPED
    state, _, _ = run([received(), shipment("S1", LINES[:1]), shipment("S2", LINES[1:], 9)])
    assert state.status is OrderStatus.SHIPPED and set(state.shipments) == {"S1", "S2"}


def test_shipment_before_the_erp_acknowledged_the_order_is_posted_on_confirmation():
    order = received()
    state = apply(None, order, T0).state
    for command in apply(None, order, T0).stock_commands:
        for answer in World().answer(command):
            state = apply(state, answer, T0).state
    assert state.status is OrderStatus.ERP_PENDING
    early = apply(state, shipment("S1", LINES), T0)
    assert early.erp_requests == [] and "S1" in early.state.shipments
    assert early.state.status is OrderStatus.ERP_PENDING  # kept; the status follows the ERP
    confirmed = apply(early.state, World().answer(ErpPostRequest(
        order_key=KEY, order=order.order, received_at=T0, requested_at=T0))[0], T0)
    assert [type(r).__name__ for r in confirmed.erp_requests] == ["ErpShipmentRequest"]
    assert confirmed.state.status is OrderStatus.SHIPPED  # never back to erp_confirmed


def test_marketplace_cancellation_before_shipment_cancels_erp_and_warehouse_and_releases_stock():
    cancelled = received(delivery="d2", cancelled_at="2026-11-27T12:30:00Z")
    state, sent, problems = run([received(), cancelled])
    assert problems == [] and state.status is OrderStatus.CANCELLED
    assert any(isinstance(c, WmsCancel) for c in sent)
    assert any(isinstance(c, ErpCancelRequest) for c in sent)
    assert {c.sku for c in sent if isinstance(c, ReleaseStock)} == {
        "IPOD2008BLACK", "IPOD2008GREEN", "IPOD2008RED"}
    assert not any(isinstance(c, MarketplaceCancel) for c in sent)  # it asked: not told again


def test_cancellation_after_shipment_is_refused_with_a_reason():
    cancelled = received(delivery="d2", cancelled_at="2026-11-27T12:30:00Z")
    state, sent, problems = run([received(), shipment("S1", LINES), cancelled])
    assert state.status is OrderStatus.SHIPPED
    assert problems and "refused" in problems[0] and "shipped" in problems[0]
    assert not any(isinstance(c, ErpCancelRequest) for c in sent)


def test_erp_cancellation_is_propagated_to_the_marketplace():
    state, sent, _ = run([received()])
    out = apply(state, ErpOrderCancelled(order_key=KEY, erp_sales_order="SAL-ORD-2026-00001",
                                         reason="fraud", at=T0), T0)
    assert out.state.status is OrderStatus.CANCELLED and out.state.cancel_reason == "erp: fraud"
    assert [type(c).__name__ for c in out.marketplace_commands] == ["MarketplaceCancel"]
    assert [type(c).__name__ for c in out.wms_commands] == ["WmsCancel"]


def test_return_with_goods_back_then_credit_note_then_marketplace_refund():
    state, sent, problems = run([received(), shipment("S1", LINES), refund("R1", LINES[:1])])
    assert problems == [] and state.status is OrderStatus.PARTIALLY_REFUNDED
    r1 = state.refunds["R1"]
    assert r1.goods_received_at and r1.credit_note == "CN-R1" and r1.marketplace_refunded_at
    kinds = [type(c).__name__ for c in sent]
    assert kinds.index("WmsExpectReturn") < kinds.index("ErpReturnRequest") < kinds.index(
        "MarketplaceRefund")


def test_refund_started_on_the_marketplace_is_not_sent_back_to_it():
    state, sent, _ = run([received(), shipment("S1", LINES),
                          refund("R1", LINES, restock=False, source="shopify")])
    assert state.status is OrderStatus.REFUNDED and state.refunds["R1"].credit_note == "CN-R1"
    assert not any(isinstance(c, MarketplaceRefund) for c in sent)


def test_refund_of_unshipped_units_is_refused():
    state, _, problems = run([received(), shipment("S1", LINES[:1]), refund("R1", LINES[1:2])])
    assert "R1" not in state.refunds and "not shipped" in problems[0]


# --- the property --------------------------------------------------------------------------------

SCENARIOS = {
    "shipped": [received(), shipment("S1", LINES[:2]), shipment("S2", LINES[2:], 9)],
    # the last line had no stock: it waits, goods arrive, it ships in a fulfilment of its own
    "backordered": [received(), shipment("S1", LINES[:2]), shipment("S2", LINES[2:], 9)],
    "refunded": [received(), shipment("S1", LINES), refund("R1", LINES[:1]),
                 refund("R2", LINES[1:], restock=False, source="shopify")],
    "redelivered": [received(), received(delivery="d2"), shipment("S1", LINES),
                    received(delivery="d3")],
}


@settings(max_examples=150, deadline=None)
@given(st.sampled_from(sorted(SCENARIOS)), st.integers(0, 2**32 - 1),
       st.sampled_from([0.0, 0.2, 0.5]))
def test_any_arrival_order_converges_to_the_same_final_state(name, seed, duplicates):
    """Every answer of every system, and the warehouse's and marketplace's own events, arrive in
    a random order, some twice: the final state is the one of the in-order run."""
    short = frozenset(LINES[2:]) if name == "backordered" else frozenset()
    expected, _, _ = run(SCENARIOS[name], short=short)
    state, _, _ = run(SCENARIOS[name], rng=random.Random(seed), duplicate_rate=duplicates,
                      short=short)
    assert final(state) == final(expected)
    if name == "backordered":
        assert expected.status is OrderStatus.SHIPPED and expected.stock_decision == "backorder"
        assert [b.reference for b in expected.backorders.values()] == [f"{KEY}#bo1"]


#: an operator's cancellation; in a random order it may come before the stock answers, while the
#: ERP post is in flight (then the post's answer, success or failure, completes it) or after it
OPERATOR_CANCEL = CancelRequested(order_key=KEY, by="operator", reason="customer called",
                                  at=T0 + timedelta(minutes=1))


@settings(max_examples=150, deadline=None)
@given(st.booleans(), st.integers(0, 2**32 - 1), st.sampled_from([0.0, 0.2, 0.5]))
def test_a_cancellation_in_any_arrival_order_completes_on_every_system_that_had_the_order(
        erp_fails, seed, duplicates):
    """Cancelled before, during or after the ERP post, which succeeds or fails: always cancelled
    in the end, every reservation released, the marketplace told (an operator's cancellation),
    the ERP asked to cancel exactly when it holds the order, the warehouse when it had it."""
    for rng in (None, random.Random(seed)):
        state, sent, problems = run([received(), OPERATOR_CANCEL], rng=rng,
                                    duplicate_rate=duplicates if rng else 0.0,
                                    erp_fails=erp_fails)
        assert problems == []
        assert state.status is OrderStatus.CANCELLED, [t.event for t in state.timeline]
        assert state.cancel is None and state.cancel_reason == "operator: customer called"
        assert {c.sku for c in sent if isinstance(c, ReleaseStock)} == {
            "IPOD2008BLACK", "IPOD2008GREEN", "IPOD2008RED"}
        assert any(isinstance(c, MarketplaceCancel) and c.whole_order for c in sent)
        in_erp = state.correlation.erp_sales_order is not None
        assert in_erp is (not erp_fails and any(isinstance(c, ErpPostRequest) for c in sent))
        assert any(isinstance(c, ErpCancelRequest) for c in sent) is in_erp
        assert any(isinstance(c, WmsCancel) for c in sent) is any(
            isinstance(c, WmsRelease) for c in sent)
