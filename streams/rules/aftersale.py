"""After the order, as pure functions: fulfilment, shipments, cancellations, returns and refunds.

Called by ``streams.rules.lifecycle.apply``; each takes the order's state and one event and returns an
``Outcome`` (new state, commands). The rules that make the final state right whatever the arrival
order of the events:

- a status never moves back (``STATUS_RANK``): a late or duplicate webhook cannot undo a shipment;
- every fact is recorded under its own id (shipment id, refund id), so a repeat changes nothing;
- a fact that arrives before what it depends on is kept and acted on when that arrives (a
  shipment before the ERP confirmed the order is posted to the ERP on confirmation);
- an impossible transition (a cancellation after shipment, a refund of units never shipped or
  of more than was paid) is refused: the state stays, the refusal is on the order's timeline
  (``cancel_refused``, ``return_refused``, with the admin caller and request id when there is
  one) and its reason goes to the exception topic (``Outcome.problem``);
- refunds are bounded (``return_refusal``): refunded units never exceed shipped ones nor go
  below zero, the refunded amount never exceeds what was paid (property-tested).

Flows (ERP first, then the marketplace):

    ERP confirmed -> WmsRelease -> FulfilmentReleased (backordered units wait)
    BackorderReleased (goods arrived) -> WmsRelease <order_key>#bo<n> -> FulfilmentReleased
    ShipmentReported (WMS) -> ErpShipmentRequest -> ErpShipmentPosted (delivery note + invoice)
        -> MarketplaceShipment -> MarketplaceNotified(ship)
    cancellation (marketplace, operator or ERP) before shipment -> WmsCancel -> FulfilmentCancelled
        -> ErpCancelRequest -> ErpOrderCancelled -> cancelled, stock released (+ marketplace told
        when it did not ask)
    ReturnRequested -> WmsExpectReturn -> ReturnReceived (goods back) -> ErpReturnRequest
        -> ErpReturnPosted (credit note) -> MarketplaceRefund when the refund did not start there

Long module: every after-order transition of the one order state machine (fulfilment,
shipments, cancellations, returns, refunds) and their shared bounds; split, the rules that must
agree (what was shipped, refunded, released) would sit apart.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from retail_sync.streams.commands import (
    ErpCancelRequest,
    ErpReturnRequest,
    ErpShipmentRequest,
    MarketplaceCancel,
    MarketplaceRefund,
    MarketplaceShipment,
    ReleaseLineDetail,
    ReleaseStock,
    ShippingInstructions,
    WmsCancel,
    WmsExpectReturn,
    WmsRelease,
)
from retail_sync.streams.events import (
    BackorderReleased,
    CancelRequested,
    ErpOrderCancelled,
    ErpReturnPosted,
    ErpShipmentPosted,
    FulfilmentCancelled,
    FulfilmentReleased,
    MarketplaceNotified,
    OrderReceived,
    ReturnReceived,
    ReturnRequested,
    ShipmentReported,
)
from retail_sync.streams.models import (
    STATUS_RANK,
    BackorderFulfilment,
    LineUnits,
    OrderStatus,
    RefundRecord,
    ShipmentRecord,
)
from retail_sync.streams.rules.outcome import Outcome
from retail_sync.streams.state import OrderState, TimelineEntry

SHIPPED_OR_LATER = {OrderStatus.PARTIALLY_SHIPPED, OrderStatus.SHIPPED,
                    OrderStatus.PARTIALLY_REFUNDED, OrderStatus.REFUNDED}


def outcome(**kw: Any) -> Outcome:
    return Outcome(**kw)


# --- small pieces ------------------------------------------------------------------------------


def timeline(state: OrderState, *entries: TimelineEntry) -> list[TimelineEntry]:
    """``state``'s timeline with ``entries`` appended, each with its latency from the previous."""
    out = list(state.timeline)
    for entry in entries:
        previous = out[-1].at if out else None
        since = (entry.at - previous).total_seconds() if previous else None
        out.append(entry.model_copy(update={"since_previous_s": since}))
    return out


def advance(current: OrderStatus, proposed: OrderStatus) -> OrderStatus:
    """The later of two statuses: a state never moves back."""
    return proposed if STATUS_RANK[proposed] >= STATUS_RANK[current] else current


def accepted_units(state: OrderState) -> dict[str, int]:
    """Line id -> units the order holds after its stock decision (what the ERP got)."""
    units = {ln.line_id: ln.quantity for ln in state.order.lines}
    if state.stock_decision == "partial":
        units = {i: min(q, state.stock[i].reserved) if i in state.stock else q
                 for i, q in units.items()}
    return {i: q for i, q in units.items() if q > 0}


def _line_totals(records: Iterable[ShipmentRecord | RefundRecord | BackorderFulfilment]
                 ) -> dict[str, int]:
    """Line id -> units, summed over records that each carry ``lines``."""
    out: dict[str, int] = {}
    for record in records:
        for line_id, qty in record.lines.items():
            out[line_id] = out.get(line_id, 0) + qty
    return out


def shipped_units(state: OrderState) -> dict[str, int]:
    return _line_totals(state.shipments.values())


def refunded_units(state: OrderState) -> dict[str, int]:
    return _line_totals(state.refunds.values())


def _line_units(state: OrderState, units: dict[str, int]) -> list[LineUnits]:
    skus = {ln.line_id: ln.sku for ln in state.order.lines}
    return [LineUnits(line_id=i, sku=skus.get(i, "?"), quantity=q)
            for i, q in sorted(units.items()) if q > 0]


def shipping_status(state: OrderState) -> OrderStatus:
    want, done = accepted_units(state), shipped_units(state)
    complete = all(done.get(i, 0) >= q for i, q in want.items())
    return OrderStatus.SHIPPED if complete else OrderStatus.PARTIALLY_SHIPPED


def _refund_status(state: OrderState) -> OrderStatus:
    shipped, refunded = shipped_units(state), refunded_units(state)
    complete = all(refunded.get(i, 0) >= q for i, q in shipped.items())
    return OrderStatus.REFUNDED if complete else OrderStatus.PARTIALLY_REFUNDED


def refund_value(state: OrderState, units: dict[str, int]) -> Decimal:
    """What the buyer paid for ``units`` (line id -> units): each line's price less its discount
    (Shopify ``discount_allocations``, Amazon promotions, Walmart negative charges) plus its tax
    (unless inside the price), per unit; the amount of a return authorised without one, so the
    ERP credit note and the marketplace refund are at the discounted price (issue 12 item 2)."""
    lines = {ln.line_id: ln for ln in state.order.lines}
    total = Decimal(0)
    for line_id, qty in units.items():
        line = lines.get(line_id)
        if line is None or qty <= 0:
            continue
        paid = line.unit_price.amount * line.quantity - line.discount.amount
        if not state.order.taxes_included:
            paid += line.tax.amount
        total += paid * qty / line.quantity
    return total.quantize(Decimal("0.01"), ROUND_HALF_UP)


def paid_amount(state: OrderState) -> Decimal:
    """What the buyer paid for the order (its total, shipping and tax included): the ceiling of
    everything refunded on it."""
    return state.order.total.amount


def refunded_amount(state: OrderState) -> Decimal:
    return sum((r.amount for r in state.refunds.values()), Decimal(0))


def requested_by(actor: str | None, request_id: str | None) -> str:
    """``by alice, request id 3f2a...`` for an admin action's timeline entries ('' otherwise)."""
    parts = [f"by {actor}"] if actor else []
    if request_id:
        parts.append(f"request id {request_id}")
    return ", ".join(parts)


def return_refusal(state: OrderState, lines: Mapping[str, int], amount: Decimal) -> str | None:
    """Why a return of ``lines`` (line id -> units) for ``amount`` cannot be taken on ``state``,
    or None when it can: every line is the order's, each refunds at least one unit and at most
    what was shipped less what was refunded already, and the amount is between 0 and what was
    paid less what was refunded already. The order agent refuses by this rule (so no sequence of
    events makes refunded units negative or above the shipped ones, nor the refunded amount above
    what was paid); ``POST /orders/{key}/returns`` asks it at the door (422)."""
    if not lines:
        return "a return needs at least one line {line_id: units}"
    bad = {i: q for i, q in lines.items() if isinstance(q, bool) or not isinstance(q, int) or q <= 0}
    if bad:
        return (f"units must be whole numbers of at least 1 per line, not "
                f"{', '.join(f'line {i}: {q!r}' for i, q in sorted(bad.items()))}")
    ordered = [ln.line_id for ln in state.order.lines]
    unknown = sorted(set(lines) - set(ordered))
    if unknown:
        return f"lines {unknown} are not lines of {state.order_key} (its lines: {ordered})"
    shipped, refunded = shipped_units(state), refunded_units(state)
    too_many = {i: q for i, q in lines.items() if q > shipped.get(i, 0) - refunded.get(i, 0)}
    if too_many:
        return ("lines " + ", ".join(
            f"{i}: {q} unit(s) asked, {max(0, shipped.get(i, 0) - refunded.get(i, 0))} returnable "
            f"({shipped.get(i, 0)} shipped, {refunded.get(i, 0)} refunded)"
            for i, q in sorted(too_many.items()))
            + " were not shipped (or are refunded already); cancel unshipped units instead")
    if not amount.is_finite() or amount < 0:
        return f"the amount must be 0 or more, not {amount}"
    left = paid_amount(state) - refunded_amount(state)
    if amount > left:
        return (f"the amount {amount} {state.order.currency} is more than was paid less what was "
                f"refunded already: {left} (paid {paid_amount(state)}, refunded "
                f"{refunded_amount(state)})")
    return None


def release_commands(state: OrderState, now: datetime, reason: str) -> list[ReleaseStock]:
    by_sku: dict[str, list[str]] = {}
    for line_id, stock in sorted(state.stock.items()):
        if stock.tracked:
            by_sku.setdefault(stock.sku, []).append(line_id)
    return [ReleaseStock(sku=sku, order_key=state.order_key, line_ids=ids, reason=reason, at=now)
            for sku, ids in sorted(by_sku.items())]


def backordered_units(state: OrderState) -> dict[str, int]:
    """Line id -> units accepted without stock (policy backorder): they wait for goods."""
    if state.stock_decision != "backorder":
        return {}
    return {i: s.requested - s.reserved for i, s in state.stock.items()
            if s.tracked and s.reserved < s.requested}


def releasable_units(state: OrderState) -> dict[str, int]:
    """What the warehouse may pick on ERP confirmation: accepted units less backordered ones
    (those go when goods arrive: ``on_backorder_released``)."""
    waiting = backordered_units(state)
    units = {i: q - waiting.get(i, 0) for i, q in accepted_units(state).items()}
    return {i: q for i, q in units.items() if q > 0}


def release_command(state: OrderState, units: dict[str, int] | None = None,
                    reference: str | None = None) -> WmsRelease:
    """The fulfilment order for the warehouse: the units, the address, how and by when to ship
    and what each line needs (engraving, condition). An order the marketplace fulfils itself
    (Amazon AFN) releases nothing: it has no lines here."""
    order = state.order
    address = order.shipping_address
    if order.fulfilled_by_marketplace:
        units = {}
    lines = _line_units(state, releasable_units(state) if units is None else units)
    wanted = {ln.line_id for ln in lines}
    return WmsRelease(
        order_key=state.order_key, erp_sales_order=state.correlation.erp_sales_order or "",
        lines=lines, ship_to=address.model_dump() if address else None, reference=reference,
        shipping=ShippingInstructions(
            channel=order.channel, marketplace_order_id=order.marketplace_order_id,
            method=order.shipping_method, ship_by=order.ship_by, deliver_by=order.deliver_by,
            priority=order.is_prime, gift=order.is_gift, note=order.note,
            order_type=order.order_type, original_order_id=order.original_order_id),
        line_details={ln.line_id: ReleaseLineDetail(title=ln.title, properties=ln.properties,
                                                    condition=ln.condition)
                      for ln in order.lines if ln.line_id in wanted})


def backorder_references(state: OrderState) -> list[str]:
    return [b.reference for b in state.backorders.values()]


def erp_shipment_request(state: OrderState, shipment: ShipmentRecord) -> ErpShipmentRequest:
    return ErpShipmentRequest(order_key=state.order_key, channel=state.channel,
                              erp_sales_order=state.correlation.erp_sales_order or "",
                              shipment=shipment, lines=_line_units(state, shipment.lines))


def unposted_shipments(state: OrderState) -> Iterable[ShipmentRecord]:
    return (s for s in state.shipments.values() if s.delivery_note is None)


# --- fulfilment and shipments --------------------------------------------------------------------


def on_backorder_released(state: OrderState, event: BackorderReleased, now: datetime) -> Outcome:
    """Goods arrived for backordered units: they go to the warehouse as a fulfilment order of
    their own. A repeat asks the warehouse again (idempotent on the reference) until it answered.
    While a cancellation waits for the warehouse the release is kept, and sent only if the
    cancellation is refused; after a cancellation the units are not wanted (the ERP's
    cancellation freed what its sales order reserved)."""
    if state.status is OrderStatus.CANCELLED:
        return outcome(state=state)
    known = state.backorders.get(event.release_id)
    if known is not None:
        return outcome(state=state, wms_commands=unreleased_backorders(state, [known]))
    if not state.correlation.erp_sales_order:
        return outcome(state=state, problem=(
            f"goods arrived for backordered units of {state.order_key} ({event.sku}: "
            f"{event.lines}) before the ERP confirmed it: not released"))
    waiting = backordered_units(state)
    already = _line_totals(state.backorders.values())
    lines = {i: min(q, waiting.get(i, 0) - already.get(i, 0)) for i, q in event.lines.items()}
    lines = {i: q for i, q in lines.items() if q > 0}
    if not lines:
        return outcome(state=state, problem=(
            f"goods arrived for backordered units of {state.order_key} ({event.sku}: "
            f"{event.lines}) that it does not wait for"))
    record = BackorderFulfilment(
        release_id=event.release_id, reference=f"{state.order_key}#bo{len(state.backorders) + 1}",
        sku=event.sku, lines=lines, released_at=event.at, waited_s=event.waited_s)
    units = ", ".join(f"line {i}: {q}" for i, q in sorted(lines.items()))
    new = state.model_copy(update={
        "backorders": {**state.backorders, event.release_id: record},
        "timeline": timeline(state, TimelineEntry(
            event="backorder_released", system="retail-sync", at=event.at,
            detail=f"{event.sku} {units} -> {record.reference}")),
    })
    return outcome(state=new, changed=True, wms_commands=unreleased_backorders(new, [record]))


def unreleased_backorders(state: OrderState,
                          records: Iterable[BackorderFulfilment] | None = None) -> list[WmsRelease]:
    """Releases of backordered units the warehouse has not confirmed (none while cancelling)."""
    if state.status in (OrderStatus.CANCEL_PENDING, OrderStatus.CANCELLED):
        return []
    return [release_command(state, b.lines, b.reference)
            for b in (state.backorders.values() if records is None else records)
            if b.wms_fulfilment_id is None]


def on_released(state: OrderState, event: FulfilmentReleased) -> Outcome:
    if event.reference is not None and event.reference != state.order_key:
        found = next((b for b in state.backorders.values() if b.reference == event.reference), None)
        if found is None or found.wms_fulfilment_id == event.wms_reference:
            return outcome(state=state)
        new = state.model_copy(update={
            "backorders": {**state.backorders, found.release_id: found.model_copy(
                update={"wms_fulfilment_id": event.wms_reference})},
            "timeline": timeline(state, TimelineEntry(
                event="released_to_warehouse", system="wms", at=event.at,
                detail=f"{event.wms_reference} ({event.reference})"))})
        return outcome(state=new, changed=True)
    if state.correlation.wms_fulfilment_id == event.wms_reference:
        return outcome(state=state)
    new = state.model_copy(update={
        "correlation": state.correlation.model_copy(update={"wms_fulfilment_id": event.wms_reference}),
        "timeline": timeline(state, TimelineEntry(event="released_to_warehouse", system="wms",
                                                  at=event.at, detail=event.wms_reference)),
    })
    return outcome(state=new, changed=True)


def on_shipment(state: OrderState, event: ShipmentReported, now: datetime) -> Outcome:
    shipment = event.shipment
    if shipment.shipment_id in state.shipments:
        return outcome(state=state)  # the warehouse told us again
    ordered = {ln.line_id for ln in state.order.lines}
    unknown = sorted(set(shipment.lines) - ordered)
    if unknown:
        return outcome(state=state, problem=f"shipment {shipment.shipment_id} names lines "
                                            f"{unknown} that {state.order_key} does not have")
    entry = TimelineEntry(event="shipped", system="wms", at=shipment.shipped_at,
                          detail=f"{shipment.shipment_id}: {shipment.carrier} "
                                 f"{shipment.tracking_number}")
    new = state.model_copy(update={"shipments": {**state.shipments,
                                                 shipment.shipment_id: shipment}})
    problem = None
    if state.status is OrderStatus.CANCELLED:
        problem = (f"the warehouse shipped {shipment.shipment_id} for {state.order_key}, which is "
                   "cancelled: goods left for a cancelled order")
    status = shipping_status(new)
    update: dict[str, object] = {"timeline": timeline(state, entry)}
    if state.status is OrderStatus.CANCEL_PENDING:  # too late to cancel: it shipped
        problem = (f"cancellation of {state.order_key} refused: shipment {shipment.shipment_id} "
                   "already left the warehouse")
        who = requested_by(state.cancel.actor, state.cancel.request_id) if state.cancel else ""
        update.update(cancel=None, status=status, timeline=timeline(state, entry, TimelineEntry(
            event="cancel_refused", system="wms", at=shipment.shipped_at,
            detail=f"cancellation {who or 'requested'} refused: shipment "
                   f"{shipment.shipment_id} already left the warehouse"[:500])))
    elif STATUS_RANK[state.status] >= STATUS_RANK[OrderStatus.ERP_CONFIRMED] and \
            state.status is not OrderStatus.CANCELLED:
        update["status"] = advance(state.status, status)
    # earlier (the ERP has not confirmed yet): kept, and the status follows on confirmation
    new = new.model_copy(update=update)
    requests = [erp_shipment_request(new, shipment)] if state.correlation.erp_sales_order else []
    return outcome(state=new, changed=True, erp_requests=requests, problem=problem)


def on_shipment_posted(state: OrderState, event: ErpShipmentPosted, now: datetime) -> Outcome:
    shipment = state.shipments.get(event.shipment_id)
    if shipment is None:
        return outcome(state=state, problem=f"ERP delivery note {event.delivery_note} names "
                                            f"shipment {event.shipment_id}, unknown to "
                                            f"{state.order_key}")
    command = MarketplaceShipment(order_key=state.order_key, channel=state.channel,
                                  marketplace_order_id=state.correlation.marketplace_order_id,
                                  shipment=shipment, lines=_line_units(state, shipment.lines),
                                  requested_at=now)
    if shipment.delivery_note is not None:  # a repeat: ask the marketplace again if not done
        again = [command] if shipment.marketplace_confirmed_at is None else []
        return outcome(state=state, marketplace_commands=again)
    posted = shipment.model_copy(update={"delivery_note": event.delivery_note,
                                         "sales_invoice": event.sales_invoice})
    entries = [TimelineEntry(event="erp_delivery_note", system="erp", at=event.at,
                             detail=f"{event.delivery_note} for {event.shipment_id}")]
    if event.sales_invoice:
        entries.append(TimelineEntry(event="erp_invoice", system="erp-finance", at=event.at,
                                     detail=event.sales_invoice))
    new = state.model_copy(update={"shipments": {**state.shipments, event.shipment_id: posted},
                                   "timeline": timeline(state, *entries)})
    command = command.model_copy(update={"shipment": posted})
    return outcome(state=new, changed=True, marketplace_commands=[command])


def on_notified(state: OrderState, event: MarketplaceNotified) -> Outcome:
    name = f"marketplace_{event.action}_{'done' if event.ok else 'failed'}"
    detail = f"{event.reference}: {event.detail}" if event.reference else event.detail
    if event.ok and event.action == "ship" and event.reference in state.shipments and \
            state.shipments[event.reference].marketplace_confirmed_at is not None:
        return outcome(state=state)
    if event.ok and event.action == "refund" and event.reference in state.refunds and \
            state.refunds[event.reference].marketplace_refunded_at is not None:
        return outcome(state=state)
    if any(t.event == name and t.at == event.at and t.detail == detail[:500]
           for t in state.timeline):
        return outcome(state=state)
    update: dict[str, object] = {"timeline": timeline(state, TimelineEntry(
        event=name, system=state.channel, at=event.at, detail=detail[:500]))}
    if event.ok and event.action == "ship" and event.reference in state.shipments:
        shipment = state.shipments[event.reference]
        update["shipments"] = {**state.shipments, event.reference: shipment.model_copy(
            update={"marketplace_confirmed_at": shipment.marketplace_confirmed_at or event.at})}
    if event.ok and event.action == "refund" and event.reference in state.refunds:
        refund = state.refunds[event.reference]
        update["refunds"] = {**state.refunds, event.reference: refund.model_copy(
            update={"marketplace_refunded_at": refund.marketplace_refunded_at or event.at})}
    return outcome(state=state.model_copy(update=update), changed=True)


# --- cancellations -------------------------------------------------------------------------------


def is_cancelled_by_marketplace(event: OrderReceived) -> bool:
    return event.order.cancelled_at is not None or event.order.fulfillment_status == "cancelled"


#: the reason a marketplace cancellation answering a buyer's request carries (Amazon's
#: OrderAcknowledgement CancelReason; connectors.amazon.outbound lists the items with it)
BUYER_CANCELED = "BuyerCanceled"


def buyer_cancels_whole_order(state: OrderState, event: OrderReceived) -> bool:
    request = event.order.buyer_cancel_request
    return request is not None and {ln.line_id for ln in state.order.lines} <= set(request.line_ids)


def on_buyer_cancel_request(state: OrderState, event: OrderReceived, now: datetime) -> Outcome:
    """The buyer asked the marketplace to cancel (Amazon BuyerRequestedCancel): a request for every
    line cancels the order like any cancellation (refused once shipped, the marketplace told with
    reason BuyerCanceled); one for some lines only is left to a human (exception), once."""
    request = event.order.buyer_cancel_request
    assert request is not None
    said = f"buyer requested cancellation{f': {request.reason}' if request.reason else ''}"[:500]
    whole = buyer_cancels_whole_order(state, event)
    refused = state.status in SHIPPED_OR_LATER
    if not whole or refused:
        name = "buyer_cancel_refused" if refused else "buyer_cancel_partial"
        if state.status is OrderStatus.CANCELLED or any(t.event == name for t in state.timeline):
            return outcome(state=state)
        why = (f"already {state.status.value}" if refused else
               f"it names items {sorted(request.line_ids)} only; cancel them by hand on "
               f"{state.channel} and amend the ERP order")
        new = state.model_copy(update={"timeline": timeline(state, TimelineEntry(
            event=name, system=state.channel, at=event.received_at, detail=said))})
        return outcome(state=new, changed=True, problem=(
            f"{said} for {state.order_key} not applied: {why}"))
    return on_cancel(state, CancelRequested(order_key=state.order_key, by="buyer", reason=said,
                                            at=event.received_at), now)


def on_cancel(state: OrderState, request: CancelRequested, now: datetime) -> Outcome:
    """A cancellation from the marketplace (``by`` = its channel), an operator or the ERP."""
    if state.status is OrderStatus.CANCELLED or (state.cancel is not None
                                                 and state.status is OrderStatus.CANCEL_PENDING):
        return outcome(state=state)
    who = requested_by(request.actor, request.request_id)
    entry = TimelineEntry(event="cancel_requested", system=request.by, at=request.at,
                          detail=f"cancel requested {who}: {request.reason}"[:500] if who
                          else request.reason)
    if state.status in SHIPPED_OR_LATER:
        why = f"already {state.status.value} ({len(state.shipments)} shipment(s))"
        return refused(state, "cancel_refused", request.by, request.at,
                       f"cancellation {who or f'by {request.by}'} refused: {why}",
                       f"cancellation of {state.order_key} by {request.by} refused: {why}")
    if state.status in (OrderStatus.STOCK_PENDING, OrderStatus.ERP_FAILED, OrderStatus.RECEIVED):
        # nothing in the ERP or the warehouse yet: cancelled here and now
        return cancelled(state, request.by, request.reason, now, [entry])
    new = state.model_copy(update={
        "status": OrderStatus.CANCEL_PENDING, "cancel": request,
        "timeline": timeline(state, entry)})
    if state.status is OrderStatus.ERP_PENDING:  # the ERP post is in flight: cancel on its answer
        return outcome(state=new, changed=True)
    if state.order.fulfilled_by_marketplace:  # our warehouse never had it: straight to the ERP
        erp = state.correlation.erp_sales_order
        return outcome(state=new, changed=True, erp_requests=[ErpCancelRequest(
            order_key=state.order_key, channel=state.channel, erp_sales_order=erp,
            reason=request.reason)] if erp else [])
    return outcome(state=new, changed=True, wms_commands=[WmsCancel(
        order_key=state.order_key, references=backorder_references(state))])


def refused(state: OrderState, name: str, system: str, at: datetime, detail: str,
            problem: str) -> Outcome:
    """A request refused by the order's state: the state stays, the refusal is on the order's
    timeline (once per distinct refusal) and goes to the exception topic (``problem``)."""
    detail = detail[:500]
    if any(t.event == name and t.detail == detail for t in state.timeline):
        return outcome(state=state, problem=problem)
    new = state.model_copy(update={"timeline": timeline(state, TimelineEntry(
        event=name, system=system, at=at, detail=detail))})
    return outcome(state=new, changed=True, problem=problem)


def on_fulfilment_cancelled(state: OrderState, event: FulfilmentCancelled,
                            now: datetime) -> Outcome:
    if state.status is not OrderStatus.CANCEL_PENDING or state.cancel is None:
        return outcome(state=state)
    if not event.ok:  # it left the warehouse first: the shipment event will follow
        status = shipping_status(state) if state.shipments else OrderStatus.ERP_CONFIRMED
        who = requested_by(state.cancel.actor, state.cancel.request_id)
        new = state.model_copy(update={
            "cancel": None, "status": status,
            "timeline": timeline(state, TimelineEntry(
                event="cancel_refused", system="wms", at=event.at,
                detail=f"cancellation {who} refused: {event.detail}"[:500] if who
                else event.detail))})
        return outcome(state=new, changed=True, wms_commands=unreleased_backorders(new), problem=(
            f"cancellation of {state.order_key} by {state.cancel.by} refused: {event.detail}"))
    erp = state.correlation.erp_sales_order
    requests = [ErpCancelRequest(order_key=state.order_key, channel=state.channel,
                                 erp_sales_order=erp, reason=state.cancel.reason)] if erp else []
    new = state.model_copy(update={"timeline": timeline(state, TimelineEntry(
        event="warehouse_stopped", system="wms", at=event.at, detail=event.detail))})
    return outcome(state=new, changed=True, erp_requests=requests)


def on_erp_cancelled(state: OrderState, event: ErpOrderCancelled, now: datetime) -> Outcome:
    if state.status is OrderStatus.CANCELLED:
        return outcome(state=state)
    entry = TimelineEntry(event="erp_sales_order_cancelled", system="erp", at=event.at,
                          detail=f"{event.erp_sales_order}: {event.reason}")
    if state.status in SHIPPED_OR_LATER:
        return refused(state, "cancel_refused", "erp", event.at,
                       f"the ERP's cancellation of {event.erp_sales_order} refused: already "
                       f"{state.status.value}; the marketplace is not told",
                       f"the ERP cancelled {event.erp_sales_order} for {state.order_key}, which "
                       f"already {state.status.value}: refused, the marketplace is not told")
    by = state.cancel.by if state.cancel is not None else "erp"
    out = cancelled(state, by, event.reason, now, [entry])
    if state.cancel is None and not state.order.fulfilled_by_marketplace:
        # the ERP's own decision: stop the warehouse too
        out.wms_commands = [WmsCancel(order_key=state.order_key,
                                      references=backorder_references(state))]
    return out


def cancelled(state: OrderState, by: str, reason: str, now: datetime,
               entries: list[TimelineEntry]) -> Outcome:
    """Final: stock released; the marketplace told unless the cancellation came from it."""
    new = state.model_copy(update={
        "status": OrderStatus.CANCELLED, "cancel": None, "cancel_reason": f"{by}: {reason}",
        "timeline": timeline(state, *entries, TimelineEntry(event="cancelled", system="retail-sync",
                                                            at=now, detail=f"by {by}"))})
    commands = []
    if by in ("erp", "operator", "buyer"):  # "buyer": asked the marketplace, the seller cancels
        commands = [MarketplaceCancel(
            order_key=state.order_key, channel=state.channel,
            marketplace_order_id=state.correlation.marketplace_order_id, whole_order=True,
            lines=[LineUnits(line_id=ln.line_id, sku=ln.sku, quantity=ln.quantity)
                   for ln in state.order.lines],
            reason=BUYER_CANCELED if by == "buyer" else reason, requested_at=now)]
    return outcome(state=new, changed=True, marketplace_commands=commands,
                   stock_commands=release_commands(state, now, f"order cancelled by {by}"))


# --- returns and refunds -------------------------------------------------------------------------


def on_return_requested(state: OrderState, event: ReturnRequested, now: datetime) -> Outcome:
    refund = event.refund
    if refund.refund_id in state.refunds:
        return outcome(state=state)
    who = requested_by(event.actor, event.request_id)
    why = return_refusal(state, refund.lines, refund.amount)
    if why is not None:
        return refused(state, "return_refused", refund.source, refund.requested_at,
                       f"{refund.refund_id}{f' ({who})' if who else ''} refused: {why}",
                       f"refund {refund.refund_id} of {state.order_key} refused: {why}")
    new = state.model_copy(update={
        "refunds": {**state.refunds, refund.refund_id: refund},
        "timeline": timeline(state, TimelineEntry(
            event="return_requested", system=refund.source, at=refund.requested_at,
            detail=(f"{refund.refund_id}{f' requested {who}' if who else ''}: {refund.amount} "
                    f"{state.order.currency}, {'goods back' if refund.restock else 'refund only'}"
                    f"; {refund.reason}")[:500]))})
    if refund.restock:
        return outcome(state=new, changed=True, wms_commands=[WmsExpectReturn(
            order_key=state.order_key, refund_id=refund.refund_id,
            lines=_line_units(state, refund.lines))])
    return outcome(state=new, changed=True, erp_requests=_return_request(new, refund))


def unposted_returns(state: OrderState) -> list[ErpReturnRequest]:
    """Returns ready for the ERP (goods back, or nothing to wait for) without a credit note."""
    return [r for refund in state.refunds.values()
            if refund.credit_note is None and (refund.goods_received_at or not refund.restock)
            for r in _return_request(state, refund)]


def _return_request(state: OrderState, refund: RefundRecord) -> list[ErpReturnRequest]:
    erp = state.correlation.erp_sales_order
    if not erp:
        return []
    return [ErpReturnRequest(order_key=state.order_key, channel=state.channel,
                             erp_sales_order=erp, refund=refund,
                             lines=_line_units(state, refund.lines),
                             currency=state.order.currency)]


def on_return_received(state: OrderState, event: ReturnReceived, now: datetime) -> Outcome:
    refund = state.refunds.get(event.refund_id)
    if refund is None:
        return outcome(state=state, problem=f"goods of return {event.refund_id} arrived for "
                                            f"{state.order_key}, which expects no such return")
    if refund.goods_received_at is not None:
        return outcome(state=state)
    received = refund.model_copy(update={"goods_received_at": event.at})
    new = state.model_copy(update={
        "refunds": {**state.refunds, event.refund_id: received},
        "timeline": timeline(state, TimelineEntry(event="return_received", system="wms",
                                                  at=event.at, detail=event.refund_id))})
    return outcome(state=new, changed=True, erp_requests=_return_request(new, received))


def on_return_posted(state: OrderState, event: ErpReturnPosted, now: datetime) -> Outcome:
    refund = state.refunds.get(event.refund_id)
    if refund is None:
        return outcome(state=state, problem=f"ERP credit note {event.credit_note} names refund "
                                            f"{event.refund_id}, unknown to {state.order_key}")
    command = MarketplaceRefund(order_key=state.order_key, channel=state.channel,
                                marketplace_order_id=state.correlation.marketplace_order_id,
                                refund=refund, lines=_line_units(state, refund.lines),
                                currency=state.order.currency, requested_at=now)
    to_marketplace = refund.source in ("erp", "operator")
    if refund.credit_note is not None:
        again = [command] if to_marketplace and refund.marketplace_refunded_at is None else []
        return outcome(state=state, marketplace_commands=again)
    posted = refund.model_copy(update={"credit_note": event.credit_note,
                                       "return_delivery_note": event.return_delivery_note})
    new = state.model_copy(update={"refunds": {**state.refunds, event.refund_id: posted}})
    new = new.model_copy(update={
        "status": advance(state.status, _refund_status(new)),
        "timeline": timeline(state, TimelineEntry(
            event="erp_credit_note", system="erp-finance", at=event.at,
            detail=f"{event.credit_note} for {event.refund_id}"))})
    command = command.model_copy(update={"refund": posted})
    return outcome(state=new, changed=True, first_refund_posted=True,
                   marketplace_commands=[command] if to_marketplace else [])
