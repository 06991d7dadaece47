"""Replays of failed ERP posts and warehouse releases go through the order agent (issue 11):
``RetryErpPost`` / ``RetryWmsRelease`` are answered from the order's CURRENT state, never from
the command kept in the exception record (which may predate an edit or a cancellation)."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta

from retail_sync.connectors.erpnext.client import ErpNextConnector
from retail_sync.connectors.shopify import mapper as shopify
from retail_sync.simulators.erpnext.simulator import ErpSimConfig, run_erp_simulator
from retail_sync.streams.commands import ErpPostRequest, ReleaseStock, RetryErpPost, RetryWmsRelease
from retail_sync.streams.events import (
    CancelRequested,
    ErpOrderFailed,
    ErpOrderPosted,
    FulfilmentReleased,
    LineAllocation,
    OrderReceived,
    StockAnswered,
)
from retail_sync.streams.models import OrderStatus
from retail_sync.streams.rules.lifecycle import apply, erp_retry_refusal, wms_retry_refusal
from retail_sync.streams.state import OrderState
from tests.fixture_orders import shopify_order

FIXTURE = shopify_order()
T0 = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
KEY = "shopify:450789469"


def received(body: dict, delivery: str) -> OrderReceived:
    order = shopify.map_order(body)
    return OrderReceived(order_key=order.order_key, order=order, delivery_id=delivery,
                         received_at=T0)


def edited(line_index: int, current_quantity: int) -> dict:
    body = copy.deepcopy(FIXTURE)
    body["line_items"][line_index]["current_quantity"] = current_quantity
    body["updated_at"] = (T0 + timedelta(minutes=10)).isoformat()
    return body


def failed_order() -> tuple[OrderState, ErpPostRequest]:
    """Every line reserved, posted, refused by the ERP: erp_failed, and the request that the
    erp_permanent exception record keeps."""
    state = apply(None, received(FIXTURE, "d1"), T0).state
    request = None
    for line in state.order.lines:
        out = apply(state, StockAnswered(
            order_key=KEY, sku=line.sku, tracked=True, at=T0,
            lines=[LineAllocation(line_id=line.line_id, requested=line.quantity,
                                  reserved=line.quantity)]), T0)
        state, request = out.state, (out.erp_requests or [request])[0]
    assert state.status is OrderStatus.ERP_PENDING and request is not None
    state = apply(state, ErpOrderFailed(order_key=KEY, reason="417 no customer", failed_at=T0,
                                        attempts=1), T0).state
    assert state.status is OrderStatus.ERP_FAILED
    return state, request


def retry(exception_id: str = "exc-1") -> RetryErpPost:
    return RetryErpPost(order_key=KEY, exception_id=exception_id, requested_by="ops",
                        at=T0 + timedelta(minutes=20))


def test_a_replay_after_an_edit_posts_the_edited_lines_not_the_kept_request() -> None:
    state, kept = failed_order()
    assert len(kept.order.lines) == 3
    removed = state.order.lines[1]
    out = apply(state, received(edited(1, 0), "d2"), T0)  # the merchant removes line 2
    assert [c.line_ids for c in out.stock_commands if isinstance(c, ReleaseStock)] == [
        [removed.line_id]]
    state = out.state
    assert state.status is OrderStatus.ERP_FAILED and len(state.order.lines) == 2

    out = apply(state, retry(), T0)
    assert out.problem is None and out.state.status is OrderStatus.ERP_PENDING
    [request] = out.erp_requests
    assert [ln.line_id for ln in request.order.lines] == [
        ln.line_id for ln in state.order.lines]
    assert removed.line_id not in {ln.line_id for ln in request.order.lines}
    assert request.order == state.order != kept.order
    entry = out.state.timeline[-1]
    assert entry.event == "erp_retry_requested"
    assert "exc-1" in entry.detail and "ops" in entry.detail and removed.sku not in entry.detail
    # the ERP confirms: the order goes on as usual
    done = apply(out.state, ErpOrderPosted(order_key=KEY, erp_sales_order="SO-1", created=True,
                                           posted_at=T0, attempts=1), T0)
    assert done.state.status is OrderStatus.ERP_CONFIRMED and done.wms_commands


def test_a_replay_after_a_cancellation_is_skipped_with_the_reason_on_the_timeline() -> None:
    state, _ = failed_order()
    state = apply(state, CancelRequested(order_key=KEY, by="operator", reason="customer called",
                                         at=T0), T0).state
    assert state.status is OrderStatus.CANCELLED
    why = erp_retry_refusal(state)
    assert why is not None and "cancelled" in why and "customer called" in why
    out = apply(state, retry(), T0)
    assert out.erp_requests == [] and out.problem is None
    assert out.state.status is OrderStatus.CANCELLED
    entry = out.state.timeline[-1]
    assert entry.event == "erp_retry_skipped" and why in entry.detail and "exc-1" in entry.detail
    again = apply(out.state, retry(), T0)  # the same replay redelivered: noted once
    assert not again.changed and again.erp_requests == []


def test_a_replay_of_an_order_confirmed_meanwhile_is_skipped() -> None:
    state, _ = failed_order()
    state = apply(state, retry("a"), T0).state
    state = apply(state, ErpOrderPosted(order_key=KEY, erp_sales_order="SO-9", created=True,
                                        posted_at=T0, attempts=1), T0).state
    out = apply(state, retry("b"), T0)
    assert out.erp_requests == [] and "SO-9" in out.state.timeline[-1].detail


def test_a_replay_while_still_waiting_for_stock_is_skipped() -> None:
    state = apply(None, received(FIXTURE, "d1"), T0).state
    out = apply(state, retry(), T0)
    assert out.erp_requests == [] and out.state.status is OrderStatus.STOCK_PENDING
    assert "stock" in out.state.timeline[-1].detail


def test_a_replay_of_an_unknown_order_is_a_conflict() -> None:
    out = apply(None, retry(), T0)
    assert out.state is None and out.problem and "no state" in out.problem


async def test_two_replays_are_one_sales_order_in_the_erp() -> None:
    """Replayed twice (two operators, or a replay redelivered): the second finds the order
    pending and asks again; the ERP connector's lookup by the order key makes it one order."""
    state, _ = failed_order()
    first = apply(state, retry("x"), T0)
    second = apply(first.state, retry("x"), T0)
    assert not second.changed and len(second.erp_requests) == 1  # asked again
    sim = await run_erp_simulator("127.0.0.1", 0, ErpSimConfig(seed=5))
    assert sim.base_url
    erp = ErpNextConnector(sim.base_url, "demo-key", "demo-secret", timeout_s=5)
    try:
        results = [await erp.create_sales_order(r.order_key, r.order)
                   for r in [*first.erp_requests, *second.erp_requests]]
    finally:
        await erp.close()
        await sim.stop()
    assert [r.created for r in results] == [True, False]
    assert results[0].erp_sales_order == results[1].erp_sales_order
    assert [s.doc["po_no"] for s in sim.orders.values()] == [KEY]
    assert sim.stats()["orders_created"] == 1


def confirmed_order() -> OrderState:
    state, _ = failed_order()
    state = apply(state, retry(), T0).state
    return apply(state, ErpOrderPosted(order_key=KEY, erp_sales_order="SO-1", created=True,
                                       posted_at=T0, attempts=1), T0).state


def retry_release(reference: str | None = None) -> RetryWmsRelease:
    return RetryWmsRelease(order_key=KEY, exception_id="w-1", reference=reference,
                           requested_by="ops", at=T0 + timedelta(minutes=30))


def test_a_warehouse_release_replay_is_built_from_the_current_state() -> None:
    state = confirmed_order()
    out = apply(state, retry_release(), T0)
    [release] = out.wms_commands
    assert release.erp_sales_order == "SO-1" and len(release.lines) == 3
    assert out.state.timeline[-1].event == "wms_retry_requested"
    # released meanwhile: not again
    state = apply(out.state, FulfilmentReleased(order_key=KEY, wms_reference="F-1", at=T0), T0).state
    out = apply(state, retry_release(), T0)
    assert out.wms_commands == [] and "F-1" in out.state.timeline[-1].detail


def test_a_warehouse_release_replay_after_a_cancellation_is_skipped() -> None:
    state = confirmed_order()
    state = apply(state, CancelRequested(order_key=KEY, by="operator", reason="fraud",
                                         at=T0), T0).state
    assert state.status is OrderStatus.CANCEL_PENDING
    why = wms_retry_refusal(state)
    assert why is not None and "fraud" in why
    out = apply(state, retry_release(), T0)
    assert out.wms_commands == [] and out.state.timeline[-1].event == "wms_retry_skipped"
    assert wms_retry_refusal(state, f"{KEY}#bo9") is not None
