"""Turning failures into sync-exception records (the dead-letter topic)."""

from __future__ import annotations

import logging

from retail_sync.agents.deps import AgentDeps
from retail_sync.streams.models import ExceptionKind, SyncException, truncate_payload

log = logging.getLogger(__name__)


async def record_exception(
    ctx: AgentDeps,
    *,
    kind: ExceptionKind,
    exc: BaseException | str,
    payload: str | bytes | None,
    channel: str | None = None,
    order_key: str | None = None,
    source_topic: str | None = None,
    source_key: str | None = None,
    attempts: int = 1,
) -> SyncException:
    """Write one exception record and count it; never raises for the caller's sake."""
    reason = exc if isinstance(exc, str) else (str(exc) or type(exc).__name__)
    record = SyncException(
        kind=kind,
        reason=reason,
        error_class="str" if isinstance(exc, str) else type(exc).__name__,
        channel=channel,
        order_key=order_key,
        source_topic=source_topic,
        source_key=source_key,
        payload=truncate_payload(payload),
        attempts=attempts,
    )
    ctx.metrics.sync_exceptions.labels(kind=kind.value, channel=channel or "-").inc()
    log.warning("sync exception %s (%s): %s", kind.value, order_key or source_key, reason)
    await ctx.topics.sync_exceptions.send(key=order_key or source_key, value=record)
    return record
