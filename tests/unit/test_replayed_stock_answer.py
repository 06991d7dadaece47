"""A stock answer replayed after the decision re-asks the ERP while its post is pending.

A worker stopped with the broker gone can keep the state that took the decision (RocksDB, or its
changelog record delivered) while the ERP request sent with it never reached the broker; the
answer's offset was not committed, so the restarted worker reads the answer again. Ignoring it
("the decision is taken") left the order in erp_pending for ever: answered 200, never in the
ERP (tests/integration/test_stop_mid_load.py, broker cut)."""

from retail_sync.streams.models import OrderStatus
from retail_sync.streams.rules.lifecycle import apply
from tests.unit.test_lifecycle import T0, accepted, answers, posted, received


def test_a_replayed_answer_reissues_the_erp_request_while_it_is_pending():
    state = accepted()
    assert state.status is OrderStatus.ERP_PENDING
    for answer in answers(state):
        out = apply(state, answer, T0)
        assert out.state == state and not out.changed
        assert [r.order_key for r in out.erp_requests] == [state.order_key]
        assert out.erp_requests[0].order == state.order
        assert out.stock_commands == [] and out.marketplace_commands == []


def test_a_replayed_answer_after_the_confirmation_asks_nothing():
    state = apply(accepted(), posted(), T0).state
    for answer in answers(state):
        out = apply(state, answer, T0)
        assert out.state == state and out.erp_requests == [] and out.stock_commands == []


def test_a_replayed_answer_after_a_cancellation_for_lack_of_stock_asks_nothing_of_the_erp():
    first = apply(None, received(), T0).state
    state = first
    for answer in answers(first, reserved={ln.sku: 0 for ln in first.order.lines}):
        state = apply(state, answer, T0).state
    assert state.status is OrderStatus.CANCELLED
    for answer in answers(first):
        assert apply(state, answer, T0).erp_requests == []
