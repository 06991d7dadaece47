"""Masking of personal data (retail_sync/pii.py) in documents, raw bodies, free text and logs."""

from __future__ import annotations

import logging

import orjson

from retail_sync import pii
from retail_sync.connectors.shopify.mapper import map_order
from retail_sync.simulators.shopify.simulator import ShopifyOrderFactory
from retail_sync.startup_checks import MaskedLogRecord
from retail_sync.streams.models import RawOrderMessage, SyncException, utcnow


def _shopify_order() -> dict:
    return ShopifyOrderFactory(seed=3).order()


def _personal_values(body: dict) -> list[str]:
    addr = body["shipping_address"]
    return [body["email"], addr["name"], addr["first_name"] + " " + addr["last_name"],
            addr["address1"], addr["phone"], body["customer"]["email"]]


def test_masked_forms_keep_enough_to_recognise() -> None:
    assert pii.mask_email("jane.doe.123@example.com") == "j***@e***.com"
    assert pii.mask_phone("+1 555-625-1199") == "***-***-1199"
    assert pii.mask_name("Jane Doe") == "J. D."
    assert pii.mask_street("126 Chestnut Street") == "1*** C*** S***"
    assert pii.mask_postal("K1A 0B1") == "K1***"


def test_canonical_order_masked_by_field_names() -> None:
    body = _shopify_order()
    order = map_order(body)
    doc = orjson.loads(order.model_dump_json())
    masked = pii.mask(doc)
    text = orjson.dumps(masked).decode()
    for value in _personal_values(body):
        assert value not in text, value
    assert masked["customer"]["email"].endswith(".com") and "***@" in masked["customer"]["email"]
    assert masked["shipping_address"]["city"] == doc["shipping_address"]["city"]  # kept
    assert masked["shipping_address"]["country_code"] == doc["shipping_address"]["country_code"]
    assert masked["lines"] == doc["lines"]  # SKUs, titles, properties: not personal
    assert masked["marketplace_order_id"] == doc["marketplace_order_id"]
    assert pii.mask(masked) == masked  # idempotent: a remote worker's masked answer stays so


def test_new_fields_under_usual_names_are_covered_at_any_depth() -> None:
    doc = {"order": {"gift": {"recipient": {"name": "Ada Lovelace", "mobile": "0044 20 7946 0958"},
                              "sender_email": "ada@example.org"},
                     "lines": [{"name": "Blue mug", "properties": [{"name": "Engraving"}]}],
                     "AddressLine1": "12 Baker Street", "PostalCode": "NW1 6XE"}}
    masked = pii.mask(doc)["order"]
    assert masked["gift"]["recipient"] == {"name": "A. L.", "mobile": "***-***-0958"}
    assert masked["gift"]["sender_email"] == "a***@e***.org"
    assert masked["lines"][0]["name"] == "Blue mug"  # a product, not a person
    assert masked["lines"][0]["properties"][0]["name"] == "Engraving"
    assert masked["AddressLine1"] == "1*** B*** S***" and masked["PostalCode"] == "NW***"


def test_exception_payload_with_raw_body_is_masked_in_the_view_not_in_the_record() -> None:
    body = _shopify_order()
    raw = RawOrderMessage(channel="shopify", topic="orders/create", delivery_id="d-1",
                          received_at=utcnow(), body=orjson.dumps(body).decode())
    record = SyncException(kind="mapping", reason=f"bad order from {body['email']}",
                           error_class="ValueError", payload=raw.model_dump_json())
    view = pii.mask(record.model_dump(mode="json"))
    text = orjson.dumps(view).decode()
    for value in _personal_values(body):
        assert value not in text, value
    # the stored record is unchanged (replay resends it), the view's payload still parses
    assert body["email"] in record.payload
    inner = orjson.loads(orjson.loads(view["payload"])["body"])
    assert inner["id"] == body["id"] and inner["line_items"] == body["line_items"]


def test_free_text_csv_and_reprs() -> None:
    csv = "order_ref,buyer_email\nR-1,buyer77@example.de\n"
    assert "buyer77@example.de" not in pii.mask_text(csv)
    text = "input_value={'first_name': 'Jane', 'last_name': 'Doe', 'phone': '5556251199'}"
    masked = pii.mask_text(text)
    assert "Jane" not in masked and "Doe" not in masked and "5556251199" not in masked
    # order ids, timestamps, addresses of machines are left alone
    keep = ("amazon:902-3159896-1390916 walmart:1796277083022 at 2024-06-15T10:30:00Z "
            "broker 192.168.100.200:9092 worker name='worker-1'")
    assert pii.mask_text(keep) == keep


def test_log_records_are_masked(caplog) -> None:
    record = MaskedLogRecord("x", logging.WARNING, __file__, 1,
                             "order %s from %s (%s)", ("shopify:1", "jane@example.com",
                                                       "555-625-1199"), None)
    assert record.getMessage() == "order shopify:1 from j***@e***.com (***-***-1199)"
    try:
        raise ValueError("customer jane@example.com refused")
    except ValueError:
        import sys

        record = MaskedLogRecord("x", logging.ERROR, __file__, 1, "failed", (), sys.exc_info())
    assert "jane@example.com" not in logging.Formatter().format(record)
    assert "j***@e***.com" in logging.Formatter().format(record)


def test_json_inside_a_string_inside_a_log_line() -> None:
    # a debug line of the producer: the raw record's bytes, the Shopify body escaped inside it
    line = ("send: v=b'{\"body\":\"{\\\\\"address1\\\\\": \\\\\"668 Chestnut Street\\\\\", "
            "\\\\\"name\\\\\": \\\\\"Ingrid Garcia\\\\\", \\\\\"zip\\\\\": \\\\\"10001\\\\\"}\"}'")
    masked = pii.mask_text(line)
    assert "Chestnut" not in masked and "Ingrid" not in masked and "10001" not in masked
    assert "6*** C*** S***" in masked and "I. G." in masked
