"""ERP dispatch agent: posts sales orders to the ERP and reports the result as an order event.

Reads erp-requests keyed by order_key (a request, or an ``ErpBatch`` of one partition's: each
order's requests in order, different orders side by side) with several actors
(settings.erp_concurrency, which also bounds the calls in flight across them), so a slow ERP does
not serialise the whole partition; the answers of a record go out together, grouped per order
partition (agents/outbox.py), before the record is acked; Faust commits only offsets below the oldest
unfinished request, so a crash re-posts at most the in-flight ones, and a re-post is harmless:
the connector looks the order up by its unique reference (the Custom Field
``custom_marketplace_order_key``) before creating and reads the existing one when the ERP
refuses a duplicate, so the result is the same Sales Order (``created=False``, counted as
``outcome="replay"``). ERPNext itself is not idempotent (see ``connectors.erpnext.client``).
Transient errors are retried with exponential backoff and jitter; permanent ones, and transient
ones that outlast the budget, become sync exceptions.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from retail_sync.agents.deps import AgentDeps
from retail_sync.agents.exceptions import record_exception
from retail_sync.agents.guard import Record, finished_or_exit, guard, topic_name
from retail_sync.agents.outbox import Outbox
from retail_sync.agents.retry import call_with_retries
from retail_sync.connectors.contracts import (
    ErpConnector,
    ErpPostResult,
    Refund,
    SalesOrderPost,
    Shipment,
)
from retail_sync.connectors.errors import PermanentError, RetryableError
from retail_sync.streams.commands import (
    ErpBatch,
    ErpCancelRequest,
    ErpCommand,
    ErpPostRequest,
    ErpReturnRequest,
    ErpShipmentRequest,
)
from retail_sync.streams.events import (
    ErpOrderCancelled,
    ErpOrderFailed,
    ErpOrderPosted,
    ErpReturnPosted,
    ErpShipmentPosted,
)
from retail_sync.streams.models import ExceptionKind, utcnow

log = logging.getLogger(__name__)


def register(ctx: AgentDeps) -> None:
    state: dict[str, ErpConnector] = {}
    in_flight = asyncio.Semaphore(ctx.settings.erp_concurrency)  # shared by the actors

    def erp() -> ErpConnector:
        if "erp" not in state:
            state["erp"] = ctx.erp_factory()
        return state["erp"]

    @ctx.app.agent(
        ctx.topics.erp_requests,
        name=f"{ctx.settings.app_id}.erp-dispatch",
        concurrency=ctx.settings.erp_concurrency,
    )
    async def erp_dispatch(stream: Any) -> None:
        async for record in stream:
            async with finished_or_exit("the ERP dispatch agent's record"):
                outbox = Outbox(ctx.topics, ctx.settings.partitions)
                if isinstance(record, ErpBatch):
                    await dispatch_batch(ctx, erp, record, outbox, in_flight)
                else:
                    async with in_flight:
                        await dispatch_guarded(ctx, erp, record, outbox)
                await outbox.flush()  # the answers, grouped per order partition; then the ack

    @ctx.app.on_before_shutdown.connect  # type: ignore[arg-type]  # mode: its SignalHandlerT accepts no handler
    async def _close(sender: Any, **kwargs: Any) -> None:
        if "erp" in state:
            await state["erp"].close()


async def dispatch_batch(ctx: AgentDeps, erp: Callable[[], ErpConnector], batch: ErpBatch,
                         outbox: Outbox, in_flight: asyncio.Semaphore) -> None:
    """An ``ErpBatch``: each order's requests in order, different orders side by side, at most
    ``erp_concurrency`` calls in flight across the agent's actors."""
    by_order: dict[str, list[ErpCommand]] = {}
    for request in batch.requests:
        by_order.setdefault(request.order_key, []).append(request)
    posts = [r[0] for r in by_order.values() if len(r) == 1 and isinstance(r[0], ErpPostRequest)]
    if len(posts) > 1 and await post_many(ctx, erp, posts, outbox, in_flight):
        for post in posts:
            del by_order[post.order_key]

    async def one_order(requests: list[ErpCommand]) -> None:
        for request in requests:
            async with in_flight:
                await dispatch_guarded(ctx, erp, request, outbox)

    await asyncio.gather(*(one_order(r) for r in by_order.values()))


async def post_many(ctx: AgentDeps, erp: Callable[[], ErpConnector], posts: list[ErpPostRequest],
                    outbox: Outbox, in_flight: asyncio.Semaphore) -> bool:
    """Post ``posts`` in bulk if the connector can (``BulkSalesOrders``: ERPNext's
    ``insert_many``, about five requests per 200 orders), with the retry budget of one post; True when
    every order got its answer. Anything else (the ERP refused one of them, the budget is spent,
    a bug) falls back to posting them one by one, where each order gets its own outcome."""
    try:
        bulk = getattr(erp(), "create_sales_orders", None)
    except Exception:  # noqa: BLE001 - the connector cannot be made: each post records why
        return False
    if bulk is None:
        return False
    breaker, metrics = ctx.breaker("erp"), ctx.metrics
    await breaker.wait_ready()

    async def attempt() -> list[ErpPostResult]:
        try:
            results: list[ErpPostResult] = await bulk([
                SalesOrderPost(p.order_key, p.order, p.backorders or None) for p in posts])
            return results
        except RetryableError:
            metrics.erp_posts.labels(outcome="bulk_retry").inc()
            raise

    async with in_flight:
        started = time.perf_counter()
        try:
            results = await call_with_retries(attempt, ctx.settings)
        except Exception as exc:  # noqa: BLE001 - every failure: one by one, each its outcome
            metrics.erp_posts.labels(outcome="bulk_fallback").inc()
            log.warning("bulk post of %d orders failed (%s): posting them one by one",
                        len(posts), exc)
            return False
        finally:
            metrics.erp_request_seconds.observe(time.perf_counter() - started)
    breaker.record_success()
    for post, result in zip(posts, results, strict=True):
        _posted(ctx, outbox, post.order_key, result, attempts=1)
    return True


def _posted(ctx: AgentDeps, outbox: Outbox, order_key: str, result: ErpPostResult,
            attempts: int) -> None:
    """The ERP holds the order's Sales Order: counted, and told to the order."""
    ctx.metrics.erp_posts.labels(outcome="created" if result.created else "replay").inc()
    outbox.add(ctx.topics.order_events, order_key, ErpOrderPosted(
        order_key=order_key, erp_sales_order=result.erp_sales_order, created=result.created,
        posted_at=utcnow(), attempts=attempts, erp_created=getattr(result, "created_at", None)))


@guard(lambda ctx, erp, request, outbox: Record(
    payload=request.model_dump_json(),
    channel=getattr(request, "channel", None) or request.order.channel,
    order_key=request.order_key, source_topic=topic_name(ctx.topics.erp_requests)))
async def dispatch_guarded(ctx: AgentDeps, erp: Callable[[], ErpConnector],
                           request: ErpCommand, outbox: Outbox) -> None:
    """``dispatch`` with the ERP connector made on first use; a bug becomes a record."""
    await dispatch(ctx, erp(), request, outbox)


async def dispatch(ctx: AgentDeps, erp: ErpConnector, request: ErpCommand,
                   outbox: Outbox) -> None:
    """Carry out one request; its answer goes to ``outbox`` (the record's)."""
    breaker = ctx.breaker("erp")
    await breaker.wait_ready()  # the ERP is down: requests wait here and behind us in Kafka
    if not isinstance(request, ErpPostRequest):
        await dispatch_after_order(ctx, erp, request, outbox)
        return
    settings, metrics = ctx.settings, ctx.metrics
    attempts = 0

    async def post() -> ErpPostResult:
        nonlocal attempts
        attempts += 1
        try:
            return await _post(ctx, erp, request)
        except RetryableError:
            metrics.erp_posts.labels(outcome="retry").inc()
            raise

    try:
        result = await call_with_retries(post, settings)
    except RetryableError as last_error:
        breaker.record_failure()
        metrics.circuit_open.labels(system="erp").set(int(breaker.state != "closed"))
        metrics.erp_posts.labels(outcome="exhausted").inc()
        reason = f"ERP still failing after {settings.erp_max_attempts} attempts: {last_error}"
        await _fail(ctx, request, ExceptionKind.ERP_EXHAUSTED, reason, settings.erp_max_attempts,
                    outbox)
        return
    except PermanentError as exc:
        metrics.erp_posts.labels(outcome="permanent").inc()
        await _fail(ctx, request, ExceptionKind.ERP_PERMANENT, exc, attempts, outbox)
        return
    breaker.record_success()
    _posted(ctx, outbox, request.order_key, result, attempts)


async def dispatch_after_order(
    ctx: AgentDeps, erp: ErpConnector,
    request: ErpShipmentRequest | ErpCancelRequest | ErpReturnRequest, outbox: Outbox,
) -> None:
    """Shipments, cancellations and returns: the ERP's answer goes back to the order as an
    event; a refusal or spent retries become a sync exception (the order waits, visibly)."""
    key = request.order_key
    started = time.perf_counter()
    try:
        event = await call_with_retries(lambda: _after_order_call(erp, request), ctx.settings)
    except (RetryableError, PermanentError) as exc:
        permanent = isinstance(exc, PermanentError)
        ctx.metrics.erp_posts.labels(outcome="permanent" if permanent else "exhausted").inc()
        await record_exception(
            ctx, kind=ExceptionKind.ERP_PERMANENT if permanent else ExceptionKind.ERP_EXHAUSTED,
            exc=f"ERP {request.kind} for {key}: {exc}", payload=request.model_dump_json(),
            channel=request.channel, order_key=key,
            source_topic=ctx.topics.erp_requests.get_topic_name())
        return
    finally:
        ctx.metrics.erp_request_seconds.observe(time.perf_counter() - started)
    ctx.metrics.erp_posts.labels(outcome=request.kind).inc()
    outbox.add(ctx.topics.order_events, key, event)


async def _after_order_call(erp: ErpConnector, request: Any) -> Any:
    now = utcnow
    if isinstance(request, ErpShipmentRequest):
        s = request.shipment
        result = await erp.post_shipment(request.order_key, request.erp_sales_order, Shipment(
            shipment_id=s.shipment_id, order_key=request.order_key,
            lines=request.lines,
            carrier=s.carrier, tracking_number=s.tracking_number,
            shipped_at=s.shipped_at.isoformat()))
        return ErpShipmentPosted(order_key=request.order_key, shipment_id=s.shipment_id,
                                 delivery_note=result.delivery_note,
                                 sales_invoice=result.sales_invoice, at=now())
    if isinstance(request, ErpCancelRequest):
        await erp.cancel_sales_order(request.erp_sales_order, request.reason)
        return ErpOrderCancelled(order_key=request.order_key,
                                 erp_sales_order=request.erp_sales_order, reason=request.reason,
                                 at=now())
    r = request.refund
    returned = await erp.post_return(request.order_key, request.erp_sales_order, Refund(
        refund_id=r.refund_id,
        lines=request.lines,
        amount=format(r.amount, "f"), currency=request.currency, reason=r.reason,
        restock=r.restock))
    return ErpReturnPosted(order_key=request.order_key, refund_id=r.refund_id,
                           credit_note=returned.credit_note,
                           return_delivery_note=returned.return_delivery_note, at=now())


async def _post(ctx: AgentDeps, erp: ErpConnector, request: ErpPostRequest) -> ErpPostResult:
    ctx.metrics.inflight_erp.inc()
    started = time.perf_counter()
    try:
        if request.backorders:
            return await erp.create_sales_order(request.order_key, request.order,
                                                backorders=request.backorders)
        return await erp.create_sales_order(request.order_key, request.order)
    finally:
        ctx.metrics.erp_request_seconds.observe(time.perf_counter() - started)
        ctx.metrics.inflight_erp.dec()


async def _fail(
    ctx: AgentDeps, request: ErpPostRequest, kind: ExceptionKind, exc: BaseException | str,
    attempts: int, outbox: Outbox,
) -> None:
    record = await record_exception(
        ctx, kind=kind, exc=exc, payload=request.model_dump_json(), channel=request.order.channel,
        order_key=request.order_key, source_topic=ctx.topics.erp_requests.get_topic_name(),
        attempts=attempts,
    )
    outbox.add(ctx.topics.order_events, request.order_key, ErpOrderFailed(
        order_key=request.order_key, reason=record.reason, failed_at=utcnow(), attempts=attempts,
    ))
