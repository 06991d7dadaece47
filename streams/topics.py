"""Topic declarations. Every topic is prefixed with the app id; keys decide partitions.

| topic              | key                         | value                |
|--------------------|-----------------------------|----------------------|
| orders-raw         | channel:marketplace order id| RawOrderMessage      |
|                    | (channel:delivery:<id> when the body has no order id)  |
| order-events       | order_key                   | OrderEvent (union)   |
| erp-requests       | order_key                   | ErpPostRequest       |
| poll-ticks         | channel                     | PollTick             |
| sync-exceptions    | order_key or source key     | SyncException        |
| stock-events       | SKU                         | StockEvent (union, streams/events.py) |
| inventory-updates.<channel> | SKU                | InventoryUpdate (one topic per channel we push to) |
| channel-commands.<channel> | order_key           | ChannelCommand (cancel, ship, refund; one per channel) |
| channel-commands   | order_key                   | ChannelCommand of a channel with no outbound (fallback) |
| wms-requests       | order_key                   | WmsCommand (release, cancel, expect return) |
| erp-requests       | order_key                   | ErpCommand (post order, shipment, cancel, return) |
| admin-audit        | target (order key, ...)     | AuditRecord JSON (retail_sync/audit.py), time retention |
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import faust
from aiokafka.partitioner import murmur2
from faust.types import Message

import retail_sync.streams.codecs  # noqa: F401  (registers the codecs)
from retail_sync.streams.models import ExceptionKind, SyncException, truncate_payload

log = logging.getLogger(__name__)


class RecordingTopic(faust.Topic):
    """A topic whose undecodable records become sync-exception records instead of crashing the
    agent that reads it. Faust has already acked the message when this is called."""

    dead_letters: faust.Topic | None = None

    async def on_key_decode_error(self, exc: Exception, message: Message) -> None:
        await self._record(exc, message)

    async def on_value_decode_error(self, exc: Exception, message: Message) -> None:
        await self._record(exc, message)

    async def _record(self, exc: Exception, message: Message) -> None:
        key = message.key.decode("utf-8", "replace") if message.key else None
        log.warning("undecodable record on %s[%s]@%s: %s", message.topic, message.partition,
                    message.offset, exc)
        if self.dead_letters is None:
            return
        record = SyncException(
            kind=ExceptionKind.DECODE,
            reason=f"record on {message.topic} is not a valid {self.value_serializer}: {exc}",
            error_class=type(exc).__name__,
            source_topic=message.topic,
            source_key=key,
            payload=truncate_payload(message.value),
        )
        await self.dead_letters.send(key=key, value=record)


@dataclass(frozen=True)
class Topics:
    raw_orders: faust.TopicT
    order_events: faust.TopicT
    erp_requests: faust.TopicT
    poll_ticks: faust.TopicT
    sync_exceptions: faust.TopicT
    stock_events: faust.TopicT
    channel_commands: faust.TopicT
    wms_requests: faust.TopicT
    #: channel -> its inventory-updates topic: one per channel, so a slow or unreachable
    #: marketplace never holds back another's quantities
    inventory: dict[str, faust.TopicT] = field(default_factory=dict)
    #: channel -> its channel-commands topic (cancel, ship, refund): one per channel we write
    #: to, for the same reason; ``channel_commands`` is the fallback for any other channel
    commands: dict[str, faust.TopicT] = field(default_factory=dict)

    def commands_for(self, channel: str) -> faust.TopicT:
        """Where a command to ``channel``'s marketplace goes: its own topic, or the shared
        fallback when no outbound is configured for it (its agent records the command as an
        exception for a human)."""
        return self.commands.get(channel, self.channel_commands)

    def all(self) -> list[faust.TopicT]:
        return [self.raw_orders, self.order_events, self.erp_requests,
                self.poll_ticks, self.sync_exceptions, self.stock_events,
                self.channel_commands, self.wms_requests, *self.inventory.values(),
                *self.commands.values()]


def _topic(app: faust.App, name: str, codec: str, partitions: int, **kw: Any) -> RecordingTopic:
    return RecordingTopic(
        app,
        topics=[name],
        key_type=str,
        key_serializer="raw",
        value_serializer=codec,
        partitions=partitions,
        **kw,
    )


def admin_audit_topic(app: faust.App, *, prefix: str, partitions: int,
                      retention_days: float) -> faust.TopicT:
    """``<prefix>.admin-audit``: one record per admin action (who, what, target, when, outcome,
    request id), keyed by its target. Deleted by time, not compacted (every record is kept):
    ``retention.ms`` = ``retention_days``, set when the topic is created (``maybe_declare``; an
    existing topic keeps its configuration). Values are the records' JSON (raw bytes)."""
    return faust.Topic(app, topics=[f"{prefix}.admin-audit"], key_type=str, key_serializer="raw",
                       value_serializer="raw", partitions=partitions, deleting=True,
                       retention=timedelta(days=retention_days))


def declare_topics(app: faust.App, *, prefix: str, partitions: int,
                   outbound_channels: Iterable[str] = ()) -> Topics:
    """Create the topic handles for one app; names are ``<prefix>.<topic>``. Each of the
    ``outbound_channels`` gets its own inventory-updates and channel-commands topic."""
    outbound_channels = list(outbound_channels)  # read twice below
    dlq = _topic(app, f"{prefix}.sync-exceptions", "rs.sync_exception", partitions)
    topics = Topics(
        raw_orders=_topic(app, f"{prefix}.orders-raw", "rs.raw_order", partitions),
        order_events=_topic(app, f"{prefix}.order-events", "rs.order_event", partitions),
        erp_requests=_topic(app, f"{prefix}.erp-requests", "rs.erp_request", partitions),
        poll_ticks=_topic(app, f"{prefix}.poll-ticks", "rs.poll_tick", partitions),
        sync_exceptions=dlq,
        inventory={c: _topic(app, f"{prefix}.inventory-updates.{c}", "rs.inventory_update",
                             partitions) for c in outbound_channels},
        stock_events=_topic(app, f"{prefix}.stock-events", "rs.stock_event", partitions),
        channel_commands=_topic(app, f"{prefix}.channel-commands", "rs.channel_command",
                                partitions),
        commands={c: _topic(app, f"{prefix}.channel-commands.{c}", "rs.channel_command",
                            partitions) for c in outbound_channels},
        wms_requests=_topic(app, f"{prefix}.wms-requests", "rs.wms_command", partitions),
    )
    for topic in topics.all():
        topic.dead_letters = dlq  # type: ignore[attr-defined]  # each is a RecordingTopic (_topic)
    return topics


@functools.lru_cache(maxsize=65_536)
def partition_of(key: str, partitions: int) -> int:
    """The partition the producer puts a record keyed ``key`` on (str keys, serializer ``raw``):
    Kafka's default partitioner, murmur2 of the key's bytes, as aiokafka (and so Faust) computes
    it. Batch records (``StockBatch``, ``OrderEvents``, ``ErpBatch``, ``WmsBatch``) group their
    items by it and are keyed by their first item's key, so every item is on its own key's
    partition. Remembered for the last 65,536 keys: aiokafka's murmur2 is pure Python (~1 % of
    the worker, asked several times per order for its key and for its SKUs)."""
    return int(murmur2(key.encode()) & 0x7FFFFFFF) % partitions
