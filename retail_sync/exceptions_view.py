"""The sync-exception topic as an operator sees it: list, summarise, replay.

Reading: ``<app_id>.sync-exceptions`` is read from the beginning up to its current end (no
consumer group, no commits: reading never moves anyone's offsets), each record decoded as a
``SyncException``; undecodable ones are skipped with a note.

Replay: ``plan_replay`` decides, for one record and without any I/O, where its payload goes
back to (topic suffix under the app id, key, value bytes) or why it cannot; ``replay`` sends the
planned records with aiokafka.

Commands built from an order's state are NOT resent as kept: an ERP post (``ErpPostRequest``,
erp_permanent / erp_exhausted / internal on erp-requests) and a warehouse release (``WmsRelease``,
outbound / internal on wms-requests) may predate an edit, a cancellation or a confirmation, so
their replay is a ``RetryErpPost`` / ``RetryWmsRelease`` to the order agent (order-events, keyed
by the order), which builds the command again from the order as it is now or skips it with the
reason on the order's timeline (streams.rules.lifecycle). ``replay(..., verdict=...)`` lets the caller
answer such a record "skipped" at once from the order's current state (the admin door does:
``streams.rules.lifecycle.erp_retry_refusal`` / ``wms_retry_refusal``); the command still goes to the
order agent, which decides again and notes the skip on the timeline. Everything else is a fact
or a command no later event makes wrong (shipments, returns, cancellations, marketplace
commands, raw orders) and is resent as kept. Replay is safe to repeat: every target handler is
idempotent —
the ERP post is idempotent on the order (po_no), the shipment on its shipment id, the return on
its refund id, the cancellation on the sales order; marketplace and warehouse commands are
idempotent at the marketplace/warehouse (order reference, shipment id, refund id). Replaying the
same exception twice (or replaying a record that has meanwhile gone through) therefore creates
nothing twice; it costs one more call to the target.

The value sent is the exception's payload encoded as UTF-8, byte for byte: the topics' codecs
are the JSON of the pydantic models (``streams.codecs``), which is what ``record_exception``
kept. Each payload is validated against the target topic's type before it is planned, so a
truncated (64 KiB) or foreign payload is reported instead of becoming a new decode exception.

Long module: listing, summarising and replaying the exception topic share the record decoding and
the replay plan, and both `retail-sync exceptions` and the admin views use all three.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeGuard, cast

from pydantic import ValidationError

from retail_sync.streams.codecs import decode
from retail_sync.streams.models import ExceptionKind, SyncException, utcnow

log = logging.getLogger(__name__)

#: topic suffix (the name after ``<app_id>.``) -> codec of its values
TOPIC_CODECS: dict[str, str] = {
    "orders-raw": "rs.raw_order",
    "order-events": "rs.order_event",
    "erp-requests": "rs.erp_request",
    "poll-ticks": "rs.poll_tick",
    "stock-events": "rs.stock_event",
    "channel-commands": "rs.channel_command",
    "wms-requests": "rs.wms_command",
}
#: topics no worker reads any more -> why a record from one is not replayed
RETIRED_TOPICS: dict[str, str] = {
    "order-index-updates": "the order index is kept with the order state since issue 16 "
                           "(tables/rocks.py): the order's next change indexes it again; "
                           "nothing reads order-index-updates, nothing to resend",
}
#: per-channel topics: ``<prefix><channel>`` (streams/topics.py)
INVENTORY_PREFIX = "inventory-updates."
COMMANDS_PREFIX = "channel-commands."
PER_CHANNEL_CODECS: dict[str, str] = {
    INVENTORY_PREFIX: "rs.inventory_update",
    COMMANDS_PREFIX: "rs.channel_command",
}

NOT_REPLAYABLE = {
    ExceptionKind.POLL: "a polled channel refused our request: the next poll asks again; "
                        "fix the channel's credentials or query, nothing to resend",
    ExceptionKind.STATE_CONFLICT: "the event contradicts the order's state: resending it would "
                                  "conflict again; reconcile the order instead",
}
INVENTORY_SUPERSEDED = ("inventory updates are absolute quantities: a newer quantity supersedes "
                        "them (the next stock change or full push sends the current one)")
FIX_MAPPING = "fix the mapping and redeliver from the source"
#: topic (under the app id) noting which exception records were replayed, keyed by exception id
REPLAYED_SUFFIX = "sync-exceptions-replayed"


# --- reading ---------------------------------------------------------------------------------


def decode_records(values: Iterable[bytes | None]) -> tuple[list[SyncException], list[str]]:
    """Decode raw topic values; the undecodable ones become notes instead of records."""
    records: list[SyncException] = []
    notes: list[str] = []
    for i, value in enumerate(values):
        try:
            records.append(decode("rs.sync_exception", value or b""))
        except ValidationError as exc:
            notes.append(f"record #{i} is not a SyncException ({exc.error_count()} errors): "
                         f"{(value or b'')[:80]!r}")
    return records, notes


async def load_exceptions(bootstrap: str, topic: str,
                          timeout_s: float = 10.0) -> tuple[list[SyncException], list[str]]:
    """Every SyncException currently on ``topic`` (oldest offset first) and notes on the
    records skipped as undecodable."""
    from retail_sync.stack import read_topic

    messages = await read_topic(bootstrap, topic, timeout_s)
    records, notes = decode_records(m.value for m in messages)
    for note in notes:
        log.warning("%s: %s", topic, note)
    return records, notes


def filter_records(records: Iterable[SyncException], kind: str | ExceptionKind | None = None,
                   channel: str | None = None, older_than_s: float | None = None,
                   newer_than_s: float | None = None,
                   now: datetime | None = None) -> list[SyncException]:
    """The records matching every given criterion (ages are seconds before ``now``)."""
    now = now or utcnow()
    wanted_kind = ExceptionKind(kind) if kind else None
    out = []
    for r in records:
        age = _age(r, now)
        if wanted_kind is not None and r.kind != wanted_kind:
            continue
        if channel is not None and r.channel != channel:
            continue
        if older_than_s is not None and age < older_than_s:
            continue
        if newer_than_s is not None and age > newer_than_s:
            continue
        out.append(r)
    return out


def as_view(records: Iterable[SyncException], now: datetime | None = None,
            limit: int | None = None) -> list[dict[str, Any]]:
    """Newest first, each as JSON-ready dict with ``age_s``."""
    now = now or utcnow()
    ordered = sorted(records, key=lambda r: r.occurred_at, reverse=True)
    if limit is not None:
        ordered = ordered[:max(0, limit)]
    return [{**r.model_dump(mode="json"), "age_s": round(_age(r, now), 3)} for r in ordered]


async def list_exceptions(bootstrap: str, topic: str, *, kind: str | None = None,
                          channel: str | None = None, older_than_s: float | None = None,
                          newer_than_s: float | None = None,
                          limit: int = 200) -> list[dict[str, Any]]:
    """The exceptions on ``topic`` matching the filters, newest first, at most ``limit``."""
    records, _ = await load_exceptions(bootstrap, topic)
    now = utcnow()
    matched = filter_records(records, kind, channel, older_than_s, newer_than_s, now)
    return as_view(matched, now, limit)


def summarise(records: Iterable[SyncException], now: datetime | None = None) -> dict[str, Any]:
    """Counts by kind and by channel, and the oldest age per kind (seconds)."""
    now = now or utcnow()
    by_kind: Counter[str] = Counter()
    by_channel: Counter[str] = Counter()
    oldest: dict[str, float] = {}
    total = 0
    for r in records:
        total += 1
        kind = r.kind.value
        by_kind[kind] += 1
        by_channel[r.channel or "-"] += 1
        oldest[kind] = max(oldest.get(kind, 0.0), round(_age(r, now), 3))
    return {"total": total, "by_kind": dict(sorted(by_kind.items())),
            "by_channel": dict(sorted(by_channel.items())),
            "oldest_age_s_by_kind": dict(sorted(oldest.items()))}


def _age(record: SyncException, now: datetime) -> float:
    return max(0.0, (now - record.occurred_at).total_seconds())


# --- replay planning -------------------------------------------------------------------------


@dataclass(frozen=True)
class ReplayPlan:
    """Where one exception's payload goes back to, or (``suffix`` None) why it does not."""

    suffix: str | None
    key: str | None
    value: bytes | None
    reason: str
    #: "erp_post" / "wms_release": the order agent rebuilds the command from the order's state
    owner: str | None = None


def topic_suffix(source_topic: str | None) -> str | None:
    """``<app_id>.erp-requests`` -> ``erp-requests``, ``<app_id>.channel-commands.amazon`` ->
    ``channel-commands.amazon`` (the app id may itself hold dots)."""
    if not source_topic:
        return None
    for suffix in TOPIC_CODECS:
        if source_topic == suffix or source_topic.endswith("." + suffix):
            return suffix
    for prefix in PER_CHANNEL_CODECS:
        marker = source_topic.rfind(prefix)
        if marker == 0 or (marker > 0 and source_topic[marker - 1] == "."):
            channel = source_topic[marker + len(prefix):]
            return prefix + channel if channel else None
    return None


def _per_channel_prefix(suffix: str) -> str | None:
    return next((p for p in PER_CHANNEL_CODECS if suffix.startswith(p)), None)


def _is_command_topic(suffix: str | None) -> TypeGuard[str]:
    """The shared channel-commands topic or a channel's own."""
    return suffix is not None and (suffix == "channel-commands"
                                   or suffix.startswith(COMMANDS_PREFIX))


def _codec_for(suffix: str) -> str:
    prefix = _per_channel_prefix(suffix)
    return PER_CHANNEL_CODECS[prefix] if prefix else TOPIC_CODECS[suffix]


def _natural_key(suffix: str, obj: Any, record: SyncException) -> str | None:
    """The key the topic is partitioned by (see streams/topics.py)."""
    if suffix in ("order-events", "erp-requests", "wms-requests") or _is_command_topic(suffix):
        return cast("str | None", obj.order_key)
    if suffix == "stock-events" or suffix.startswith(INVENTORY_PREFIX):
        return cast("str | None", obj.sku)
    if suffix == "poll-ticks":
        return cast("str | None", obj.channel)
    # orders-raw: channel:marketplace id, known only from the original key
    return record.source_key or record.order_key


def _resend(record: SyncException, suffix: str) -> ReplayPlan:
    """Plan resending the payload to ``suffix`` if it is a valid record for that topic."""
    codec = _codec_for(suffix)
    value = record.payload.encode("utf-8")
    try:
        obj = decode(codec, value)
    except ValidationError as exc:
        return ReplayPlan(None, None, None, f"payload is not a valid {codec} for {suffix} "
                                            f"({exc.error_count()} errors; truncated?)")
    key = _natural_key(suffix, obj, record)
    return ReplayPlan(suffix, key, value, f"resend to {suffix} keyed {key}")


def _via_owner(plan: ReplayPlan, record: SyncException, requested_by: str,
               now: datetime | None) -> ReplayPlan:
    """A planned resend of an ERP post or a warehouse release becomes a retry command to the
    order agent (see the module docstring); any other plan is kept."""
    from retail_sync.streams.codecs import encode
    from retail_sync.streams.commands import ErpPostRequest, RetryErpPost, RetryWmsRelease, WmsRelease

    if plan.suffix not in ("erp-requests", "wms-requests") or plan.value is None:
        return plan
    command = decode(_codec_for(plan.suffix), plan.value)
    at = now or utcnow()
    event: RetryErpPost | RetryWmsRelease
    if isinstance(command, ErpPostRequest):
        owner = "erp_post"
        event = RetryErpPost(order_key=command.order_key, exception_id=record.exception_id,
                             requested_by=requested_by, at=at)
        what = "post the order to the ERP as it is now (not the request kept here)"
    elif isinstance(command, WmsRelease):
        owner = "wms_release"
        event = RetryWmsRelease(order_key=command.order_key, exception_id=record.exception_id,
                                reference=command.reference, requested_by=requested_by, at=at)
        what = (f"release {command.reference or command.order_key} to the warehouse as the "
                "order is now (not the release kept here)")
    else:
        return plan
    return ReplayPlan("order-events", command.order_key, encode("rs.order_event", event),
                      f"to the order agent ({event.kind}) keyed {command.order_key}: {what}, "
                      "or skip it with the reason on the order's timeline", owner)


def explain_replay(record: SyncException, *, requested_by: str = "replay",
                   now: datetime | None = None) -> ReplayPlan:
    """The replay plan for one record, with its reason either way (pure, no I/O; ``now`` and
    ``requested_by`` go into a retry command to the order agent)."""
    retired = _retired(record.source_topic)
    if retired is not None:
        return ReplayPlan(None, None, None, retired)
    plan = _explain(record)
    return _via_owner(plan, record, requested_by, now)


def _retired(source_topic: str | None) -> str | None:
    """Why a record from ``source_topic`` is not replayed when no worker reads it any more."""
    for retired, why in RETIRED_TOPICS.items():
        if source_topic and (source_topic == retired or source_topic.endswith("." + retired)):
            return why
    return None


def _explain(record: SyncException) -> ReplayPlan:
    kind = record.kind
    suffix = topic_suffix(record.source_topic)
    if kind in NOT_REPLAYABLE:
        return ReplayPlan(None, None, None, NOT_REPLAYABLE[kind])
    if kind in (ExceptionKind.ERP_PERMANENT, ExceptionKind.ERP_EXHAUSTED):
        # the payload is the command that was on erp-requests (a post goes via the order agent)
        return _resend(record, "erp-requests")
    if kind == ExceptionKind.OUTBOUND:
        if record.payload.lstrip().startswith("["):
            return ReplayPlan(None, None, None, INVENTORY_SUPERSEDED)
        if suffix == "wms-requests" or _is_command_topic(suffix):
            return _resend(record, suffix)  # back to the channel's own topic where it has one
        return _resend(record, "channel-commands")
    if kind in (ExceptionKind.MAPPING, ExceptionKind.DECODE):
        if suffix is None or suffix == "orders-raw":
            plan = _resend(record, "orders-raw")
            if plan.suffix is None or not plan.key:
                return ReplayPlan(None, None, None, FIX_MAPPING)
            return plan
        plan = _resend(record, suffix)  # a record our code could not decode then, maybe now
        return plan if plan.suffix else ReplayPlan(None, None, None,
                                                   f"{plan.reason}; redeliver from the source")
    if kind == ExceptionKind.INTERNAL:
        if suffix is None:
            return ReplayPlan(None, None, None,
                              f"source topic {record.source_topic!r} is not one we can resend to")
        if suffix.startswith(INVENTORY_PREFIX) and record.payload.lstrip().startswith("["):
            return ReplayPlan(None, None, None, INVENTORY_SUPERSEDED)
        return _resend(record, suffix)
    return ReplayPlan(None, None, None, f"kind {kind.value} is not replayable")


def plan_replay(record: SyncException) -> tuple[str, str | None, bytes] | None:
    """(topic suffix, key, value bytes) to resend ``record``'s payload, or None when it cannot
    be replayed (``explain_replay`` says why). Safe to repeat: the targets are idempotent."""
    plan = explain_replay(record)
    if plan.suffix is None or plan.value is None:
        return None
    return plan.suffix, plan.key, plan.value


def select(records: Iterable[SyncException], *, ids: Sequence[str] | None = None,
           kind: str | None = None, channel: str | None = None) -> list[SyncException]:
    """The records named by ``ids`` and/or of ``kind``/``channel`` (at least one is required).
    When the same exception_id appears twice on the topic it is selected once."""
    if not ids and not kind and not channel:
        raise ValueError("select exceptions by ids, kind or channel")
    wanted = set(ids or ())
    chosen: dict[str, SyncException] = {}
    for r in filter_records(records, kind, channel):
        if wanted and r.exception_id not in wanted:
            continue
        chosen.setdefault(r.exception_id, r)
    return list(chosen.values())


# --- replay ----------------------------------------------------------------------------------


async def replay(bootstrap: str, app_id: str, records: Iterable[SyncException], *,
                 requested_by: str = "replay") -> list[dict[str, Any]]:
    """Send every replayable record back to ``<app_id>.<suffix>``; one result per record:
    ``{exception_id, replayed, target, reason}``. Repeating a replay is harmless (idempotent
    targets); nothing is removed from the exception topic (it is a log)."""
    from aiokafka import AIOKafkaProducer

    plans = [(r, explain_replay(r, requested_by=requested_by)) for r in records]
    results: list[dict[str, Any]] = []
    producer = None
    if any(p.suffix for _, p in plans):
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    try:
        if producer is not None:
            await producer.start()  # inside: a start that fails (broker away) is stopped too
        for record, plan in plans:
            target = f"{app_id}.{plan.suffix}" if plan.suffix else None
            result = {"exception_id": record.exception_id, "replayed": False, "target": target,
                      "reason": plan.reason}
            if producer is not None and plan.suffix and plan.value is not None:
                try:
                    await producer.send_and_wait(
                        target, plan.value,
                        key=plan.key.encode("utf-8") if plan.key is not None else None)
                    result["replayed"] = True
                except Exception as exc:  # noqa: BLE001 - report per record, go on with the rest
                    result["reason"] = f"send failed: {type(exc).__name__}: {exc}"
                if result["replayed"] and target is not None:  # it is: plan.suffix is set
                    await _mark_replayed(producer, app_id, record.exception_id, target)
            results.append(result)
    finally:
        if producer is not None:
            await producer.stop()
    return results


async def _mark_replayed(producer: Any, app_id: str, exception_id: str, target: str) -> None:
    """Note on ``<app_id>.sync-exceptions-replayed`` that this record went back to ``target``
    (the exception gauges stop counting it; a replay that fails again is a new record).
    Best effort: the replay itself has happened."""
    marker = json.dumps({"exception_id": exception_id, "target": target,
                         "replayed_at": utcnow().isoformat()}).encode()
    try:
        await producer.send_and_wait(replayed_topic_name(app_id), marker,
                                     key=exception_id.encode("utf-8"))
    except Exception as exc:  # noqa: BLE001 - the gauge keeps counting it, nothing else is lost
        log.warning("replay of %s not noted on %s: %r", exception_id,
                    replayed_topic_name(app_id), exc)


def replayed_topic_name(app_id: str) -> str:
    return f"{app_id}.{REPLAYED_SUFFIX}"


async def load_replayed(bootstrap: str, app_id: str, timeout_s: float = 10.0) -> set[str]:
    """Ids of the exception records replayed so far (``_mark_replayed``'s notes)."""
    from retail_sync.stack import read_topic

    ids: set[str] = set()
    for message in await read_topic(bootstrap, replayed_topic_name(app_id), timeout_s):
        if message.key:
            ids.add(message.key.decode("utf-8", "replace"))
    return ids


def declare_replayed_topic(app: Any, app_id: str, partitions: int) -> Any:
    """The markers' topic (compacted: one record per exception id), created at a worker's start
    so that reading it never waits for a topic that does not exist yet."""
    return app.topic(replayed_topic_name(app_id), key_serializer="raw", value_serializer="raw",
                     partitions=partitions, compacting=True)


#: ``verdict(record, plan)``: for a plan to the order agent, why the order's current state
#: refuses it (the answer is "skipped"), or None
Verdict = Callable[[SyncException, ReplayPlan], Awaitable[str | None]]


async def replay_from_topic(bootstrap: str, app_id: str, *, ids: Sequence[str] | None = None,
                            kind: str | None = None, channel: str | None = None,
                            requested_by: str = "replay",
                            verdict: Verdict | None = None) -> list[dict[str, Any]]:
    """Read ``<app_id>.sync-exceptions``, select by ids/kind/channel, replay the selection.
    With ``verdict``, a record the order agent will refuse (its order cancelled meanwhile,
    already in the ERP, ...) is answered ``replayed: false, skipped: true`` with the reason; it
    is still sent, so that the owner decides (again) and notes the skip on the order's
    timeline."""
    records, _ = await load_exceptions(bootstrap, f"{app_id}.sync-exceptions")
    chosen = select(records, ids=ids, kind=kind, channel=channel)
    skips: dict[str, str] = {}
    if verdict is not None:
        for record in chosen:
            plan = explain_replay(record, requested_by=requested_by)
            why = await verdict(record, plan) if plan.owner else None
            if why is not None:
                skips[record.exception_id] = why
    results = await replay(bootstrap, app_id, chosen, requested_by=requested_by)
    return [with_skip(r, skips.get(r["exception_id"])) for r in results]


def with_skip(result: dict[str, Any], why: str | None) -> dict[str, Any]:
    """A replay result answered "skipped" because the order's state refuses it (``why``)."""
    if why is None or not result["replayed"]:
        return result
    return {**result, "replayed": False, "skipped": True,
            "reason": f"skipped: {why} (the order agent notes it on the order's timeline)"}


def bootstrap_of(brokers: Iterable[Any] | str) -> str:
    """``kafka://a:9092,kafka://b:9092`` or Faust's ``app.conf.broker`` (a list of URLs) ->
    ``a:9092,b:9092`` for aiokafka."""
    if isinstance(brokers, str):
        parts = [p.strip() for p in brokers.split(",") if p.strip()]
        return ",".join(p.split("://", 1)[-1].rstrip("/") for p in parts)
    # Faust's URLs are yarl.URL, which has no ``netloc``: host and port it is
    urls: Iterable[Any] = brokers
    return ",".join(f"{u.host}:{u.port}" if getattr(u, "host", None)
                    else str(u).split("://", 1)[-1].rstrip("/") for u in urls)


# --- metrics ---------------------------------------------------------------------------------


class ExceptionsCollector:
    """Prometheus gauges of what is on the exception topic, by kind: how many records, how many
    are still open (not replayed since) and the age of the oldest open one. ``refresh(records,
    replayed=ids)`` (a periodic timer's job: reading the topics is too slow for a scrape) keeps
    the counts and the oldest open time per kind; the age is computed at scrape time, so it keeps
    growing between refreshes. The topic is a log: "on the topic" includes exceptions already
    replayed; a replayed record stops counting as open (a replay that fails again makes a new
    record, which counts from its own time)."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}
        self.open: dict[str, int] = {}
        self.oldest: dict[str, datetime] = {}
        self.refreshed_at: datetime | None = None

    def refresh(self, records: Iterable[SyncException], now: datetime | None = None,
                replayed: Iterable[str] = ()) -> None:
        done = set(replayed)
        counts: Counter[str] = Counter()
        still_open: Counter[str] = Counter()
        oldest: dict[str, datetime] = {}
        for r in records:
            kind = r.kind.value
            counts[kind] += 1
            if r.exception_id in done:
                continue
            still_open[kind] += 1
            if kind not in oldest or r.occurred_at < oldest[kind]:
                oldest[kind] = r.occurred_at
        self.counts, self.open, self.oldest = dict(counts), dict(still_open), oldest
        self.refreshed_at = now or utcnow()

    def collect(self) -> Iterable[Any]:
        from prometheus_client.core import GaugeMetricFamily

        if self.refreshed_at is None:
            return
        now = utcnow()
        count = GaugeMetricFamily("retail_sync_exceptions_on_topic",
                                  "Records on the sync-exceptions topic (replayed ones too), "
                                  "by kind.", labels=["kind"])
        still_open = GaugeMetricFamily("retail_sync_exceptions_open",
                                       "Records on the sync-exceptions topic not replayed since, "
                                       "by kind.", labels=["kind"])
        age = GaugeMetricFamily("retail_sync_exceptions_oldest_age_seconds",
                                "Age of the oldest record on the sync-exceptions topic not "
                                "replayed since, by kind.", labels=["kind"])
        for kind in ExceptionKind:
            count.add_metric([kind.value], self.counts.get(kind.value, 0))
            still_open.add_metric([kind.value], self.open.get(kind.value, 0))
            if kind.value in self.oldest:
                age.add_metric([kind.value],
                               max(0.0, (now - self.oldest[kind.value]).total_seconds()))
        yield count
        yield still_open
        yield age
