"""Audit trail of admin actions (issue 13): who did what to which target, when, with what outcome.

Every admin action (cancel, return, exception replay, reconciliation job) gets a request id
(answered in ``X-Request-Id``) and one ``AuditRecord`` on ``<app>.admin-audit`` (key: the target)
**acknowledged by the broker before the action takes effect**: if the write fails or is not
acknowledged within ``RETAIL_SYNC_AUDIT_WRITE_TIMEOUT_S`` the action answers 503 and nothing is
done. The record says the outcome at the door: ``accepted`` (it goes ahead) or ``refused`` (with
the reason and the HTTP status). What happens after an accepted action is recorded too:
``done``/``failed`` (a replay's counts, a reconciliation job's end) and ``refused_later`` (the
order agent refused it on the order's state, e.g. shipped meanwhile; also on the order's timeline).

``GET /audit?target=&actor=&since=&limit=`` reads the topic without a consumer group (like the
exception view), at most ``RETAIL_SYNC_AUDIT_VIEW_SCAN`` of the newest records per partition.
Retention: time-based, ``RETAIL_SYNC_AUDIT_RETENTION_DAYS`` (365) as the topic's ``retention.ms``.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Iterable
from datetime import datetime
from typing import Any, Literal

from aiokafka import AIOKafkaConsumer, TopicPartition
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from retail_sync import broker_watch
from retail_sync.streams.models import UtcDatetime, utcnow
from retail_sync.streams.topics import admin_audit_topic

log = logging.getLogger(__name__)

Outcome = Literal["accepted", "refused", "done", "failed", "refused_later"]
REQUEST_ID_HEADER = "X-Request-Id"


class AuditRecord(BaseModel):
    """One admin action, or what became of it (same ``request_id``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    request_id: str
    at: UtcDatetime = Field(default_factory=utcnow)
    actor: str  # the token's name (``admin_auth.principal_of``); "anonymous" without one
    action: str  # cancel, return, exceptions_replay, reconciliation_job
    target: str  # an order key, "exceptions", "reconciliation:<channel,...>"
    outcome: Outcome
    status: int | None = None  # the HTTP status answered
    reason: str | None = None
    details: dict[str, Any] = Field(default_factory=dict)


class AuditUnavailable(RuntimeError):
    """The audit record was not acknowledged: the action must not take effect (503)."""


def new_request_id() -> str:
    return uuid.uuid4().hex


def actor_of(request: Any) -> str:
    from retail_sync.admin_auth import principal_of

    principal = principal_of(request)
    return principal.name if principal is not None else "anonymous"


def topic_of(ctx: Any) -> Any:
    """This app's audit topic handle (declared once per context)."""
    topic = getattr(ctx, "admin_audit_topic", None)
    if topic is None:
        topic = admin_audit_topic(ctx.app, prefix=ctx.settings.app_id,
                                  partitions=ctx.settings.partitions,
                                  retention_days=ctx.settings.audit_retention_days)
        ctx.admin_audit_topic = topic
    return topic


def register(ctx: Any) -> None:
    """Create the audit topic with its retention at start (the first send would create it with
    the broker's defaults otherwise)."""
    topic = topic_of(ctx)

    @ctx.app.task  # type: ignore[untyped-decorator]  # Faust: @no_type_check
    async def _declare_admin_audit() -> None:
        try:
            await topic.maybe_declare()
        except Exception as exc:  # noqa: BLE001 - the first write will try again
            log.warning("admin-audit topic not declared at start: %r", exc)


async def write(ctx: Any, record: AuditRecord) -> None:
    """Send ``record`` and wait for the broker's acknowledgement; ``AuditUnavailable`` when the
    broker is known to be away, the send fails or no ack comes within the timeout."""
    watch = broker_watch.watch_of(ctx.app)
    if watch is not None and not watch.accepting(ctx.app):
        raise AuditUnavailable(f"the audit record cannot be written: {watch.refusal(ctx.app)}")
    topic = topic_of(ctx)
    timeout_s = ctx.settings.audit_write_timeout_s

    async def send() -> None:
        await topic.maybe_declare()  # once per process (Faust remembers it), with retention.ms
        pending = await topic.send(key=record.target, value=record.model_dump_json().encode())
        await asyncio.shield(pending)  # a timed-out record may still land: a duplicate, no loss

    try:
        await asyncio.wait_for(send(), timeout_s)
    except TimeoutError:
        raise AuditUnavailable(f"the broker did not acknowledge the audit record within "
                               f"{timeout_s:g} s; nothing was done, retry") from None
    except Exception as exc:  # noqa: BLE001 - any failure means: do nothing
        raise AuditUnavailable(f"the audit record could not be written ({type(exc).__name__}: "
                               f"{exc}); nothing was done, retry") from None


async def note(ctx: Any, record: AuditRecord) -> None:
    """Best effort for what follows an action already audited (done, failed, refused later):
    logged when the broker does not take it, never raised."""
    try:
        await write(ctx, record)
    except AuditUnavailable as exc:
        log.warning("audit record %s/%s not written: %s", record.request_id, record.outcome, exc)


async def refused_later(ctx: Any, key: str, previous: Any, event: Any, problem: str,
                        state: Any) -> None:
    """The order agent refused an admin action it had accepted at the door (the order changed
    meanwhile): a ``refused_later`` record under the action's request id. The action is the
    event itself (a cancellation, a return) or, for a cancellation the warehouse could not stop
    (``FulfilmentCancelled`` not ok, or the shipment came first), the cancellation it waited on."""
    from retail_sync.streams.events import CancelRequested, FulfilmentCancelled, ShipmentReported

    request_id, actor = getattr(event, "request_id", None), getattr(event, "actor", None)
    action = "cancel" if isinstance(event, CancelRequested) else "return"
    pending = getattr(previous, "cancel", None)
    if request_id is None and pending is not None and pending.request_id and \
            isinstance(event, FulfilmentCancelled | ShipmentReported) and \
            getattr(state, "cancel", None) is None:
        request_id, actor, action = pending.request_id, pending.actor, "cancel"
    if not request_id:
        return
    await note(ctx, AuditRecord(request_id=request_id, actor=actor or "anonymous",
                                action=action, target=key, outcome="refused_later",
                                reason=problem[:1000]))


# --- reading -----------------------------------------------------------------------------------


def decode(values: Iterable[bytes | None]) -> tuple[list[AuditRecord], int]:
    records, bad = [], 0
    for value in values:
        try:
            records.append(AuditRecord.model_validate_json(value or b""))
        except ValidationError:
            bad += 1
    return records, bad


def select(records: Iterable[AuditRecord], *, target: str | None = None, actor: str | None = None,
           since: datetime | None = None, limit: int = 100) -> list[AuditRecord]:
    """Newest first, at most ``limit``, matching every given filter."""
    chosen = [r for r in records if (target is None or r.target == target)
              and (actor is None or r.actor == actor) and (since is None or r.at >= since)]
    chosen.sort(key=lambda r: r.at, reverse=True)
    return chosen[:max(0, limit)]


async def read_recent(bootstrap: str, topic: str, per_partition: int,
                      timeout_s: float = 10.0) -> tuple[list[bytes | None], bool]:
    """The values of at most the ``per_partition`` newest records of each partition of
    ``topic``, and whether older records were left unread."""
    from retail_sync.stack import _behind, _partitions
    from retail_sync.tansu_compat import true_end_offsets

    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                                auto_offset_reset="earliest")
    try:
        await consumer.start()  # inside: a start that fails (broker away) is stopped too
        partitions = await _partitions(consumer, topic, min(timeout_s, 2.0))
        if not partitions:
            return [], False
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(tps)
        begins = await consumer.beginning_offsets(tps)
        ends = await true_end_offsets(bootstrap, await consumer.end_offsets(tps))
        truncated = False
        for tp in tps:
            start = max(begins[tp], ends[tp] - per_partition)
            truncated = truncated or start > begins[tp]
            consumer.seek(tp, start)
        values: list[bytes | None] = []
        deadline = asyncio.get_running_loop().time() + timeout_s
        while asyncio.get_running_loop().time() < deadline and await _behind(consumer, ends):
            batch = await consumer.getmany(*tps, timeout_ms=200)
            for tp, msgs in batch.items():
                values.extend(m.value for m in msgs if m.offset < ends[tp])
        return values, truncated
    finally:
        await consumer.stop()


def as_view(records: Iterable[AuditRecord]) -> list[dict[str, Any]]:
    return [r.model_dump(mode="json") for r in records]
