"""Events the real marketplace APIs send (issue 12 item 3): Amazon buyer cancellation requests,
Shopify order edits and removals (current_quantity, cancel-type refunds in the order body),
Shopify custom items, line discounts only in discount_allocations."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from retail_sync.connectors.amazon import mapper as amazon
from retail_sync.connectors.amazon.outbound import acknowledgement_feed
from retail_sync.connectors.shopify import mapper as shopify
from retail_sync.simulators.amazon.listings import parse_acknowledgements
from retail_sync.simulators.amazon.orders import Market, OrderFactory, request_cancel_by_buyer, visible
from retail_sync.streams.commands import (
    ErpCancelRequest,
    ErpPostRequest,
    MarketplaceCancel,
    ReleaseStock,
    ReserveStock,
    WmsCancel,
    WmsRelease,
)
from retail_sync.streams.events import (
    ErpOrderCancelled,
    ErpOrderPosted,
    FulfilmentCancelled,
    FulfilmentReleased,
    LineAllocation,
    OrderReceived,
    ShipmentReported,
    StockAnswered,
)
from retail_sync.streams.models import LineUnits, OrderStatus, ShipmentRecord
from retail_sync.streams.rules.lifecycle import apply
from retail_sync.streams.validation import MappingError
from tests.fixture_orders import shopify_order

T0 = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)


# --- a small world answering every command -------------------------------------------------------


def answers(command):
    if isinstance(command, ReserveStock):
        return [StockAnswered(order_key=command.order_key, sku=command.sku, tracked=True, at=T0,
                              lines=[LineAllocation(line_id=ln.line_id, requested=ln.quantity,
                                                    reserved=ln.quantity) for ln in command.lines])]
    if isinstance(command, ErpPostRequest):
        return [ErpOrderPosted(order_key=command.order_key, erp_sales_order="SAL-ORD-1",
                               created=True, posted_at=T0, attempts=1)]
    if isinstance(command, WmsRelease):
        return [FulfilmentReleased(order_key=command.order_key, wms_reference="FO-1", at=T0)]
    if isinstance(command, WmsCancel):
        return [FulfilmentCancelled(order_key=command.order_key, ok=True, detail="stopped", at=T0)]
    if isinstance(command, ErpCancelRequest):
        return [ErpOrderCancelled(order_key=command.order_key, erp_sales_order=command.erp_sales_order,
                                  reason=command.reason, at=T0)]
    return []


def run(events, state=None, *, edit_policy="apply"):
    """Apply ``events`` and every answer; (state, commands sent, problems)."""
    queue, sent, problems = list(events), [], []
    while queue:
        out = apply(state, queue.pop(0), T0, "cancel", edit_policy)
        state = out.state if out.state is not None else state
        if out.problem:
            problems.append(out.problem)
        for command in [*out.stock_commands, *out.erp_requests, *out.wms_commands,
                        *out.marketplace_commands]:
            sent.append(command)
            queue.extend(answers(command))
    return state, sent, problems


# --- Amazon: a buyer's cancellation request ------------------------------------------------------


def amazon_record(seed=3):
    factory = OrderFactory(Market(), seed=seed, mfn_rate=1.0)
    lines = [{"sku": "RS-MUG-350", "unit_price": "12.50", "quantity": 2},
             {"sku": "RS-LAMP-01", "unit_price": "39.99", "quantity": 1}]
    return factory.order("111-0000001-0000001", "Unshipped", T0, lines)


def amazon_event(record, delivery):
    order, items = visible(record)
    mapped = amazon.map_order(copy.deepcopy(order), copy.deepcopy(items))
    return OrderReceived(order_key=mapped.order_key, order=mapped, delivery_id=delivery,
                         received_at=T0)


def test_the_mapper_reads_buyer_requested_cancel_as_the_spec_shapes_it() -> None:
    record = amazon_record()
    assert amazon_event(record, "d1").order.buyer_cancel_request is None
    request_cancel_by_buyer(record, "Found cheaper somewhere else.", T0 + timedelta(minutes=5))
    items = visible(record)[1]
    assert all(i["BuyerRequestedCancel"] == {"IsBuyerRequestedCancel": "true",
                                             "BuyerCancelReason": "Found cheaper somewhere else."}
               for i in items)
    assert record.order["OrderStatus"] == "Unshipped"  # the seller has to act on it
    order = amazon_event(record, "d2").order
    assert order.buyer_cancel_request is not None
    assert order.buyer_cancel_request.reason == "Found cheaper somewhere else."
    assert order.buyer_cancel_request.line_ids == [ln.line_id for ln in order.lines]
    assert order.updated_at > order.created_at  # a poller by LastUpdatedAfter sees it again


def test_a_buyer_cancel_request_after_the_erp_post_cancels_everywhere_and_answers_amazon() -> None:
    record = amazon_record()
    state, sent, problems = run([amazon_event(record, "d1")])
    assert state.status is OrderStatus.ERP_CONFIRMED and not problems
    request_cancel_by_buyer(record, "Found cheaper somewhere else.", T0 + timedelta(minutes=5))
    state, sent, problems = run([amazon_event(record, "d2")], state)
    assert not problems and state.status is OrderStatus.CANCELLED
    assert state.cancel_reason.startswith("buyer: buyer requested cancellation")
    kinds = [type(c).__name__ for c in sent]
    assert kinds.count("WmsCancel") == 1 and kinds.count("ErpCancelRequest") == 1
    assert {c.sku for c in sent if isinstance(c, ReleaseStock)} == {"RS-MUG-350", "RS-LAMP-01"}
    [cancel] = [c for c in sent if isinstance(c, MarketplaceCancel)]
    assert cancel.reason == "BuyerCanceled" and cancel.whole_order
    assert sorted(ln.line_id for ln in cancel.lines) == sorted(i["OrderItemId"] for i in record.items)
    again, sent, problems = run([amazon_event(record, "d3")], state)  # polled again: nothing new
    assert again.status is OrderStatus.CANCELLED and not problems
    assert not [c for c in sent if not isinstance(c, ReserveStock | ReleaseStock)]


def test_an_order_first_seen_with_a_buyer_cancel_request_reserves_nothing() -> None:
    record = amazon_record()
    request_cancel_by_buyer(record, None, T0)
    state, sent, problems = run([amazon_event(record, "d1")])
    assert state.status is OrderStatus.CANCELLED and not problems
    assert [type(c).__name__ for c in sent] == ["MarketplaceCancel"]
    assert sent[0].reason == "BuyerCanceled"


def test_a_buyer_cancel_request_after_shipment_is_refused_once() -> None:
    record = amazon_record()
    state, _, _ = run([amazon_event(record, "d1")])
    shipped = ShipmentReported(order_key=state.order_key, at=T0, shipment=ShipmentRecord(
        shipment_id="S1", lines={ln.line_id: ln.quantity for ln in state.order.lines},
        carrier="UPS", tracking_number="1Z1", shipped_at=T0))
    state, _, _ = run([shipped], state)
    request_cancel_by_buyer(record, "late", T0 + timedelta(minutes=5))
    state, sent, problems = run([amazon_event(record, "d2")], state)
    assert state.status is OrderStatus.SHIPPED and len(problems) == 1 and "already shipped" in problems[0]
    assert not [c for c in sent if isinstance(c, MarketplaceCancel | WmsCancel | ErpCancelRequest)]
    _, _, problems = run([amazon_event(record, "d3")], state)
    assert problems == []  # told once


def test_a_request_naming_some_items_only_is_left_to_a_human() -> None:
    record = amazon_record()
    state, _, _ = run([amazon_event(record, "d1")])
    first = record.items[0]["OrderItemId"]
    request_cancel_by_buyer(record, "one too many", T0 + timedelta(minutes=5), item_ids=[first])
    state, sent, problems = run([amazon_event(record, "d2")], state)
    assert state.status is OrderStatus.ERP_CONFIRMED and len(problems) == 1 and first in problems[0]
    assert not [c for c in sent if isinstance(c, MarketplaceCancel)]


def test_the_acknowledgement_answering_a_buyer_lists_every_item_as_buyer_canceled() -> None:
    lines = [LineUnits(line_id="42", sku="A", quantity=2), LineUnits(line_id="43", sku="B", quantity=1)]
    [ack] = parse_acknowledgements(acknowledgement_feed("S", "111-1", lines, whole_order=True,
                                                        reason="BuyerCanceled"))
    assert ack.status_code == "Failure"
    assert [(i.item_code, i.reason, i.quantity) for i in ack.items] == [
        ("42", "BuyerCanceled", 2), ("43", "BuyerCanceled", 1)]


# --- Shopify: discounts, custom items, edits --------------------------------------------------


FIXTURE = shopify_order()
LINES = [str(li["id"]) for li in FIXTURE["line_items"]]


def test_line_discounts_come_from_discount_allocations() -> None:
    body = copy.deepcopy(FIXTURE)
    body["line_items"][0].update(total_discount="0.00", discount_allocations=[
        {"amount": "3.34", "discount_application_index": 0},
        {"amount": "1.00", "discount_application_index": 1}])
    body["total_discounts"] = "4.34"
    body["subtotal_price"] = str(Decimal(body["subtotal_price"]) - Decimal("4.34"))
    body["total_price"] = str(Decimal(body["total_price"]) - Decimal("4.34"))
    order = shopify.map_order(body)
    line = order.lines[0]
    assert line.discount.amount == Decimal("4.34")
    assert line.unit_price.amount * line.quantity - line.discount.amount == Decimal("194.66")
    body["line_items"][0].update(total_discount="4.34", discount_allocations=[])  # older bodies
    assert shopify.map_order(body).lines[0].discount.amount == Decimal("4.34")


def test_custom_items_become_the_configured_non_stock_item() -> None:
    body = copy.deepcopy(FIXTURE)
    body["line_items"][2].update(sku="", variant_id=None, product_id=None, name="Engraving",
                                 title="Engraving")
    line = shopify.map_order(body).lines[2]
    assert (line.sku, line.title, line.line_id) == ("MARKETPLACE-CUSTOM-ITEM", "Engraving", LINES[2])
    assert shopify.make_mapper("SVC-CUSTOM")(body).lines[2].sku == "SVC-CUSTOM"
    with pytest.raises(MappingError, match="RETAIL_SYNC_SHOPIFY_CUSTOM_ITEM_CODE"):
        shopify.make_mapper(None)(body)


def edited_body(**line_changes):
    """The fixture as an orders/updated after an edit: ``line_changes`` index -> current_quantity."""
    body = copy.deepcopy(FIXTURE)
    for index, current in line_changes.items():
        body["line_items"][int(index[1:])]["current_quantity"] = current
    body["updated_at"] = (T0 + timedelta(minutes=10)).isoformat()
    return body


def shopify_event(body, delivery):
    order = shopify.map_order(body)
    return OrderReceived(order_key=order.order_key, order=order, delivery_id=delivery, received_at=T0)


def test_current_quantity_and_cancel_refunds_in_the_body_are_read_returns_are_not_edits() -> None:
    assert [ln.line_id for ln in shopify.map_order(edited_body(l1=0)).lines] == [LINES[0], LINES[2]]
    body = copy.deepcopy(FIXTURE)
    body["refunds"] = [{"id": 1, "refund_line_items": [
        {"line_item_id": int(LINES[1]), "quantity": 1, "restock_type": "cancel"},
        {"line_item_id": int(LINES[2]), "quantity": 1, "restock_type": "return"}]}]
    assert [ln.line_id for ln in shopify.map_order(body).lines] == [LINES[0], LINES[2]]
    body = edited_body(l2=0)
    body["refunds"] = [{"id": 2, "refund_line_items": [
        {"line_item_id": int(LINES[2]), "quantity": 1, "restock_type": "return"}]}]
    assert len(shopify.map_order(body).lines) == 3  # shipped and returned: still ordered
    cancelled = edited_body(l0=0, l1=0, l2=0)
    cancelled["cancelled_at"] = T0.isoformat()
    assert len(shopify.map_order(cancelled).lines) == 3  # a cancellation keeps the lines


def test_an_edit_before_the_erp_post_is_applied_and_its_stock_released() -> None:
    state = apply(None, shopify_event(FIXTURE, "d1"), T0).state  # waiting for stock
    first = StockAnswered(order_key=state.order_key, sku=state.order.lines[1].sku, tracked=True,
                          at=T0, lines=[LineAllocation(line_id=LINES[1], requested=1, reserved=1)])
    state = apply(state, first, T0).state
    out = apply(state, shopify_event(edited_body(l1=0), "d2"), T0, "cancel", "apply")
    assert out.problem is None and [ln.line_id for ln in out.state.order.lines] == [LINES[0], LINES[2]]
    assert [(c.sku, c.line_ids) for c in out.stock_commands if isinstance(c, ReleaseStock)] == [
        (state.order.lines[1].sku, [LINES[1]])]
    assert out.state.timeline[-1].event == "order_edited"
    state, sent, problems = run([], out.state)
    for command in out.stock_commands:
        state, more, found = run(answers(command), state)
        sent, problems = sent + more, problems + found
    assert state.status is OrderStatus.ERP_CONFIRMED and not problems
    [post] = [c for c in sent if isinstance(c, ErpPostRequest)]
    assert [ln.line_id for ln in post.order.lines] == [LINES[0], LINES[2]]


def test_an_edit_after_the_erp_post_is_an_exception_for_a_human_once() -> None:
    state, _, _ = run([shopify_event(FIXTURE, "d1")])
    assert state.status is OrderStatus.ERP_CONFIRMED
    after, sent, problems = run([shopify_event(edited_body(l1=0), "d2")], state)
    assert len(problems) == 1 and "SAL-ORD-1" in problems[0] and "removed" in problems[0]
    assert after.timeline[-1].event == "order_edit_not_applied"
    assert [ln.line_id for ln in after.order.lines] == LINES  # what the ERP has
    assert not [c for c in sent if not isinstance(c, ReserveStock | ReleaseStock)]
    _, _, problems = run([shopify_event(edited_body(l1=0), "d3")], after)
    assert problems == []


def test_policy_exception_never_applies_an_edit() -> None:
    state = apply(None, shopify_event(FIXTURE, "d1"), T0).state
    out = apply(state, shopify_event(edited_body(l1=0), "d2"), T0, "cancel", "exception")
    assert out.problem and "'exception'" in out.problem and len(out.state.order.lines) == 3


def test_our_own_partial_cancellation_seen_back_is_not_an_edit() -> None:
    state = apply(None, shopify_event(FIXTURE, "d1"), T0).state
    for line in state.order.lines:
        held = 0 if line.line_id == LINES[1] else line.quantity
        state = apply(state, StockAnswered(
            order_key=state.order_key, sku=line.sku, tracked=True, at=T0,
            lines=[LineAllocation(line_id=line.line_id, requested=line.quantity, reserved=held)]),
            T0, "partial").state
    assert state.stock_decision == "partial"
    out = apply(state, shopify_event(edited_body(l1=0), "d2"), T0, "partial", "apply")
    assert out.problem is None
