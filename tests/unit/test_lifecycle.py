import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

from faust.serializers import codecs

from agents.lifecycle import apply
from streams import codecs as _registered  # noqa: F401
from streams.mappers.shopify import map_order
from streams.models import (
    ErpOrderFailed,
    ErpOrderPosted,
    OrderReceived,
    OrderState,
    OrderStatus,
)

FIXTURE = json.loads((Path(__file__).parent.parent / "fixtures" / "shopify_order.json").read_text())
T0 = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


def received(delivery="d1", at=T0, **changes):
    order = map_order({**FIXTURE, **changes})
    return OrderReceived(order_key=order.order_key, order=order, delivery_id=delivery,
                         received_at=at)


def posted(name="SAL-ORD-2026-00001", at=T0 + timedelta(seconds=1)):
    return ErpOrderPosted(order_key="shopify:450789469", erp_sales_order=name, created=True,
                          posted_at=at, attempts=1)


def test_new_order_is_pending_and_requests_the_erp():
    out = apply(None, received(), T0)
    assert out.state.status is OrderStatus.ERP_PENDING
    assert out.state.correlation.marketplace_order_id == "450789469"
    assert [r.order_key for r in out.erp_requests] == ["shopify:450789469"]


def test_redelivery_records_the_id_and_reissues_while_pending():
    state = apply(None, received(), T0).state
    out = apply(state, received(delivery="d2"), T0)
    assert out.state.correlation.delivery_ids == ["d1", "d2"]
    assert len(out.erp_requests) == 1  # the ERP post is idempotent; this closes a crash gap


def test_confirmation_sets_erp_number_once_and_stops_requests():
    state = apply(None, received(), T0).state
    confirmed = apply(state, posted(), T0)
    assert confirmed.first_confirmation
    assert confirmed.state.status is OrderStatus.ERP_CONFIRMED
    assert confirmed.state.correlation.erp_sales_order == "SAL-ORD-2026-00001"
    replay = apply(confirmed.state, posted(), T0)
    assert not replay.changed and replay.state == confirmed.state
    late = apply(confirmed.state, received(delivery="d3"), T0)
    assert late.erp_requests == []


def test_late_failure_never_undoes_a_confirmation():
    state = apply(apply(None, received(), T0).state, posted(), T0).state
    failed = ErpOrderFailed(order_key=state.order_key, reason="x", failed_at=T0, attempts=3)
    assert apply(state, failed, T0).state.status is OrderStatus.ERP_CONFIRMED


def test_failure_while_pending_is_recorded():
    state = apply(None, received(), T0).state
    failed = ErpOrderFailed(order_key=state.order_key, reason="417 no customer",
                            failed_at=T0, attempts=1)
    out = apply(state, failed, T0)
    assert out.state.status is OrderStatus.ERP_FAILED
    assert out.state.timeline[-1].detail == "417 no customer"


def test_erp_answer_for_unknown_order_is_ignored():
    assert apply(None, posted(), T0).state is None


def test_replaying_every_prefix_changes_nothing():
    events = [received(), received(delivery="d2"), posted(), received(delivery="d2"), posted()]
    state = None
    for event in events:
        state = apply(state, event, T0).state
    again = state
    for event in events:
        again = apply(again, event, T0).state
    assert again == state


def test_state_round_trips_through_its_faust_codec():
    state = apply(apply(None, received(), T0).state, posted(), T0).state
    data = codecs.dumps("rs.order_state", state)
    assert codecs.loads("rs.order_state", data) == state
    assert isinstance(codecs.loads("rs.order_state", data), OrderState)


def test_a_second_erp_sales_order_for_one_order_is_reported_not_applied():
    state = apply(apply(None, received(), T0).state, posted(), T0).state
    out = apply(state, posted(name="SAL-ORD-2026-00002"), T0)
    assert out.state == state and not out.changed
    assert "SAL-ORD-2026-00002" in out.problem and "SAL-ORD-2026-00001" in out.problem


def test_erp_answer_for_unknown_order_is_reported():
    assert "no state" in apply(None, posted(), T0).problem
