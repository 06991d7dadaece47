"""Admin actions at the door (issue 13): the validation rules of cancel and returns, the audit
record filter and the reconciliation jobs' one-at-a-time-per-channel rule, without a broker."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from decimal import Decimal

from retail_sync import admin_actions, recon_jobs
from retail_sync.audit import AuditRecord, select
from retail_sync.streams.models import OrderStatus
from retail_sync.streams.rules import aftersale
from tests.unit.test_aftersale import LINES, T0, received, refund, run, shipment


def test_lines_must_be_whole_numbers_in_an_object() -> None:
    assert admin_actions.parse_lines({"1": 2, "2": "3"}) == {"1": 2, "2": 3}
    assert admin_actions.parse_lines({"1": -5}) == {"1": -5}  # the order's rule refuses it (422)
    for bad in ({}, [], None, {"1": 1.5}, {"1": True}, {"1": "two"}, {"1": None}):
        assert isinstance(admin_actions.parse_lines(bad), str), bad


def test_amount_must_be_a_finite_decimal() -> None:
    assert admin_actions.parse_amount("12.50") == Decimal("12.50")
    assert admin_actions.parse_amount(3) == Decimal(3)
    for bad in ("NaN", "Infinity", "abc", True, None, [1]):
        assert isinstance(admin_actions.parse_amount(bad), str), bad


def test_the_door_asks_the_order_agents_rule() -> None:
    """What the door refuses (422) is what the order agent would refuse."""
    state, _, _ = run([received(), shipment("S1", LINES[:2]), refund("R1", LINES[:1])])
    paid = aftersale.paid_amount(state)
    why = aftersale.return_refusal
    assert "at least 1" in why(state, {LINES[1]: -5}, Decimal(1))
    assert "at least 1" in why(state, {LINES[1]: 0}, Decimal(1))
    assert "not lines of" in why(state, {"404": 1}, Decimal(1))
    assert "1 returnable" in why(state, {LINES[1]: 2}, Decimal(1))  # shipped 1
    assert "0 returnable" in why(state, {LINES[0]: 1}, Decimal(1))  # shipped 1, refunded 1
    assert "not shipped" in why(state, {LINES[2]: 1}, Decimal(1))
    assert "0 or more" in why(state, {LINES[1]: 1}, Decimal("-0.01"))
    left = paid - Decimal("10.00")  # R1 refunded 10.00
    assert "more than was paid" in why(state, {LINES[1]: 1}, left + Decimal("0.01"))
    assert why(state, {LINES[1]: 1}, left) is None
    assert why(state, {LINES[1]: 1}, Decimal(0)) is None


def test_cancel_is_refused_once_shipped_cancelled_or_cancelling() -> None:
    fresh, _, _ = run([received()])
    assert fresh.status is OrderStatus.ERP_CONFIRMED
    assert admin_actions.cancel_refusal(fresh) is None
    shipped, _, _ = run([received(), shipment("S1", LINES)])
    assert "too late to cancel" in admin_actions.cancel_refusal(shipped)
    for status in (OrderStatus.CANCELLED, OrderStatus.CANCEL_PENDING):
        why = admin_actions.cancel_refusal(fresh.model_copy(update={"status": status}))
        assert why and ("cancelled already" in why or "on its way" in why)


def test_audit_records_filtered_newest_first() -> None:
    def rec(n, target, actor):
        return AuditRecord(request_id=f"r{n}", at=T0 + timedelta(minutes=n), actor=actor,
                           action="cancel", target=target, outcome="accepted", status=202)
    records = [rec(1, "a", "alice"), rec(2, "b", "bob"), rec(3, "a", "bob"), rec(4, "a", "alice")]
    assert [r.request_id for r in select(records, target="a")] == ["r4", "r3", "r1"]
    assert [r.request_id for r in select(records, actor="bob")] == ["r3", "r2"]
    assert [r.request_id for r in select(records, since=T0 + timedelta(minutes=3))] == ["r4", "r3"]
    assert [r.request_id for r in select(records, limit=1)] == ["r4"]


async def test_one_job_per_channel_and_the_last_results_kept() -> None:
    gate = asyncio.Event()
    finished: list[str] = []

    async def reconcile(channels, days):
        await gate.wait()
        if "walmart" in channels:
            raise RuntimeError("walmart is down")
        return {"ok": True, "mismatches": [], "channels": {c: {} for c in channels}}

    async def on_finished(job):
        finished.append(job.job_id)

    jobs = recon_jobs.Jobs(reconcile, kept=2, on_finished=on_finished)
    first = jobs.start(["amazon", "shopify"], 7, "ops", "rq1")
    assert jobs.busy(["shopify"]) is first and jobs.busy(["walmart"]) is None
    second = jobs.start(["walmart"], 1, "ops", "rq2")
    assert [j.status for j in jobs.all()] == ["running", "running"]
    gate.set()
    await asyncio.sleep(0.05)
    assert jobs.get(first.job_id).status == "done" and jobs.get(first.job_id).result["ok"]
    assert jobs.get(second.job_id).status == "failed" and "walmart is down" in second.error
    assert jobs.busy(["shopify", "walmart"]) is None and sorted(finished) == sorted(
        [first.job_id, second.job_id])
    third = jobs.start(["shopify"], 7, "ops", "rq3")
    await asyncio.sleep(0.05)
    assert third.status == "done"
    assert [j.job_id for j in jobs.finished] == [third.job_id, second.job_id]  # kept: 2
    assert jobs.get(first.job_id) is None
    assert first.as_json(with_result=False)["mismatches"] == 0
