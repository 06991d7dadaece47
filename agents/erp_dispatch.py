"""ERP dispatch agent: posts sales orders to the ERP and reports the result as an order event.

Reads erp-requests keyed by order_key with several actors (settings.erp_concurrency), so a slow
ERP does not serialise the whole partition; Faust commits only offsets below the oldest
unfinished request, so a crash re-posts at most the in-flight ones, and the ERP post is
idempotent on the order reference. Transient errors are retried with exponential backoff and
jitter; permanent ones, and transient ones that outlast the budget, become sync exceptions.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from agents.exceptions import record_exception
from agents.retry import backoff_delay
from connectors.base import ErpConnector, ErpPostResult
from connectors.errors import PermanentError, RetryableError
from retail_sync.context import Context
from streams.models import ErpOrderFailed, ErpOrderPosted, ErpPostRequest, ExceptionKind, utcnow


def register(ctx: Context) -> None:
    state: dict[str, ErpConnector] = {}

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
        async for request in stream:
            try:
                await dispatch(ctx, erp(), request)
            except Exception as exc:  # noqa: BLE001 - a bug must not kill the agent or lose it
                await record_exception(
                    ctx, kind=ExceptionKind.INTERNAL, exc=exc, payload=request.model_dump_json(),
                    channel=request.order.channel, order_key=request.order_key,
                    source_topic=ctx.topics.erp_requests.get_topic_name(),
                )

    @ctx.app.on_before_shutdown.connect  # type: ignore[misc]
    async def _close(sender: Any, **kwargs: Any) -> None:
        if "erp" in state:
            await state["erp"].close()


async def dispatch(ctx: Context, erp: ErpConnector, request: ErpPostRequest) -> None:
    settings, metrics = ctx.settings, ctx.metrics
    last_error: RetryableError | None = None
    for attempt in range(1, settings.erp_max_attempts + 1):
        try:
            result = await _post(ctx, erp, request)
        except RetryableError as exc:
            last_error = exc
            metrics.erp_posts.labels(outcome="retry").inc()
            if attempt < settings.erp_max_attempts:
                await asyncio.sleep(backoff_delay(attempt, settings, exc.retry_after))
            continue
        except PermanentError as exc:
            metrics.erp_posts.labels(outcome="permanent").inc()
            await _fail(ctx, request, ExceptionKind.ERP_PERMANENT, exc, attempt)
            return
        metrics.erp_posts.labels(outcome="created" if result.created else "replay").inc()
        await ctx.topics.order_events.send(key=request.order_key, value=ErpOrderPosted(
            order_key=request.order_key, erp_sales_order=result.erp_sales_order,
            created=result.created, posted_at=utcnow(), attempts=attempt,
            erp_created=getattr(result, "created_at", None),
        ))
        return
    metrics.erp_posts.labels(outcome="exhausted").inc()
    reason = f"ERP still failing after {settings.erp_max_attempts} attempts: {last_error}"
    await _fail(ctx, request, ExceptionKind.ERP_EXHAUSTED, reason, settings.erp_max_attempts)


async def _post(ctx: Context, erp: ErpConnector, request: ErpPostRequest) -> ErpPostResult:
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
    ctx: Context, request: ErpPostRequest, kind: ExceptionKind, exc: BaseException | str,
    attempts: int,
) -> None:
    record = await record_exception(
        ctx, kind=kind, exc=exc, payload=request.model_dump_json(), channel=request.order.channel,
        order_key=request.order_key, source_topic=ctx.topics.erp_requests.get_topic_name(),
        attempts=attempts,
    )
    await ctx.topics.order_events.send(key=request.order_key, value=ErpOrderFailed(
        order_key=request.order_key, reason=record.reason, failed_at=utcnow(), attempts=attempts,
    ))
