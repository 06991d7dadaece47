"""The exception view and replay planning: pure, no broker."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import orjson
import pytest
from faust.serializers import codecs

import retail_sync.streams.codecs  # noqa: F401  (registers the codecs)
from retail_sync.exceptions_view import (
    FIX_MAPPING,
    INVENTORY_SUPERSEDED,
    as_view,
    bootstrap_of,
    decode_records,
    explain_replay,
    filter_records,
    plan_replay,
    select,
    summarise,
    topic_suffix,
    with_skip,
)
from retail_sync.streams.commands import (
    ErpPostRequest,
    ErpShipmentRequest,
    InventoryUpdate,
    LineRequest,
    MarketplaceShipment,
    ReserveStock,
    RetryErpPost,
    RetryWmsRelease,
    WmsCancel,
    WmsRelease,
)
from retail_sync.streams.models import (
    ExceptionKind,
    LineUnits,
    Money,
    Order,
    OrderLine,
    RawOrderMessage,
    ShipmentRecord,
    SyncException,
)

NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
APP = "retail-sync"


def usd(v: str) -> Money:
    return Money(amount=Decimal(v), currency="USD")


def order(oid: str = "1001") -> Order:
    line = OrderLine(line_id="l1", sku="SKU-1", quantity=2, unit_price=usd("10"), tax=usd("0"),
                     discount=usd("0"))
    return Order(channel="shopify", marketplace_order_id=oid, created_at=NOW, updated_at=NOW,
                 currency="USD", lines=[line], subtotal=usd("20"), shipping=usd("0"),
                 tax_total=usd("0"), discount_total=usd("0"), total=usd("20"))


def erp_post(oid: str = "1001") -> ErpPostRequest:
    o = order(oid)
    return ErpPostRequest(order_key=o.order_key, order=o, received_at=NOW, requested_at=NOW)


def shipment() -> ShipmentRecord:
    return ShipmentRecord(shipment_id="S1", lines={"l1": 2}, carrier="ups",
                          tracking_number="1Z", shipped_at=NOW)


def exc(kind: ExceptionKind, payload: str, *, channel: str | None = "shopify",
        source_topic: str | None = None, source_key: str | None = None,
        order_key: str | None = None, age_s: float = 60.0, eid: str | None = None
        ) -> SyncException:
    extra = {"exception_id": eid} if eid else {}
    return SyncException(kind=kind, reason="r", error_class="E", channel=channel,
                         source_topic=source_topic, source_key=source_key, order_key=order_key,
                         payload=payload, occurred_at=NOW - timedelta(seconds=age_s), **extra)


# --- reading ------------------------------------------------------------------------------


@pytest.fixture
def records() -> list[SyncException]:
    return [
        exc(ExceptionKind.ERP_PERMANENT, "{}", age_s=10, eid="a"),
        exc(ExceptionKind.ERP_PERMANENT, "{}", channel="amazon", age_s=500, eid="b"),
        exc(ExceptionKind.MAPPING, "{}", age_s=100, eid="c"),
        exc(ExceptionKind.POLL, "", channel=None, age_s=3600, eid="d"),
    ]


def test_filter_by_kind_channel_and_age(records) -> None:
    ids = lambda rs: [r.exception_id for r in rs]  # noqa: E731
    assert ids(filter_records(records, "erp_permanent", now=NOW)) == ["a", "b"]
    assert ids(filter_records(records, ExceptionKind.ERP_PERMANENT, "amazon", now=NOW)) == ["b"]
    assert ids(filter_records(records, channel="shopify", now=NOW)) == ["a", "c"]
    assert ids(filter_records(records, older_than_s=100, now=NOW)) == ["b", "c", "d"]
    assert ids(filter_records(records, newer_than_s=100, now=NOW)) == ["a", "c"]
    assert ids(filter_records(records, older_than_s=50, newer_than_s=1000, now=NOW)) == ["b", "c"]
    assert ids(filter_records(records, now=NOW)) == ["a", "b", "c", "d"]
    with pytest.raises(ValueError):
        filter_records(records, "no-such-kind", now=NOW)


def test_view_is_newest_first_with_age_and_limit(records) -> None:
    view = as_view(records, NOW)
    assert [v["exception_id"] for v in view] == ["a", "c", "b", "d"]
    assert [v["age_s"] for v in view] == [10, 100, 500, 3600]
    assert view[0]["kind"] == "erp_permanent"
    orjson.dumps(view)  # JSON-ready
    assert [v["exception_id"] for v in as_view(records, NOW, limit=2)] == ["a", "c"]


def test_summarise_counts_and_oldest_age(records) -> None:
    s = summarise(records, NOW)
    assert s == {
        "total": 4,
        "by_kind": {"erp_permanent": 2, "mapping": 1, "poll": 1},
        "by_channel": {"-": 1, "amazon": 1, "shopify": 2},
        "oldest_age_s_by_kind": {"erp_permanent": 500, "mapping": 100, "poll": 3600},
    }
    assert summarise([], NOW)["total"] == 0


def test_decode_skips_undecodable_with_a_note(records) -> None:
    values = [r.model_dump_json().encode() for r in records[:2]] + [b"not json", None]
    decoded, notes = decode_records(values)
    assert [r.exception_id for r in decoded] == ["a", "b"]
    assert len(notes) == 2 and "#2" in notes[0]


def test_select_by_ids_or_kind_dedups(records) -> None:
    assert [r.exception_id for r in select(records + records[:1], ids=["a", "d"])] == ["a", "d"]
    assert [r.exception_id for r in select(records, kind="erp_permanent")] == ["a", "b"]
    with pytest.raises(ValueError):
        select(records)


def test_topic_suffix_and_bootstrap() -> None:
    assert topic_suffix(f"{APP}.erp-requests") == "erp-requests"
    assert topic_suffix("my.app.v2.orders-raw") == "orders-raw"
    assert topic_suffix(f"{APP}.inventory-updates.amazon") == "inventory-updates.amazon"
    assert topic_suffix(f"{APP}.channel-commands") == "channel-commands"
    assert topic_suffix(f"{APP}.channel-commands.amazon") == "channel-commands.amazon"
    assert topic_suffix("my.app.v2.channel-commands.walmart") == "channel-commands.walmart"
    assert topic_suffix(f"{APP}.channel-commands.") is None
    assert topic_suffix(f"{APP}.elsewhere") is None
    assert topic_suffix(None) is None
    assert bootstrap_of("kafka://a:9092,kafka://b:9093") == "a:9092,b:9093"
    import faust
    app = faust.App("bootstrap-test", broker="kafka://k1:9092;kafka://k2:9093")
    assert bootstrap_of(app.conf.broker) == "k1:9092,k2:9093"


# --- replay planning ------------------------------------------------------------------------


@pytest.mark.parametrize("kind", [ExceptionKind.ERP_PERMANENT, ExceptionKind.ERP_EXHAUSTED,
                                  ExceptionKind.INTERNAL])
def test_a_failed_erp_post_is_replayed_through_the_order_agent_not_resent(kind) -> None:
    """The kept ErpPostRequest may predate an edit or a cancellation: the replay asks the order
    agent to post the order as it is now (RetryErpPost on order-events, keyed by the order)."""
    request = erp_post()
    record = exc(kind, request.model_dump_json(), source_topic=f"{APP}.erp-requests",
                 order_key=request.order_key)
    plan = explain_replay(record, requested_by="ops", now=NOW)
    assert (plan.suffix, plan.key, plan.owner) == ("order-events", "shopify:1001", "erp_post")
    assert "as it is now" in plan.reason
    event = codecs.loads("rs.order_event", plan.value)
    assert event == RetryErpPost(order_key="shopify:1001", exception_id=record.exception_id,
                                 requested_by="ops", at=NOW)
    assert request.model_dump_json().encode() not in plan.value
    assert plan_replay(record)[:2] == ("order-events", "shopify:1001")


@pytest.mark.parametrize("kind", [ExceptionKind.OUTBOUND, ExceptionKind.INTERNAL])
def test_a_failed_warehouse_release_is_replayed_through_the_order_agent(kind) -> None:
    release = WmsRelease(order_key="shopify:1001", erp_sales_order="SO-1", reference="shopify:1001#bo1",
                         lines=[LineUnits(line_id="l1", sku="SKU-1", quantity=2)])
    record = exc(kind, release.model_dump_json(), source_topic=f"{APP}.wms-requests")
    plan = explain_replay(record, now=NOW)
    assert (plan.suffix, plan.key, plan.owner) == ("order-events", "shopify:1001", "wms_release")
    event = codecs.loads("rs.order_event", plan.value)
    assert isinstance(event, RetryWmsRelease) and event.reference == "shopify:1001#bo1"


def test_a_replay_the_order_refuses_is_answered_skipped() -> None:
    sent = {"exception_id": "a", "replayed": True, "target": "t", "reason": "r"}
    assert with_skip(sent, None) == sent
    skipped = with_skip(sent, "shopify:1 is cancelled (fraud): not posted")
    assert skipped["replayed"] is False and skipped["skipped"] is True
    assert skipped["reason"].startswith("skipped: shopify:1 is cancelled (fraud)")
    failed = {**sent, "replayed": False, "reason": "send failed: x"}
    assert with_skip(failed, "whatever") == failed  # a send that failed stays a failure


def test_erp_shipment_command_replays_too() -> None:
    cmd = ErpShipmentRequest(order_key="shopify:1001", channel="shopify", erp_sales_order="SO-1",
                             shipment=shipment(),
                             lines=[LineUnits(line_id="l1", sku="SKU-1", quantity=2)])
    plan = plan_replay(exc(ExceptionKind.ERP_EXHAUSTED, cmd.model_dump_json()))
    assert plan is not None and plan[:2] == ("erp-requests", "shopify:1001")
    assert codecs.loads("rs.erp_request", plan[2]) == cmd


def test_truncated_erp_payload_is_not_replayed() -> None:
    record = exc(ExceptionKind.ERP_PERMANENT, erp_post().model_dump_json()[:50])
    assert plan_replay(record) is None
    assert "not a valid rs.erp_request" in explain_replay(record).reason


def ship_command() -> MarketplaceShipment:
    return MarketplaceShipment(order_key="shopify:1001", channel="shopify",
                               marketplace_order_id="1001", shipment=shipment(),
                               lines=[LineUnits(line_id="l1", sku="SKU-1", quantity=2)],
                               requested_at=NOW)


def test_outbound_channel_command_goes_back_to_channel_commands() -> None:
    """A record from the shared topic (before per-channel topics, or a channel without an
    outbound) goes back there; the fallback agent forwards it to the channel's own topic."""
    cmd = ship_command()
    record = exc(ExceptionKind.OUTBOUND, cmd.model_dump_json(),
                 source_topic=f"{APP}.channel-commands", order_key=cmd.order_key)
    suffix, key, value = plan_replay(record)
    assert (suffix, key) == ("channel-commands", "shopify:1001")
    assert codecs.loads("rs.channel_command", value) == cmd
    no_topic = exc(ExceptionKind.OUTBOUND, cmd.model_dump_json(), order_key=cmd.order_key)
    assert plan_replay(no_topic)[:2] == ("channel-commands", "shopify:1001")


@pytest.mark.parametrize("kind", [ExceptionKind.OUTBOUND, ExceptionKind.INTERNAL])
def test_channel_command_goes_back_to_its_channels_own_topic(kind) -> None:
    cmd = ship_command()
    record = exc(kind, cmd.model_dump_json(), source_topic=f"{APP}.channel-commands.shopify",
                 order_key=cmd.order_key)
    suffix, key, value = plan_replay(record)
    assert (suffix, key) == ("channel-commands.shopify", "shopify:1001")
    assert codecs.loads("rs.channel_command", value) == cmd
    truncated = exc(kind, cmd.model_dump_json()[:40],
                    source_topic=f"{APP}.channel-commands.shopify")
    assert plan_replay(truncated) is None
    assert "not a valid rs.channel_command" in explain_replay(truncated).reason


def test_outbound_warehouse_command_goes_back_to_wms_requests() -> None:
    cmd = WmsCancel(order_key="shopify:1001")
    record = exc(ExceptionKind.OUTBOUND, cmd.model_dump_json(),
                 source_topic=f"{APP}.wms-requests")
    assert plan_replay(record)[:2] == ("wms-requests", "shopify:1001")


def test_outbound_inventory_updates_are_superseded() -> None:
    u = InventoryUpdate(channel="amazon", sku="SKU-1", quantity=3, cause="erp", cause_at=NOW,
                        computed_at=NOW)
    record = exc(ExceptionKind.OUTBOUND, "[" + u.model_dump_json() + "]", channel="amazon",
                 source_key="amazon")
    assert plan_replay(record) is None
    assert explain_replay(record).reason == INVENTORY_SUPERSEDED


def raw_message(body: str = '{"id": 1001}') -> RawOrderMessage:
    return RawOrderMessage(channel="shopify", topic="orders/create", delivery_id="d-1",
                           received_at=NOW, body=body)


@pytest.mark.parametrize("kind", [ExceptionKind.MAPPING, ExceptionKind.DECODE])
def test_raw_body_is_not_replayed_fix_the_mapping(kind) -> None:
    record = exc(kind, '{"id": 1001, "line_items": []}', source_topic=f"{APP}.orders-raw",
                 source_key="shopify:1001")
    assert plan_replay(record) is None
    assert explain_replay(record).reason == FIX_MAPPING
    webhook = exc(kind, "not json {", source_key="shopify:delivery:d-1")
    assert plan_replay(webhook) is None
    assert explain_replay(webhook).reason == FIX_MAPPING


@pytest.mark.parametrize("kind", [ExceptionKind.MAPPING, ExceptionKind.DECODE])
def test_full_raw_order_message_is_resent_to_orders_raw(kind) -> None:
    raw = raw_message()
    record = exc(kind, raw.model_dump_json(), source_topic=f"{APP}.orders-raw",
                 source_key="shopify:1001")
    suffix, key, value = plan_replay(record)
    assert (suffix, key) == ("orders-raw", "shopify:1001")
    assert codecs.loads("rs.raw_order", value) == raw


def test_decode_on_another_topic_resends_if_it_now_decodes() -> None:
    reserve = ReserveStock(sku="SKU-1", order_key="shopify:1001", channel="shopify",
                           lines=[LineRequest(line_id="l1", quantity=2)], requested_at=NOW)
    record = exc(ExceptionKind.DECODE, reserve.model_dump_json(),
                 source_topic=f"{APP}.stock-events", source_key="SKU-1")
    assert plan_replay(record)[:2] == ("stock-events", "SKU-1")
    bad = exc(ExceptionKind.DECODE, "\x00garbage", source_topic=f"{APP}.stock-events")
    assert plan_replay(bad) is None
    assert "redeliver from the source" in explain_replay(bad).reason


def test_a_record_of_the_retired_index_topic_is_not_replayed_and_says_why() -> None:
    for kind in (ExceptionKind.DECODE, ExceptionKind.INTERNAL, ExceptionKind.MAPPING):
        record = exc(kind, '{"external_id": "#1001", "order_key": "shopify:1001"}',
                     source_topic=f"{APP}.order-index-updates", source_key="#1001")
        assert plan_replay(record) is None
        assert "kept with the order state" in explain_replay(record).reason


def test_internal_resends_to_its_source_topic_with_the_topic_key() -> None:
    request = erp_post("77")  # an ERP post: via the order agent (test above)
    record = exc(ExceptionKind.INTERNAL, request.model_dump_json(),
                 source_topic=f"{APP}.erp-requests", order_key=request.order_key)
    assert plan_replay(record)[:2] == ("order-events", "shopify:77")

    raw = raw_message()
    record = exc(ExceptionKind.INTERNAL, raw.model_dump_json(),
                 source_topic=f"{APP}.orders-raw", source_key="shopify:1001")
    assert plan_replay(record) == ("orders-raw", "shopify:1001", raw.model_dump_json().encode())

    reserve = ReserveStock(sku="SKU-1", order_key="shopify:1001", channel="shopify",
                           lines=[LineRequest(line_id="l1", quantity=2)], requested_at=NOW)
    record = exc(ExceptionKind.INTERNAL, reserve.model_dump_json(),
                 source_topic=f"{APP}.stock-events")
    assert plan_replay(record)[:2] == ("stock-events", "SKU-1")


def test_internal_not_for_its_topic_or_without_topic_is_not_replayed() -> None:
    wrong = exc(ExceptionKind.INTERNAL, erp_post().model_dump_json(),
                source_topic=f"{APP}.channel-commands")
    assert plan_replay(wrong) is None
    nowhere = exc(ExceptionKind.INTERNAL, erp_post().model_dump_json())
    assert plan_replay(nowhere) is None
    u = InventoryUpdate(channel="amazon", sku="SKU-1", quantity=3, cause="erp", cause_at=NOW,
                        computed_at=NOW)
    batch = exc(ExceptionKind.INTERNAL, "[" + u.model_dump_json() + "]",
                source_topic=f"{APP}.inventory-updates.amazon")
    assert explain_replay(batch).reason == INVENTORY_SUPERSEDED
    single = exc(ExceptionKind.INTERNAL, u.model_dump_json(),
                 source_topic=f"{APP}.inventory-updates.amazon")
    assert plan_replay(single)[:2] == ("inventory-updates.amazon", "SKU-1")


@pytest.mark.parametrize("kind", [ExceptionKind.POLL, ExceptionKind.STATE_CONFLICT])
def test_poll_and_state_conflict_are_not_replayable(kind) -> None:
    record = exc(kind, erp_post().model_dump_json(), source_topic=f"{APP}.order-events")
    assert plan_replay(record) is None
    assert explain_replay(record).reason


def test_every_kind_has_a_plan_or_a_reason() -> None:
    for kind in ExceptionKind:
        plan = explain_replay(exc(kind, "{}"))
        assert plan.reason and (plan.suffix is None) == (plan_replay(exc(kind, "{}")) is None)


def test_exceptions_collector_exports_counts_and_oldest_age(records) -> None:
    from prometheus_client import CollectorRegistry, generate_latest

    from retail_sync.exceptions_view import ExceptionsCollector

    registry = CollectorRegistry()
    collector = ExceptionsCollector()
    registry.register(collector)
    assert b"retail_sync_exceptions_on_topic" not in generate_latest(registry)  # not refreshed
    collector.refresh(records, NOW)
    assert registry.get_sample_value("retail_sync_exceptions_on_topic",
                                     {"kind": "erp_permanent"}) == 2
    assert registry.get_sample_value("retail_sync_exceptions_on_topic", {"kind": "outbound"}) == 0
    assert registry.get_sample_value("retail_sync_exceptions_oldest_age_seconds",
                                     {"kind": "poll"}) >= 3600
    assert registry.get_sample_value("retail_sync_exceptions_oldest_age_seconds",
                                     {"kind": "outbound"}) is None
