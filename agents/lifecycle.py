"""The order lifecycle as pure functions: (state, event) -> (new state, commands to send).

Kept free of Faust so it can be tested exhaustively. Replaying an event changes nothing
(idempotent), except that an order still waiting for the ERP re-issues its ERP request: the ERP
post is idempotent on order_key, and this closes the gap where a worker died after writing the
state but before the request reached Kafka.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from streams.models import (
    Correlation,
    ErpOrderFailed,
    ErpOrderPosted,
    ErpPostRequest,
    OrderEvent,
    OrderReceived,
    OrderState,
    OrderStatus,
    TimelineEntry,
)

MAX_DELIVERY_IDS = 20


@dataclass
class Outcome:
    state: OrderState | None
    erp_requests: list[ErpPostRequest] = field(default_factory=list)
    changed: bool = False
    first_confirmation: bool = False
    problem: str | None = None  # drift to report as a sync exception; the state is kept as is


def apply(state: OrderState | None, event: OrderEvent, now: datetime) -> Outcome:
    if isinstance(event, OrderReceived):
        return _on_received(state, event, now)
    if state is None:  # an ERP answer for an order we do not know: nothing to attach it to
        return Outcome(state=None, problem=f"{event.kind} for {event.order_key}, an order this "
                                           "engine has no state for")
    if isinstance(event, ErpOrderPosted):
        return _on_erp_posted(state, event)
    if isinstance(event, ErpOrderFailed):
        return _on_erp_failed(state, event)
    raise TypeError(f"unknown order event {type(event).__name__}")


def _request(state: OrderState, now: datetime) -> ErpPostRequest:
    return ErpPostRequest(
        order_key=state.order_key, order=state.order, received_at=state.received_at,
        requested_at=now,
    )


def _on_received(state: OrderState | None, event: OrderReceived, now: datetime) -> Outcome:
    if state is None:
        order = event.order
        new = OrderState(
            order_key=event.order_key,
            channel=order.channel,
            status=OrderStatus.ERP_PENDING,
            order=order,
            correlation=Correlation(
                marketplace_order_id=order.marketplace_order_id,
                marketplace_order_name=order.marketplace_order_name,
                delivery_ids=[event.delivery_id],
            ),
            timeline=[
                TimelineEntry(event="order_received", system=order.channel, at=event.received_at),
                TimelineEntry(event="erp_requested", system="retail-sync", at=now),
            ],
            received_at=event.received_at,
        )
        return Outcome(state=new, erp_requests=[_request(new, now)], changed=True)
    return _on_redelivery(state, event, now)


def _on_redelivery(state: OrderState, event: OrderReceived, now: datetime) -> Outcome:
    updates: dict[str, object] = {}
    if event.delivery_id not in state.correlation.delivery_ids:
        ids = [*state.correlation.delivery_ids, event.delivery_id][-MAX_DELIVERY_IDS:]
        updates["correlation"] = state.correlation.model_copy(update={"delivery_ids": ids})
        updates["timeline"] = [
            *state.timeline,
            TimelineEntry(event="order_redelivered", system=state.channel, at=event.received_at,
                          detail=event.delivery_id),
        ]
    if event.order.updated_at > state.order.updated_at:
        updates["order"] = event.order
    new = state.model_copy(update=updates) if updates else state
    requests = [_request(new, now)] if new.status is OrderStatus.ERP_PENDING else []
    return Outcome(state=new, erp_requests=requests, changed=bool(updates))


def _on_erp_posted(state: OrderState, event: ErpOrderPosted) -> Outcome:
    known = state.correlation.erp_sales_order
    if known == event.erp_sales_order:
        return Outcome(state=state)  # replayed confirmation
    if known is not None:  # the ERP holds two sales orders for one marketplace order
        return Outcome(state=state, problem=f"ERP answered sales order {event.erp_sales_order} "
                                            f"for {state.order_key}, already confirmed as {known}")
    first = state.erp_confirmed_at is None
    new = state.model_copy(update={
        "status": OrderStatus.ERP_CONFIRMED,
        "correlation": state.correlation.model_copy(
            update={"erp_sales_order": event.erp_sales_order}),
        "erp_confirmed_at": state.erp_confirmed_at or event.posted_at,
        "timeline": [
            *state.timeline,
            TimelineEntry(event="erp_sales_order_created", system="erp", at=event.posted_at,
                          detail=event.erp_sales_order),
        ],
    })
    return Outcome(state=new, changed=True, first_confirmation=first)


def _on_erp_failed(state: OrderState, event: ErpOrderFailed) -> Outcome:
    if state.status is not OrderStatus.ERP_PENDING:
        return Outcome(state=state)  # a late failure never undoes a confirmation
    new = state.model_copy(update={
        "status": OrderStatus.ERP_FAILED,
        "timeline": [
            *state.timeline,
            TimelineEntry(event="erp_failed", system="erp", at=event.failed_at,
                          detail=event.reason[:500]),
        ],
    })
    return Outcome(state=new, changed=True)
