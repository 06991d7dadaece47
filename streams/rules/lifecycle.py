"""The order lifecycle as pure functions: (state, event) -> (new state, commands to send).

Kept free of Faust so it can be tested exhaustively. Replaying an event changes nothing
(idempotent), except that an order still waiting re-issues what it waits for (its reservations,
its ERP request): both are idempotent on the order key, and this closes the gap where a worker
died after writing the state but before the command reached Kafka.

    received --reserve every SKU--> stock_pending --all lines answered--> decide:
        everything reserved           -> erp_pending (the whole order)
        short, policy "cancel"        -> cancelled (release all, cancel on the marketplace)
        short, policy "partial"       -> erp_pending with the reserved quantities; the rest is
                                         cancelled on the marketplace (nothing reserved: cancelled)
        short, policy "backorder"     -> erp_pending (the whole order, the missing units marked
                                         as backordered in the ERP)
    erp_pending --ERP sales order--> erp_confirmed (commit the reservations to the ERP)
    erp_pending --ERP refused------> erp_failed (reservations kept until replay or cancel)
    cancel_pending (cancelled while posting) --ERP refused--> cancelled (nothing in the ERP:
                                         stock released, marketplace told as usual)

Edits (issue 12 item 3): a redelivery whose lines differ from the order's is an edit on the
marketplace, unless it only shows what we cancelled ourselves (the lines cut to what the stock
decision accepted). Under the channel's edit policy ``apply`` (RETAIL_SYNC_ORDER_EDIT_POLICY) a
reduction before the ERP has the order (stock_pending, erp_failed) is taken: the order's lines
become the edited ones, removed lines' reservations are released (a reduced line keeps its
reservation until the ERP's own takes over) and the stock decision is taken if nothing is left to
answer. Anything else (lines added, an edit once the ERP has the order, policy ``exception``) is
recorded on the order's timeline (``order_edit_not_applied``) and as a state_conflict exception
for a human to amend the ERP sales order; never dropped.

Buyer cancellation requests (Amazon ``BuyerRequestedCancel``, ``Order.buyer_cancel_request``)
naming every line cancel the order through streams.rules.aftersale.on_cancel (``by="buyer"``): before
shipment it is cancelled everywhere and the marketplace is told with reason BuyerCanceled; an
order first seen with one reserves nothing.

An order the marketplace fulfils from its own stock (Amazon AFN, ``Order.fulfilled_by`` =
"marketplace") goes to the ERP only: nothing is reserved (its stock is the marketplace's), it is
posted at once (received -> erp_pending, booked in the ERP's marketplace warehouse) and never
released to our warehouse; a cancellation goes straight to the ERP (issue 12 item 2).

Replays (``POST /exceptions/replay``, ``retail-sync exceptions replay``) of an ERP post or a
warehouse release that failed come here as RetryErpPost / RetryWmsRelease, never as the command
kept in the exception record: the order agent builds the command again from the order as it is
now (an edit applied since the failure, a cancellation, a confirmation that came meanwhile all
count), or skips it with the reason on the timeline (``erp_retry_skipped``,
``wms_retry_skipped``). ``erp_retry_refusal`` and ``wms_retry_refusal`` are the rules; the
replay door applies them too, to answer "skipped" at once.

A backordered order goes to the warehouse in parts: on ERP confirmation what had stock; each
time goods arrive for the rest, the stock agent's BackorderReleased becomes a fulfilment order of
its own (``<order_key>#bo<n>``, streams.rules.aftersale.on_backorder_released).

Long module: the order state machine up to the ERP (receipt, redelivery, edits, the stock
decision, the ERP's answers, retries) in one place; split, its transitions would scatter.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from retail_sync.streams.commands import (
    CommitStock,
    ErpCancelRequest,
    ErpCommand,
    ErpPostRequest,
    LineRequest,
    MarketplaceCancel,
    ReleaseStock,
    ReserveStock,
    RetryErpPost,
    RetryWmsRelease,
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
    MarketplaceNotified,
    OrderEvent,
    OrderReceived,
    ReturnReceived,
    ReturnRequested,
    ShipmentReported,
    StockAnswered,
)
from retail_sync.streams.models import LineUnits, Money, Order, OrderStatus
from retail_sync.streams.rules import aftersale
from retail_sync.streams.rules.outcome import Outcome, merge
from retail_sync.streams.state import Correlation, LineStock, OrderState, TimelineEntry

MAX_DELIVERY_IDS = 20


POLICIES = ("cancel", "partial", "backorder")
CENT = Decimal("0.01")


def apply(state: OrderState | None, event: OrderEvent, now: datetime,
          policy: str = "cancel", edit_policy: str = "apply") -> Outcome:
    """``policy`` is the order's channel policy for lines that cannot all be reserved,
    ``edit_policy`` its policy for edits of the lines (see the module docstring)."""
    out = _apply(state, event, now, policy, edit_policy)
    if out.changed and out.state is not None:
        out.state = _with_latencies(out.state)
    return out


def _with_latencies(state: OrderState) -> OrderState:
    """Every timeline entry after the first says how long after the previous one it came."""
    timeline = state.timeline
    if all(t.since_previous_s is not None for t in timeline[1:]):
        return state
    filled = [timeline[0], *(
        t if t.since_previous_s is not None else
        t.model_copy(update={"since_previous_s": (t.at - prev.at).total_seconds()})
        for prev, t in zip(timeline, timeline[1:], strict=False))]
    return state.model_copy(update={"timeline": filled})


def _apply(state: OrderState | None, event: OrderEvent, now: datetime, policy: str,
           edit_policy: str = "apply") -> Outcome:
    if isinstance(event, OrderReceived):
        out = _on_received(state, event, now, policy, edit_policy)
        if state is not None and out.state is not None and \
                aftersale.is_cancelled_by_marketplace(event):
            cancel = aftersale.on_cancel(out.state, CancelRequested(
                order_key=event.order_key, by=out.state.channel, at=event.received_at,
                reason="cancelled on the marketplace"), now)
            return merge(out, cancel)
        if out.state is not None and event.order.buyer_cancel_request is not None and \
                not aftersale.is_cancelled_by_marketplace(event):
            if state is None and aftersale.buyer_cancels_whole_order(out.state, event):
                out.stock_commands = []  # first seen with the request: nothing to reserve
            return merge(out, aftersale.on_buyer_cancel_request(out.state, event, now))
        return out
    if state is None:  # an answer for an order we do not know: nothing to attach it to
        return Outcome(state=None, problem=f"{event.kind} for {event.order_key}, an order this "
                                           "engine has no state for")
    handler = _HANDLERS.get(type(event))
    if handler is None:
        raise TypeError(f"unknown order event {type(event).__name__}")
    if isinstance(event, StockAnswered):
        return _on_stock(state, event, now, policy)
    return handler(state, event, now)


def _request(state: OrderState, now: datetime) -> ErpPostRequest:
    """The ERP post for ``state``: the lines its stock decision accepted."""
    order = state.order
    if state.stock_decision == "partial":
        order = reduced_order(state.order, {i: s.reserved for i, s in state.stock.items()})
    return ErpPostRequest(
        order_key=state.order_key, order=order, received_at=state.received_at,
        requested_at=now, backorders=aftersale.backordered_units(state),
    )


def _scaled(money: Money, factor: Decimal) -> Money:
    return Money(amount=(money.amount * factor).quantize(CENT, ROUND_HALF_UP),
                 currency=money.currency)


def reduced_order(order: Order, keep: dict[str, int]) -> Order:
    """``order`` with each line's quantity cut to ``keep[line_id]`` (lines cut to 0 dropped);
    line tax and discount scale with the quantity and the totals follow."""
    lines = []
    for line in order.lines:
        qty = min(line.quantity, keep.get(line.line_id, line.quantity))
        if qty <= 0:
            continue
        factor = Decimal(qty) / Decimal(line.quantity)
        lines.append(line.model_copy(update={"quantity": qty, "tax": _scaled(line.tax, factor),
                                             "discount": _scaled(line.discount, factor)}))
    if not lines:
        raise ValueError(f"nothing of {order.order_key} is left to post")
    zero = Money(amount=Decimal(0), currency=order.currency)
    subtotal = sum((Money(amount=ln.unit_price.amount * ln.quantity, currency=order.currency)
                    for ln in lines), zero)
    share = Decimal(1) if not order.subtotal.amount else subtotal.amount / order.subtotal.amount
    tax = _scaled(order.tax_total, share)
    discount = _scaled(order.discount_total, share)
    total = subtotal.amount + order.shipping.amount - discount.amount
    if not order.taxes_included:
        total += tax.amount
    return order.model_copy(update={
        "lines": lines, "subtotal": subtotal, "tax_total": tax, "discount_total": discount,
        "total": Money(amount=total.quantize(CENT, ROUND_HALF_UP), currency=order.currency),
    })


def _reserve_commands(state: OrderState, now: datetime) -> list[ReserveStock]:
    """One reservation request per SKU still unanswered (all of them for a new order)."""
    by_sku: dict[str, list[LineRequest]] = defaultdict(list)
    for line in state.order.lines:
        if line.line_id not in state.stock:
            by_sku[line.sku].append(LineRequest(line_id=line.line_id, quantity=line.quantity))
    return [ReserveStock(sku=sku, order_key=state.order_key, channel=state.channel, lines=lines,
                         requested_at=now) for sku, lines in by_sku.items()]


def _tracked_lines(state: OrderState) -> dict[str, list[str]]:
    """SKU -> the order's line ids on it, for every SKU the stock agent tracks."""
    by_sku: dict[str, list[str]] = defaultdict(list)
    for line_id, stock in sorted(state.stock.items()):
        if stock.tracked:
            by_sku[stock.sku].append(line_id)
    return dict(sorted(by_sku.items()))


def _on_received(state: OrderState | None, event: OrderReceived, now: datetime,
                 policy: str = "cancel", edit_policy: str = "apply") -> Outcome:
    if state is None and aftersale.is_cancelled_by_marketplace(event):
        order = event.order  # first seen already cancelled: nothing to reserve or post
        return Outcome(state=OrderState(
            order_key=event.order_key, channel=order.channel, status=OrderStatus.CANCELLED,
            order=order, cancel_reason=f"{order.channel}: cancelled before we saw it",
            correlation=Correlation(marketplace_order_id=order.marketplace_order_id,
                                    marketplace_order_name=order.marketplace_order_name,
                                    delivery_ids=[event.delivery_id]),
            timeline=[TimelineEntry(event="order_received_cancelled", system=order.channel,
                                    at=event.received_at)],
            received_at=event.received_at), changed=True)
    if state is None and event.order.fulfilled_by_marketplace:
        return _marketplace_fulfilled(event, now)
    if state is None:
        order = event.order
        new = OrderState(
            order_key=event.order_key,
            channel=order.channel,
            status=OrderStatus.STOCK_PENDING,
            order=order,
            correlation=Correlation(
                marketplace_order_id=order.marketplace_order_id,
                marketplace_order_name=order.marketplace_order_name,
                delivery_ids=[event.delivery_id],
            ),
            timeline=[
                TimelineEntry(event="order_received", system=order.channel, at=event.received_at),
                TimelineEntry(event="stock_requested", system="retail-sync", at=now),
            ],
            received_at=event.received_at,
        )
        return Outcome(state=new, stock_commands=list(_reserve_commands(new, now)), changed=True)
    return _on_redelivery(state, event, now, policy, edit_policy)


def _marketplace_fulfilled(event: OrderReceived, now: datetime) -> Outcome:
    """A new order the marketplace ships from its own stock: straight to the ERP, no stock."""
    order = event.order
    new = OrderState(
        order_key=event.order_key, channel=order.channel, status=OrderStatus.ERP_PENDING,
        order=order, stock_decision="accepted",
        correlation=Correlation(marketplace_order_id=order.marketplace_order_id,
                                marketplace_order_name=order.marketplace_order_name,
                                delivery_ids=[event.delivery_id]),
        timeline=[
            TimelineEntry(event="order_received", system=order.channel, at=event.received_at),
            TimelineEntry(event="fulfilled_by_marketplace", system="retail-sync", at=now,
                          detail=f"{order.channel} ships it from its own stock: ERP only, "
                                 "no reservation, no warehouse release"),
            TimelineEntry(event="erp_requested", system="retail-sync", at=now),
        ],
        received_at=event.received_at)
    return Outcome(state=new, changed=True, erp_requests=[_request(new, now)])


def _on_redelivery(state: OrderState, event: OrderReceived, now: datetime,
                   policy: str = "cancel", edit_policy: str = "apply") -> Outcome:
    updates: dict[str, object] = {}
    if event.delivery_id not in state.correlation.delivery_ids:
        ids = [*state.correlation.delivery_ids, event.delivery_id][-MAX_DELIVERY_IDS:]
        updates["correlation"] = state.correlation.model_copy(update={"delivery_ids": ids})
        updates["timeline"] = [
            *state.timeline,
            TimelineEntry(event="order_redelivered", system=state.channel, at=event.received_at,
                          detail=event.delivery_id),
        ]
    edited = False
    if event.order.updated_at > state.order.updated_at:
        if _same_lines(state.order, event.order):
            updates["order"] = event.order  # lines are what was reserved
        else:
            edited = not _our_cancellation(state, event.order) and \
                state.status is not OrderStatus.CANCELLED
    new = state.model_copy(update=updates) if updates else state
    if edited:
        out = _on_edit(new, event, now, policy, edit_policy)
        out.changed = out.changed or bool(updates)
        if out.decided or out.state is None:
            return out
        new = out.state
    else:
        out = Outcome(state=new, changed=bool(updates))
    requests: list[ErpCommand] = [_request(new, now)] if new.status is OrderStatus.ERP_PENDING else []
    reserve = _reserve_commands(new, now) if new.status is OrderStatus.STOCK_PENDING else []
    return merge(out, Outcome(state=new, erp_requests=requests, stock_commands=list(reserve)))


def _same_lines(a: Order, b: Order) -> bool:
    return [(ln.line_id, ln.sku, ln.quantity) for ln in a.lines] == \
        [(ln.line_id, ln.sku, ln.quantity) for ln in b.lines]


def _our_cancellation(state: OrderState, order: Order) -> bool:
    """``order``'s lines are ours cut to what the stock decision accepted: the marketplace shows
    the partial cancellation we sent it, not an edit."""
    skus = {ln.line_id: ln.sku for ln in state.order.lines}
    return all(skus.get(ln.line_id) == ln.sku for ln in order.lines) and \
        {ln.line_id: ln.quantity for ln in order.lines} == aftersale.accepted_units(state)


def _edit_detail(before: Order, after: Order) -> str:
    old = {ln.line_id: ln for ln in before.lines}
    new = {ln.line_id: ln for ln in after.lines}
    parts = []
    for line_id in [*old, *(i for i in new if i not in old)]:
        was, now_ = old.get(line_id), new.get(line_id)
        if now_ is None and was is not None:
            parts.append(f"line {line_id} ({was.sku}) {was.quantity} -> removed")
        elif was is None and now_ is not None:
            parts.append(f"line {line_id} ({now_.sku}) added, {now_.quantity}")
        elif was is not None and now_ is not None and (was.sku, was.quantity) != (now_.sku, now_.quantity):
            parts.append(f"line {line_id} ({was.sku}) {was.quantity} -> {now_.sku} {now_.quantity}")
    return "; ".join(parts)[:500]


def _on_edit(state: OrderState, event: OrderReceived, now: datetime, policy: str,
             edit_policy: str) -> Outcome:
    """The marketplace changed the order's lines (see the module docstring)."""
    edited = event.order
    detail = _edit_detail(state.order, edited)
    if any(t.event in ("order_edited", "order_edit_not_applied") and t.detail == detail
           for t in state.timeline):
        return Outcome(state=state)  # this edit was seen already
    old = {ln.line_id: ln for ln in state.order.lines}
    reduction = all(ln.line_id in old and old[ln.line_id].sku == ln.sku
                    and ln.quantity <= old[ln.line_id].quantity for ln in edited.lines)
    before_erp = state.status in (OrderStatus.STOCK_PENDING, OrderStatus.ERP_FAILED) and \
        state.correlation.erp_sales_order is None
    if edit_policy == "apply" and reduction and before_erp:
        kept = {ln.line_id for ln in edited.lines}
        removed = [i for i in old if i not in kept]
        released: dict[str, list[str]] = defaultdict(list)
        for line_id in removed:
            held = state.stock.get(line_id)
            if held is not None and held.tracked:
                released[held.sku].append(line_id)
        new = state.model_copy(update={
            "order": edited, "stock": {i: s for i, s in state.stock.items() if i in kept},
            "timeline": aftersale.timeline(state, TimelineEntry(
                event="order_edited", system=state.channel, at=event.received_at, detail=detail))})
        out = Outcome(state=new, changed=True, stock_commands=[
            ReleaseStock(sku=sku, order_key=state.order_key, line_ids=ids, at=now,
                         reason="order edited on the marketplace: line removed")
            for sku, ids in sorted(released.items())])
        if new.status is OrderStatus.STOCK_PENDING and kept <= set(new.stock):
            return merge(out, _decide(new, now, policy))
        return out
    erp = state.correlation.erp_sales_order
    if edit_policy != "apply":
        why = f"the edit policy for {state.channel} is {edit_policy!r}"
    elif not reduction:
        why = "lines were added or changed (only reductions are taken automatically)"
    else:
        why = f"the order is {state.status.value}" + (f", in the ERP as {erp}" if erp else "")
    new = state.model_copy(update={"timeline": aftersale.timeline(state, TimelineEntry(
        event="order_edit_not_applied", system=state.channel, at=event.received_at,
        detail=detail))})
    return Outcome(state=new, changed=True, problem=(
        f"{state.order_key} was edited on {state.channel} ({detail}) and the edit was not "
        f"applied: {why}. Amend the ERP sales order by hand{f' ({erp})' if erp else ''}, or "
        "cancel the order and enter it again"))


def _on_stock(state: OrderState, event: StockAnswered, now: datetime, policy: str) -> Outcome:
    if state.status is OrderStatus.CANCELLED and state.stock_decision is None:
        # cancelled while waiting: whatever this answer holds goes straight back
        held = [a.line_id for a in event.lines if a.reserved > 0]
        if not event.tracked or not held:
            return Outcome(state=state)
        return Outcome(state=state, stock_commands=[ReleaseStock(
            sku=event.sku, order_key=state.order_key, line_ids=held,
            reason="order cancelled while reserving", at=now)])
    if state.status is OrderStatus.ERP_PENDING or (
            state.status is OrderStatus.CANCELLED and state.stock_decision == "cancelled"):
        # a replayed answer, the decision taken and not yet carried through: send what the
        # decision sent again. The answer is replayed when the worker stopped before its offset
        # was committed; the state that took the decision may have been kept (RocksDB, or its
        # changelog record delivered) while what was sent with it was lost (a SIGKILL between
        # the batch's state write and its sends, or the broker gone before it acknowledged),
        # and nothing else would send it. Each is idempotent: one sales order per order key, a
        # release of a released line changes nothing, the marketplace cancels what is not
        # cancelled yet (the SIGKILL test once lost a short order's cancellation so).
        return _decision_again(state, now)
    if state.status is not OrderStatus.STOCK_PENDING:
        return Outcome(state=state)  # a replayed answer: the decision is taken
    skus = {ln.line_id: ln.sku for ln in state.order.lines}
    answered = {a.line_id: LineStock(sku=event.sku, requested=a.requested, reserved=a.reserved,
                                     tracked=event.tracked)
                for a in event.lines if skus.get(a.line_id) == event.sku}
    if all(state.stock.get(i) == s for i, s in answered.items()):
        return Outcome(state=state)
    stock = {**state.stock, **answered}
    new = state.model_copy(update={"stock": stock})
    if set(stock) < set(skus):
        return Outcome(state=new, changed=True)  # other SKUs still to answer
    return _decide(new, now, policy)


def _decision_again(state: OrderState, now: datetime) -> Outcome:
    """What the stock decision of ``state`` (ERP_PENDING, or CANCELLED for stock) sent, again."""
    short = {i: s for i, s in state.stock.items() if s.reserved < s.requested}
    if state.status is OrderStatus.CANCELLED:
        return Outcome(state=state, stock_commands=[
            ReleaseStock(sku=sku, order_key=state.order_key, line_ids=ids,
                         reason="order cancelled: not enough stock", at=now)
            for sku, ids in _tracked_lines(state).items()],
            marketplace_commands=[_cancel(state, short, whole=True, now=now)])
    out = Outcome(state=state, erp_requests=[_request(state, now)])
    if state.stock_decision == "partial" and short:
        out.marketplace_commands = [_cancel(state, short, whole=False, now=now)]
    return out


def _decide(state: OrderState, now: datetime, policy: str) -> Outcome:
    short = {i: s for i, s in state.stock.items() if s.reserved < s.requested}
    reserved_any = any(s.reserved for s in state.stock.values() if s.tracked)
    if not short:
        decision = "accepted"
    elif policy == "backorder":
        decision = "backorder"
    elif policy == "partial" and reserved_any:
        decision = "partial"
    else:
        decision = "cancelled"
    detail = ", ".join(f"{s.sku} line {i}: {s.reserved} of {s.requested}"
                       for i, s in sorted(short.items()))
    timeline = [*state.timeline, TimelineEntry(
        event=f"stock_{decision}", system="retail-sync", at=now,
        detail=f"policy {policy}: {detail}" if short else None)]
    update: dict[str, object] = {"stock_decision": decision, "timeline": timeline,
                                 "stock_policy": policy if short else None}
    out = Outcome(state=state, changed=True, decided=True)
    if decision == "cancelled":
        update["status"] = OrderStatus.CANCELLED
        out.stock_commands = [ReleaseStock(sku=sku, order_key=state.order_key, line_ids=ids,
                                           reason="order cancelled: not enough stock", at=now)
                              for sku, ids in _tracked_lines(state).items()]
        out.marketplace_commands = [_cancel(state, short, whole=True, now=now)]
    else:
        update["status"] = OrderStatus.ERP_PENDING
        update["timeline"] = [*timeline, TimelineEntry(event="erp_requested",
                                                       system="retail-sync", at=now)]
        if decision == "partial":
            out.marketplace_commands = [_cancel(state, short, whole=False, now=now)]
    out.state = state.model_copy(update=update)
    if out.state.status is OrderStatus.ERP_PENDING:
        out.erp_requests = [_request(out.state, now)]
    return out


def _cancel(state: OrderState, short: dict[str, LineStock], *, whole: bool,
            now: datetime) -> MarketplaceCancel:
    if whole:
        lines = [LineUnits(line_id=ln.line_id, sku=ln.sku, quantity=ln.quantity)
                 for ln in state.order.lines]
    else:
        lines = [LineUnits(line_id=i, sku=s.sku, quantity=s.requested - s.reserved)
                 for i, s in sorted(short.items())]
    return MarketplaceCancel(
        order_key=state.order_key, channel=state.channel,
        marketplace_order_id=state.correlation.marketplace_order_id, whole_order=whole,
        lines=lines, reason="NoInventory", requested_at=now)


def _on_erp_posted(state: OrderState, event: ErpOrderPosted, now: datetime) -> Outcome:
    known = state.correlation.erp_sales_order
    waiting = aftersale.backordered_units(state)
    commits = [CommitStock(sku=sku, order_key=state.order_key, line_ids=ids,
                           erp_sales_order=event.erp_sales_order, erp_created=event.erp_created,
                           at=now, backorders={i: waiting[i] for i in ids if i in waiting})
               for sku, ids in _tracked_lines(state).items()]
    if known == event.erp_sales_order:  # replayed confirmation: re-issue what it started
        again: list[Any] = []
        if state.status is OrderStatus.ERP_CONFIRMED and not state.correlation.wms_fulfilment_id:
            again = [c for c in [aftersale.release_command(state)] if c.lines]
        again += aftersale.unreleased_backorders(state)
        return Outcome(state=state, stock_commands=list(commits), wms_commands=again)
    if known is not None:  # the ERP holds two sales orders for one marketplace order
        return Outcome(state=state, problem=f"ERP answered sales order {event.erp_sales_order} "
                                            f"for {state.order_key}, already confirmed as {known}")
    first = state.erp_confirmed_at is None
    cancelling = state.status in (OrderStatus.CANCEL_PENDING, OrderStatus.CANCELLED)
    confirmed = aftersale.advance(state.status, OrderStatus.ERP_CONFIRMED)
    if state.shipments:  # shipments reported before this confirmation
        confirmed = aftersale.advance(confirmed, aftersale.shipping_status(state))
    new = state.model_copy(update={
        "status": state.status if cancelling else confirmed,
        "correlation": state.correlation.model_copy(
            update={"erp_sales_order": event.erp_sales_order}),
        "erp_confirmed_at": state.erp_confirmed_at or event.posted_at,
        "timeline": aftersale.timeline(state, TimelineEntry(
            event="erp_sales_order_created", system="erp", at=event.posted_at,
            detail=event.erp_sales_order)),
    })
    out = Outcome(state=new, changed=True, first_confirmation=first, stock_commands=list(commits))
    if cancelling:  # cancelled while the post was in flight: now cancel it in the ERP
        reason = state.cancel.reason if state.cancel else (state.cancel_reason or "cancelled")
        out.erp_requests = [ErpCancelRequest(order_key=state.order_key, channel=state.channel,
                                             erp_sales_order=event.erp_sales_order,
                                             reason=reason)]
        return out
    out.wms_commands = [c for c in [aftersale.release_command(new)] if c.lines]
    out.erp_requests = [  # what arrived before this confirmation
        *(aftersale.erp_shipment_request(new, s) for s in aftersale.unposted_shipments(new)),
        *aftersale.unposted_returns(new)]
    return out


def _on_erp_failed(state: OrderState, event: ErpOrderFailed, now: datetime) -> Outcome:
    failed = TimelineEntry(event="erp_failed", system="erp", at=event.failed_at,
                           detail=event.reason[:500])
    if state.status is OrderStatus.CANCEL_PENDING and state.cancel is not None \
            and state.correlation.erp_sales_order is None:
        # cancelled while the post was in flight, and the post failed: nothing is in the ERP
        # (nor, unconfirmed, in the warehouse), so the cancellation completes here and now
        cancel = state.cancel
        return aftersale.cancelled(state, cancel.by, cancel.reason, now, [
            failed, TimelineEntry(
                event="cancel_completed_without_erp", system="retail-sync", at=now,
                detail="the ERP post in flight when the cancellation came failed: the order "
                       "is not in the ERP, nothing to cancel there")])
    if state.status is not OrderStatus.ERP_PENDING:
        return Outcome(state=state)  # a late failure never undoes a confirmation
    new = state.model_copy(update={
        "status": OrderStatus.ERP_FAILED, "timeline": [*state.timeline, failed]})
    return Outcome(state=new, changed=True)


# --- replays of failed commands (through the owner, from the current state) -------------------


def erp_retry_refusal(state: OrderState) -> str | None:
    """Why a replayed ERP post must not go to the ERP for ``state`` as it is now, or None: the
    order is posted as it is now (its current lines, its stock decision)."""
    key, erp = state.order_key, state.correlation.erp_sales_order
    if erp:
        return f"{key} is in the ERP already as {erp}: nothing to post"
    if state.status in (OrderStatus.CANCELLED, OrderStatus.CANCEL_PENDING):
        why = state.cancel_reason or (state.cancel.reason if state.cancel else None)
        return f"{key} is {state.status.value} ({why or 'no reason given'}): not posted"
    if state.status in (OrderStatus.RECEIVED, OrderStatus.STOCK_PENDING):
        return (f"{key} is waiting for its stock answers: it is posted by itself once the stock "
                "decision is taken")
    if state.status not in (OrderStatus.ERP_FAILED, OrderStatus.ERP_PENDING):
        return f"{key} is {state.status.value}: not posted"
    return None


def wms_retry_refusal(state: OrderState, reference: str | None = None) -> str | None:
    """Why a replayed warehouse release (the order's own, or the backorder fulfilment
    ``reference``) must not go to the warehouse for ``state`` as it is now, or None."""
    key = state.order_key
    if state.status in (OrderStatus.CANCELLED, OrderStatus.CANCEL_PENDING):
        why = state.cancel_reason or (state.cancel.reason if state.cancel else None)
        return f"{key} is {state.status.value} ({why or 'no reason given'}): not released"
    if not state.correlation.erp_sales_order:
        return f"{key} is not in the ERP yet: it is released when the ERP confirms it"
    if reference is None or reference == key:
        if state.correlation.wms_fulfilment_id:
            return f"{key} is released already as {state.correlation.wms_fulfilment_id}"
        if state.shipments:
            return f"{key} has shipped already ({len(state.shipments)} shipment(s))"
        if not aftersale.release_command(state).lines:
            return f"{key} has nothing to release to the warehouse"
        return None
    found = next((b for b in state.backorders.values() if b.reference == reference), None)
    if found is None:
        return f"{reference} is not a backorder release of {key}"
    if found.wms_fulfilment_id:
        return f"{reference} is released already as {found.wms_fulfilment_id}"
    return None


def _replay_of(event: RetryErpPost | RetryWmsRelease) -> str:
    return f"replay of exception {event.exception_id} by {event.requested_by}"


def _skipped(state: OrderState, name: str, at: datetime, detail: str) -> Outcome:
    """A replay the order's state refuses: on the timeline once, no exception (nothing failed)."""
    detail = detail[:500]
    if any(t.event == name and t.detail == detail for t in state.timeline):
        return Outcome(state=state)
    return Outcome(state=state.model_copy(update={"timeline": aftersale.timeline(
        state, TimelineEntry(event=name, system="retail-sync", at=at, detail=detail))}),
        changed=True)


def _on_retry_erp_post(state: OrderState, event: RetryErpPost, now: datetime) -> Outcome:
    why = erp_retry_refusal(state)
    if why is not None:
        return _skipped(state, "erp_retry_skipped", event.at, f"{why} ({_replay_of(event)})")
    if state.status is OrderStatus.ERP_PENDING:
        # asked already (a second replay, a redelivery): ask again, the ERP post is exactly-once
        # on the order key (connectors.erpnext.client looks the order up before creating)
        return Outcome(state=state, erp_requests=[_request(state, now)])
    request = _request(state, now)
    lines = ", ".join(f"{ln.sku} {ln.quantity}" for ln in request.order.lines)
    new = state.model_copy(update={
        "status": OrderStatus.ERP_PENDING,
        "timeline": aftersale.timeline(state, TimelineEntry(
            event="erp_retry_requested", system="retail-sync", at=event.at,
            detail=f"{_replay_of(event)}: posting the order as it is now ({lines})"[:500]))})
    return Outcome(state=new, changed=True, erp_requests=[request])


def _on_retry_wms_release(state: OrderState, event: RetryWmsRelease, now: datetime) -> Outcome:
    why = wms_retry_refusal(state, event.reference)
    if why is not None:
        return _skipped(state, "wms_retry_skipped", event.at, f"{why} ({_replay_of(event)})")
    if event.reference is None or event.reference == state.order_key:
        command = aftersale.release_command(state)
    else:
        found = next(b for b in state.backorders.values() if b.reference == event.reference)
        command = aftersale.release_command(state, found.lines, found.reference)
    detail = f"{_replay_of(event)}: releasing {command.reference or state.order_key} as it is now"
    out = _skipped(state, "wms_retry_requested", event.at, detail)  # noted once per replay
    out.wms_commands = [command]
    return out


_HANDLERS: dict[type, Callable[..., Outcome]] = {
    StockAnswered: _on_stock,
    ErpOrderPosted: _on_erp_posted,
    ErpOrderFailed: _on_erp_failed,
    MarketplaceNotified: lambda s, e, now: aftersale.on_notified(s, e),
    FulfilmentReleased: lambda s, e, now: aftersale.on_released(s, e),
    FulfilmentCancelled: aftersale.on_fulfilment_cancelled,
    ShipmentReported: aftersale.on_shipment,
    ErpShipmentPosted: aftersale.on_shipment_posted,
    BackorderReleased: aftersale.on_backorder_released,
    CancelRequested: aftersale.on_cancel,
    ErpOrderCancelled: aftersale.on_erp_cancelled,
    ReturnRequested: aftersale.on_return_requested,
    ReturnReceived: aftersale.on_return_received,
    ErpReturnPosted: aftersale.on_return_posted,
    RetryErpPost: _on_retry_erp_post,
    RetryWmsRelease: _on_retry_wms_release,
}
