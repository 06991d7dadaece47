"""Refunds are bounded in the order state machine itself (issue 13): whatever sequence of
shipments, returns (with any lines, units and amounts, negative and oversized included) and
cancellations arrives, an order never holds negative refunded units, more refunded units than
shipped, nor a refunded amount above what was paid; and a refused return is on the timeline."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from retail_sync.streams.events import CancelRequested, ReturnRequested, ShipmentReported
from retail_sync.streams.models import RefundRecord, ShipmentRecord
from retail_sync.streams.rules import aftersale
from retail_sync.streams.rules.lifecycle import apply
from retail_sync.streams.state import OrderState
from tests.unit.test_aftersale import KEY, LINES, T0, World, commands, received, refund, run, shipment

UNKNOWN_LINE = "999"


def deliver(state: OrderState | None, event, world: World, at) -> tuple[OrderState | None, list]:
    """Apply ``event`` and every answer the other systems give, in order; (state, problems)."""
    queue, problems = [event], []
    while queue:
        out = apply(state, queue.pop(0), at)
        if out.problem:
            problems.append(out.problem)
        if out.state is not None:
            state = out.state
        for command in commands(out):
            queue.extend(world.answer(command))
    return state, problems


def confirmed() -> tuple[OrderState, World]:
    world = World()
    state, problems = deliver(None, received(), world, T0)
    assert state is not None and not problems and state.correlation.erp_sales_order
    return state, world


def assert_bounded(state: OrderState) -> None:
    shipped = aftersale.shipped_units(state)
    for refund_id, record in state.refunds.items():
        assert record.lines and all(q > 0 for q in record.lines.values()), refund_id
        assert record.amount >= 0, refund_id
    for line_id, units in aftersale.refunded_units(state).items():
        assert 0 < units <= shipped.get(line_id, 0), (line_id, units, shipped)
    assert aftersale.refunded_amount(state) <= aftersale.paid_amount(state)


units = st.integers(min_value=-5, max_value=6)
amounts = st.one_of(
    st.decimals(min_value=-1000, max_value=100_000, places=2, allow_nan=False,
                allow_infinity=False),
    st.sampled_from([Decimal(0), Decimal("0.01"), Decimal("-0.01")]))
line_ids = st.sampled_from([*LINES, UNKNOWN_LINE])
ship_op = st.tuples(st.just("ship"), st.dictionaries(st.sampled_from(LINES),
                                                     st.integers(1, 3), min_size=1))
return_op = st.tuples(st.just("return"), st.dictionaries(line_ids, units, max_size=4), amounts,
                      st.booleans())
cancel_op = st.tuples(st.just("cancel"))
operations = st.lists(st.one_of(ship_op, return_op, cancel_op), max_size=14)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(operations)
def test_no_sequence_of_events_refunds_what_was_not_shipped_or_paid(ops) -> None:
    state, world = confirmed()
    for n, op in enumerate(ops):
        at = T0 + timedelta(minutes=n + 1)
        if op[0] == "ship":
            event = ShipmentReported(order_key=KEY, at=at, shipment=ShipmentRecord(
                shipment_id=f"S{n}", lines=op[1], carrier="UPS", tracking_number=f"1Z{n}",
                shipped_at=at))
        elif op[0] == "cancel":
            event = CancelRequested(order_key=KEY, by="operator", reason="asked", at=at,
                                    actor="ops", request_id=f"rq{n}")
        else:
            _, lines, amount, restock = op
            fields = dict(refund_id=f"R{n}", lines=lines, amount=amount, reason="test",
                          restock=restock, source="erp", requested_at=at)
            try:
                record = RefundRecord(**fields)
            except ValidationError:
                # the model refuses it (no lines, units < 1, amount < 0); the state machine
                # must refuse it too when it arrives unvalidated
                assert not lines or min(lines.values()) < 1 or amount < 0
                record = RefundRecord.model_construct(**fields)
            event = ReturnRequested.model_construct(
                kind="return_requested", order_key=KEY, refund=record, actor="ops",
                request_id=f"rq{n}")
        state, _ = deliver(state, event, world, at)
        assert_bounded(state)


def test_the_model_refuses_negative_units_empty_lines_and_negative_amounts() -> None:
    ok = dict(refund_id="R", reason="x", restock=False, source="erp", requested_at=T0)
    for lines, amount in (({"1": -5}, "1"), ({"1": 0}, "1"), ({}, "1"), ({"1": 1}, "-0.01")):
        with pytest.raises(ValidationError):
            RefundRecord(lines=lines, amount=Decimal(amount), **ok)
    assert RefundRecord(lines={"1": 1}, amount=Decimal(0), **ok).amount == 0


def test_a_refused_return_is_on_the_timeline_with_who_and_the_request() -> None:
    state, world = confirmed()
    state, _ = deliver(state, shipment("S1", LINES[:1]).model_copy(), world, T0)
    record = RefundRecord(refund_id="R9", lines={LINES[1]: 1}, amount=Decimal("1"), reason="x",
                          restock=False, source="erp", requested_at=T0 + timedelta(hours=1))
    state, problems = deliver(state, ReturnRequested(order_key=KEY, refund=record, actor="alice",
                                                     request_id="rq-1"), world, T0)
    assert "R9" not in state.refunds and problems and "not shipped" in problems[0]
    entry = state.timeline[-1]
    assert entry.event == "return_refused" and "alice" in entry.detail and "rq-1" in entry.detail


def test_a_refund_above_what_was_paid_is_refused() -> None:
    state, world = confirmed()
    state, _ = deliver(state, shipment("S1", LINES), world, T0)
    paid = aftersale.paid_amount(state)
    first = RefundRecord(refund_id="R1", lines={LINES[0]: 1}, amount=paid - 1, reason="x",
                         restock=False, source="erp", requested_at=T0)
    state, problems = deliver(state, ReturnRequested(order_key=KEY, refund=first), world, T0)
    assert "R1" in state.refunds and not problems
    second = first.model_copy(update={"refund_id": "R2", "lines": {LINES[1]: 1},
                                      "amount": Decimal("1.01")})
    state, problems = deliver(state, ReturnRequested(order_key=KEY, refund=second), world, T0)
    assert "R2" not in state.refunds and "more than was paid" in problems[0]
    assert state.timeline[-1].event == "return_refused"


def test_a_cancellation_refused_after_shipment_is_on_the_timeline() -> None:
    state, _, problems = run([received(), shipment("S1", LINES), CancelRequested(
        order_key=KEY, by="operator", reason="changed mind", at=T0 + timedelta(hours=2),
        actor="alice", request_id="rq-7")])
    assert problems and "refused" in problems[0]
    refusal = [t for t in state.timeline if t.event == "cancel_refused"]
    assert len(refusal) == 1 and "alice" in refusal[0].detail and "rq-7" in refusal[0].detail
    assert "shipped" in refusal[0].detail


def test_return_refusal_reasons() -> None:
    state, _, _ = run([received(), shipment("S1", LINES[:1]), refund("R1", LINES[:1])])
    why = aftersale.return_refusal
    assert "at least 1" in why(state, {LINES[0]: -5}, Decimal(1))
    assert "not lines of" in why(state, {"nope": 1}, Decimal(1))
    assert "refunded already" in why(state, {LINES[0]: 1}, Decimal(1))  # shipped 1, refunded 1
    assert "0 or more" in why(state, {}, Decimal(1)) or "at least one line" in why(state, {},
                                                                                    Decimal(1))
