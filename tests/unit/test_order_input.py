"""The order agent's input (issue 16): orders-raw and order-events through one topic handle, each
record decoded with its own topic's codec; a raw delivery keyed by its order key is mapped and
applied by the order agent itself (no OrderReceived hop), one keyed otherwise goes on to
order-events under its order key."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import faust
import orjson
import pytest
from faust.types import Message

from retail_sync.agents import orders
from retail_sync.connectors.shopify.mapper import map_order
from retail_sync.settings import Settings
from retail_sync.streams.events import OrderReceived
from retail_sync.streams.models import ExceptionKind, RawOrderMessage
from retail_sync.streams.topics import declare_topics
from tests.fixture_orders import shopify_order
from tests.unit.test_order_validation import _Ctx

NOW = datetime(2026, 12, 4, 18, 0, tzinfo=UTC)


def _raw(body: dict[str, Any], delivery_id: str = "d-1") -> RawOrderMessage:
    return RawOrderMessage(channel="shopify", topic="orders/create", delivery_id=delivery_id,
                           received_at=NOW, body=orjson.dumps(body).decode())


def _message(topic: str, key: str, value: bytes) -> Message:
    return Message(topic=topic, partition=0, offset=0, timestamp=0.0, timestamp_type=0,
                   headers=[], key=key.encode(), value=value, checksum=None)


def test_one_handle_decodes_each_topic_with_its_own_codec() -> None:
    app = faust.App("rs-input-test", broker="kafka://localhost:1", store="memory://")
    topics = declare_topics(app, prefix="rs-input-test", partitions=4)
    ctx = type("Ctx", (), {"app": app, "topics": topics, "settings": Settings()})()
    topic = orders.order_input(ctx)
    raw_name, events_name = (topics.raw_orders.get_topic_name(),
                             topics.order_events.get_topic_name())
    assert sorted(topic.topics) == sorted([raw_name, events_name])
    assert topic.dead_letters is topics.sync_exceptions  # type: ignore[attr-defined]

    raw = _raw(shopify_order())
    event = OrderReceived(order_key="shopify:1", order=map_order(orjson.loads(raw.body)), delivery_id="d-1",
                          received_at=NOW)
    schema = topic.schema
    decoded_raw = schema.loads_value(app, _message(raw_name, "shopify:1",
                                                   raw.model_dump_json().encode()))
    decoded_event = schema.loads_value(app, _message(events_name, "shopify:1",
                                                     event.model_dump_json().encode()))
    assert decoded_raw == raw
    assert decoded_event == event


def record_applied(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, Any]]:
    """What the order agent applies, as (key, event), instead of applying it."""
    applied: list[tuple[str, Any]] = []

    async def handle(ctx: Any, key: str, event: Any, policies: Any = None,
                     outbox: Any = None) -> None:
        applied.append((key, event))

    monkeypatch.setattr(orders, "handle_guarded", handle)
    return applied


async def test_a_raw_delivery_keyed_by_its_order_is_applied_here(
        monkeypatch: pytest.MonkeyPatch) -> None:
    applied = record_applied(monkeypatch)
    ctx = _Ctx(Settings())
    body = shopify_order()
    key = f"shopify:{body['id']}"
    await orders.handle_input(ctx, key, _raw(body))  # type: ignore[arg-type]
    [(applied_key, event)] = applied
    assert applied_key == key and isinstance(event, OrderReceived) and event.order_key == key
    assert ctx.topics.order_events.sent == []  # no extra record per order

    # an order event (order-events) is applied as it is
    await orders.handle_input(ctx, key, event)  # type: ignore[arg-type]
    assert applied[-1] == (key, event)


async def test_a_raw_delivery_keyed_otherwise_goes_to_its_order_keys_partition(
        monkeypatch: pytest.MonkeyPatch) -> None:
    applied = record_applied(monkeypatch)
    ctx = _Ctx(Settings())
    body = shopify_order()
    await orders.handle_input(ctx, "shopify:delivery:d-7", _raw(body, "d-7"))  # type: ignore[arg-type]
    assert applied == []  # not this key's partition: the order agent reading order-events applies it
    [(key, event)] = ctx.topics.order_events.sent
    assert isinstance(event, OrderReceived) and key == event.order_key == f"shopify:{body['id']}"


async def test_an_unmappable_raw_delivery_is_a_mapping_exception_and_nothing_is_applied(
        monkeypatch: pytest.MonkeyPatch) -> None:
    applied = record_applied(monkeypatch)
    ctx = _Ctx(Settings())
    raw = RawOrderMessage(channel="shopify", topic="orders/create", delivery_id="d-8",
                          received_at=NOW, body="not json")
    await orders.handle_input(ctx, "shopify:1", raw)  # type: ignore[arg-type]
    assert applied == [] and ctx.topics.order_events.sent == []
    [(key, record)] = ctx.topics.sync_exceptions.sent
    assert key == "shopify:1" and record.kind is ExceptionKind.MAPPING
