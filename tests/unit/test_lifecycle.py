from datetime import UTC, datetime, timedelta

from faust.serializers import codecs

from retail_sync.connectors.shopify.mapper import map_order
from retail_sync.streams import codecs as _registered  # noqa: F401
from retail_sync.streams.events import (
    ErpOrderFailed,
    ErpOrderPosted,
    LineAllocation,
    OrderReceived,
    StockAnswered,
)
from retail_sync.streams.models import OrderStatus
from retail_sync.streams.rules.lifecycle import apply
from retail_sync.streams.state import OrderState
from tests.fixture_orders import shopify_order

FIXTURE = shopify_order()  # the sample with totals that add up (tests/fixture_orders.py)
T0 = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


def received(delivery="d1", at=T0, **changes):
    order = map_order({**FIXTURE, **changes})
    return OrderReceived(order_key=order.order_key, order=order, delivery_id=delivery,
                         received_at=at)


def answers(state, reserved=None, tracked=True):
    """The stock agent's answer per SKU; ``reserved`` maps sku -> units held (default: all)."""
    out = []
    for line in state.order.lines:
        held = line.quantity if reserved is None else reserved.get(line.sku, line.quantity)
        out.append(StockAnswered(order_key=state.order_key, sku=line.sku, tracked=tracked, at=T0,
                                 lines=[LineAllocation(line_id=line.line_id,
                                                       requested=line.quantity, reserved=held)]))
    return out


def accepted(delivery="d1", **changes):
    """A new order whose every line was reserved: it is waiting for the ERP."""
    state = apply(None, received(delivery, **changes), T0).state
    for answer in answers(state):
        state = apply(state, answer, T0).state
    return state


def posted(name="SAL-ORD-2026-00001", at=T0 + timedelta(seconds=1)):
    return ErpOrderPosted(order_key="shopify:450789469", erp_sales_order=name, created=True,
                          posted_at=at, attempts=1)


def test_new_order_reserves_every_sku_then_requests_the_erp():
    out = apply(None, received(), T0)
    assert out.state.status is OrderStatus.STOCK_PENDING
    assert out.state.correlation.marketplace_order_id == "450789469"
    assert sorted(c.sku for c in out.stock_commands) == ["IPOD2008BLACK", "IPOD2008GREEN",
                                                         "IPOD2008RED"]
    assert out.erp_requests == []
    state = out.state
    for answer in answers(out.state):
        step = apply(state, answer, T0)
        state = step.state
    assert state.status is OrderStatus.ERP_PENDING and state.stock_decision == "accepted"
    assert [r.order_key for r in step.erp_requests] == ["shopify:450789469"]
    assert step.erp_requests[0].order == state.order and step.erp_requests[0].backorders == {}


def test_redelivery_records_the_id_and_reissues_while_pending():
    state = accepted()
    out = apply(state, received(delivery="d2"), T0)
    assert out.state.correlation.delivery_ids == ["d1", "d2"]
    assert len(out.erp_requests) == 1  # the ERP post is idempotent; this closes a crash gap


def test_confirmation_sets_erp_number_once_and_stops_requests():
    state = accepted()
    confirmed = apply(state, posted(), T0)
    assert confirmed.first_confirmation
    assert confirmed.state.status is OrderStatus.ERP_CONFIRMED
    assert confirmed.state.correlation.erp_sales_order == "SAL-ORD-2026-00001"
    replay = apply(confirmed.state, posted(), T0)
    assert not replay.changed and replay.state == confirmed.state
    late = apply(confirmed.state, received(delivery="d3"), T0)
    assert late.erp_requests == []


def test_late_failure_never_undoes_a_confirmation():
    state = apply(accepted(), posted(), T0).state
    failed = ErpOrderFailed(order_key=state.order_key, reason="x", failed_at=T0, attempts=3)
    assert apply(state, failed, T0).state.status is OrderStatus.ERP_CONFIRMED


def test_failure_while_pending_is_recorded():
    state = accepted()
    failed = ErpOrderFailed(order_key=state.order_key, reason="417 no customer",
                            failed_at=T0, attempts=1)
    out = apply(state, failed, T0)
    assert out.state.status is OrderStatus.ERP_FAILED
    assert out.state.timeline[-1].detail == "417 no customer"


def test_erp_answer_for_unknown_order_is_ignored():
    assert apply(None, posted(), T0).state is None


def test_replaying_every_prefix_changes_nothing():
    first = apply(None, received(), T0).state
    events = [received(), *answers(first), received(delivery="d2"), posted(),
              received(delivery="d2"), posted()]
    state = None
    for event in events:
        state = apply(state, event, T0).state
    again = state
    for event in events:
        again = apply(again, event, T0).state
    assert again == state


def test_state_round_trips_through_its_faust_codec():
    state = apply(accepted(), posted(), T0).state
    data = codecs.dumps("rs.order_state", state)
    assert codecs.loads("rs.order_state", data) == state
    assert isinstance(codecs.loads("rs.order_state", data), OrderState)


def test_a_second_erp_sales_order_for_one_order_is_reported_not_applied():
    state = apply(accepted(), posted(), T0).state
    out = apply(state, posted(name="SAL-ORD-2026-00002"), T0)
    assert out.state == state and not out.changed
    assert "SAL-ORD-2026-00002" in out.problem and "SAL-ORD-2026-00001" in out.problem


def test_erp_answer_for_unknown_order_is_reported():
    assert "no state" in apply(None, posted(), T0).problem


# --- stock decisions -----------------------------------------------------------------------------


def decide(policy, reserved, tracked=True):
    state = apply(None, received(), T0).state
    outs = []
    for answer in answers(state, reserved, tracked):
        out = apply(state, answer, T0, policy)
        state = out.state
        outs.append(out)
    return outs[-1]


def test_answers_for_some_skus_keep_the_order_waiting():
    state = apply(None, received(), T0).state
    out = apply(state, answers(state)[0], T0)
    assert out.changed and out.state.status is OrderStatus.STOCK_PENDING and not out.erp_requests
    again = apply(out.state, received(delivery="d2"), T0)  # redelivery asks only the rest again
    assert sorted(c.sku for c in again.stock_commands) == ["IPOD2008BLACK", "IPOD2008RED"]


def test_short_order_under_cancel_policy_is_cancelled_released_and_cancelled_on_the_marketplace():
    out = decide("cancel", {"IPOD2008RED": 0})
    assert out.state.status is OrderStatus.CANCELLED and out.state.stock_decision == "cancelled"
    assert out.erp_requests == []
    assert sorted(c.sku for c in out.stock_commands) == ["IPOD2008BLACK", "IPOD2008GREEN",
                                                         "IPOD2008RED"]
    [cancel] = out.marketplace_commands
    assert cancel.whole_order and cancel.marketplace_order_id == "450789469"
    assert "IPOD2008RED line 518995019: 0 of 1" in out.state.timeline[-1].detail


def test_partial_policy_posts_what_was_reserved_and_cancels_the_rest():
    out = decide("partial", {"IPOD2008RED": 0})
    assert out.state.status is OrderStatus.ERP_PENDING and out.state.stock_decision == "partial"
    [request] = out.erp_requests
    assert sorted(ln.sku for ln in request.order.lines) == ["IPOD2008BLACK", "IPOD2008GREEN"]
    assert request.order.subtotal.amount == sum(ln.unit_price.amount for ln in request.order.lines)
    [cancel] = out.marketplace_commands
    assert not cancel.whole_order and [(ln.sku, ln.quantity) for ln in cancel.lines] == [
        ("IPOD2008RED", 1)]


def test_partial_policy_with_nothing_reserved_cancels():
    out = decide("partial", {"IPOD2008RED": 0, "IPOD2008BLACK": 0, "IPOD2008GREEN": 0})
    assert out.state.status is OrderStatus.CANCELLED


def test_backorder_policy_posts_everything_and_marks_the_missing_units():
    out = decide("backorder", {"IPOD2008RED": 0})
    assert out.state.stock_decision == "backorder" and out.marketplace_commands == []
    [request] = out.erp_requests
    assert len(request.order.lines) == 3 and request.backorders == {"518995019": 1}


def test_untracked_skus_are_accepted_as_they_are():
    out = decide("cancel", None, tracked=False)
    assert out.state.stock_decision == "accepted"
    confirmed = apply(out.state, posted(), T0)
    assert confirmed.stock_commands == []  # nothing reserved, nothing to commit


def test_confirmation_commits_every_tracked_sku_and_a_replay_commits_again():
    state = accepted()
    out = apply(state, posted(), T0)
    assert sorted(c.sku for c in out.stock_commands) == ["IPOD2008BLACK", "IPOD2008GREEN",
                                                         "IPOD2008RED"]
    replay = apply(out.state, posted(), T0)
    assert not replay.changed and len(replay.stock_commands) == 3


def test_a_late_stock_answer_after_the_decision_changes_nothing():
    state = accepted()
    late = answers(state, {"IPOD2008RED": 0})[1]
    out = apply(state, late, T0, "cancel")
    assert not out.changed and out.state == state


# --- a cancellation while the ERP post is in flight ---------------------------------------------


def _cancel(by="operator", reason="customer called"):
    from retail_sync.streams.events import CancelRequested

    return CancelRequested(order_key="shopify:450789469", by=by, reason=reason,
                           at=T0 + timedelta(seconds=1), actor="ops", request_id="r-1")


def test_cancel_while_posting_then_the_post_fails_ends_cancelled_and_releases_the_stock():
    """The post fails after the cancel arrived: nothing is in the ERP, so the order is cancelled
    here and now (it used to stay cancel_pending for ever, its stock held)."""
    from retail_sync.streams.commands import ErpCancelRequest, MarketplaceCancel, ReleaseStock, RetryErpPost

    state = apply(accepted(), _cancel(), T0).state
    assert state.status is OrderStatus.CANCEL_PENDING
    failed = ErpOrderFailed(order_key=state.order_key, reason="417 no customer",
                            failed_at=T0 + timedelta(seconds=2), attempts=3)
    out = apply(state, failed, T0 + timedelta(seconds=3))
    assert out.changed and out.state.status is OrderStatus.CANCELLED
    assert out.state.cancel is None and out.state.cancel_reason == "operator: customer called"
    assert out.state.correlation.erp_sales_order is None
    assert sorted(c.sku for c in out.stock_commands if isinstance(c, ReleaseStock)) == [
        "IPOD2008BLACK", "IPOD2008GREEN", "IPOD2008RED"]
    [told] = out.marketplace_commands  # an operator's cancellation: the marketplace is told
    assert isinstance(told, MarketplaceCancel) and told.whole_order
    assert out.wms_commands == []  # never released to the warehouse
    assert not any(isinstance(r, ErpCancelRequest) for r in out.erp_requests)  # nothing there
    events = [t.event for t in out.state.timeline]
    assert events[-3:] == ["erp_failed", "cancel_completed_without_erp", "cancelled"]
    assert "417 no customer" in out.state.timeline[-3].detail
    assert "not in the ERP" in out.state.timeline[-2].detail
    # a redelivered failure and a later replay of the failed post change nothing
    again = apply(out.state, failed, T0)
    assert not again.changed and again.stock_commands == [] and again.marketplace_commands == []
    replay = apply(out.state, RetryErpPost(order_key=state.order_key, exception_id="e-1",
                                           requested_by="ops", at=T0 + timedelta(minutes=5)), T0)
    assert replay.erp_requests == [] and replay.state.timeline[-1].event == "erp_retry_skipped"
    assert replay.state.status is OrderStatus.CANCELLED


def test_marketplace_cancel_while_posting_then_failure_does_not_tell_the_marketplace_back():
    state = apply(accepted(), received(delivery="d2", cancelled_at="2026-11-27T12:30:00Z"),
                  T0).state
    assert state.status is OrderStatus.CANCEL_PENDING
    out = apply(state, ErpOrderFailed(order_key=state.order_key, reason="timeout",
                                      failed_at=T0, attempts=5), T0)
    assert out.state.status is OrderStatus.CANCELLED and out.marketplace_commands == []
    assert len(out.stock_commands) == 3


def test_cancel_while_posting_then_the_post_succeeds_cancels_it_in_the_erp():
    """The mirror: the post lands after the cancel arrived; the ERP order is cancelled, the
    warehouse never gets it, and the ERP's answer completes the cancellation."""
    from retail_sync.streams.commands import ErpCancelRequest, MarketplaceCancel, ReleaseStock
    from retail_sync.streams.events import ErpOrderCancelled

    state = apply(accepted(), _cancel(), T0).state
    out = apply(state, posted(), T0)
    assert out.state.status is OrderStatus.CANCEL_PENDING and out.wms_commands == []
    [request] = out.erp_requests
    assert isinstance(request, ErpCancelRequest)
    assert request.erp_sales_order == "SAL-ORD-2026-00001"
    done = apply(out.state, ErpOrderCancelled(
        order_key=state.order_key, erp_sales_order="SAL-ORD-2026-00001",
        reason=request.reason, at=T0), T0)
    assert done.state.status is OrderStatus.CANCELLED and done.wms_commands == []
    assert len([c for c in done.stock_commands if isinstance(c, ReleaseStock)]) == 3
    assert [type(c) for c in done.marketplace_commands] == [MarketplaceCancel]


def test_a_replayed_answer_sends_the_stock_decision_again():
    """A SIGKILL between a batch's state write and its sends: the decision is kept, what it sent
    is lost, and the answer is read again. Cancelled for stock: the releases and the
    marketplace cancellation again (the SIGKILL test once lost a cancellation so); partial: the
    ERP request and the partial cancellation again; nothing changes in the state."""
    cancelled = decide("cancel", {"IPOD2008RED": 0})
    replay = apply(cancelled.state, answers(cancelled.state, {"IPOD2008RED": 0})[-1], T0, "cancel")
    assert not replay.changed and replay.state == cancelled.state
    assert sorted(c.sku for c in replay.stock_commands) == sorted(
        c.sku for c in cancelled.stock_commands)
    assert [c.whole_order for c in replay.marketplace_commands] == [True]
    assert replay.erp_requests == []

    partial = decide("partial", {"IPOD2008RED": 0})
    replay = apply(partial.state, answers(partial.state, {"IPOD2008RED": 0})[-1], T0, "partial")
    assert not replay.changed and [r.order_key for r in replay.erp_requests] == [
        "shopify:450789469"]
    [cancel] = replay.marketplace_commands
    assert not cancel.whole_order and [(ln.sku, ln.quantity) for ln in cancel.lines] == [
        ("IPOD2008RED", 1)]
