import copy
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from retail_sync.connectors.shopify.mapper import MappingError, map_order
from tests.fixture_orders import shopify_order

FIXTURE = shopify_order()  # the sample with totals that add up (tests/fixture_orders.py)


def payload(**changes):
    body = copy.deepcopy(FIXTURE)
    body.update(changes)
    return body


def test_real_shaped_order_maps_to_canonical():
    order = map_order(payload())
    assert order.order_key == "shopify:450789469"
    assert order.marketplace_order_name == "#1001"
    assert order.created_at == datetime(2008, 1, 10, 16, 0, tzinfo=UTC)  # -05:00 -> UTC
    assert order.created_at.tzinfo is UTC
    assert order.currency == "USD"
    assert order.total.amount == Decimal("608.94") and order.total.currency == "USD"
    assert order.tax_total.amount == Decimal("11.94")
    assert order.shipping.amount == Decimal("0.00")
    assert [line.sku for line in order.lines] == ["IPOD2008GREEN", "IPOD2008RED", "IPOD2008BLACK"]
    assert all(line.unit_price.amount == Decimal("199.00") for line in order.lines)
    assert order.customer.email == "bob.norman@hostmail.com"
    assert order.customer.name == "Bob Norman"
    assert order.shipping_address is not None and order.shipping_address.country_code == "US"
    assert order.financial_status == "authorized"


def test_rest_envelope_is_accepted_too():
    assert map_order({"order": payload()}).marketplace_order_id == "450789469"


def test_money_keeps_decimal_precision():
    line = {**FIXTURE["line_items"][0], "price": "0.10"}
    order = map_order(payload(line_items=[line], total_price="0.10", subtotal_price="0.10",
                              total_tax="0.00"))
    assert order.total.amount == Decimal("0.10")
    assert order.lines[0].unit_price.amount == Decimal("0.10")
    assert isinstance(order.total.amount, Decimal)


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"line_items": []}, "no line_items"),
        ({"currency": "US$"}, "currency"),
        ({"id": None}, "has no id"),
        ({"created_at": "yesterday"}, "created_at"),
        ({"created_at": "2024-01-01T10:00:00"}, "timezone"),
        ({"total_price": "abc"}, "total_price is not a number"),
        ({"total_price": "NaN"}, "not a finite number"),
    ],
)
def test_unmappable_payloads_raise_with_reason(change, reason):
    with pytest.raises(MappingError, match=reason):
        map_order(payload(**change))


def test_line_quantity_must_be_positive():
    body = payload()
    body["line_items"][0]["quantity"] = 0
    with pytest.raises(MappingError, match="quantity"):
        map_order(body)


def test_non_object_is_rejected():
    with pytest.raises(MappingError, match="JSON object"):
        map_order([1, 2, 3])
