"""Walmart purchase order -> canonical Order: the spec's example, simulator orders, statuses, errors."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from retail_sync.connectors.walmart.mapper import (
    CANONICAL_TO_LINE_STATUS,
    LINE_STATUS_TO_CANONICAL,
    ORDER_STATUSES,
    MappingError,
    line_status,
    map_order,
    order_status,
)
from retail_sync.simulators.walmart.simulator import WalmartSimConfig, WalmartSimulator
from tests.specs import spec_path

FIXTURE = Path(__file__).parent.parent / "fixtures" / "walmart_order_example.json"
JSON = dict[str, Any]


@pytest.fixture
def example() -> JSON:
    return dict(json.loads(FIXTURE.read_text()))


def sim_orders(n: int, seed: int = 11) -> list[JSON]:
    return WalmartSimulator(WalmartSimConfig(seed=seed, base_time_ms=1_700_000_000_000)).generate_orders(n)


def test_spec_example_maps_to_a_canonical_order(example: JSON) -> None:
    order = map_order(example)
    assert (order.channel, order.marketplace_order_id, order.order_key) == (
        "walmart",
        "4792982839409",
        "walmart:4792982839409",
    )
    assert order.marketplace_order_name == "5681962097195"
    assert order.created_at == datetime(2019, 10, 24, 7, 52, 30, tzinfo=UTC)  # 1571903550000 ms
    assert order.updated_at == datetime(2019, 10, 24, 7, 55, 48, tzinfo=UTC)  # statusDate
    assert order.currency == "USD"
    [line] = order.lines
    assert (line.line_id, line.sku, line.title, line.quantity) == (
        "3",
        "StressTestHome_29",
        "Dummystresstest_MP_Home_29",
        1,
    )
    assert line.unit_price.amount == Decimal("99") and line.tax.amount == Decimal("7.92")
    assert order.subtotal.amount == Decimal("99") and order.shipping.amount == Decimal("60")
    assert order.tax_total.amount == Decimal("7.92") and order.discount_total.amount == 0
    assert order.total.amount == Decimal("166.92")
    assert isinstance(order.total.amount, Decimal)
    assert order.fulfillment_status == "pending"
    assert order.customer.email == "9336DEB95193429EA032F07770C3E48A@relay.walmart.com"
    assert order.customer.name == "SFirst1340778269137n SLast1340778269137n"
    address = order.shipping_address
    assert address is not None
    assert (address.line1, address.city, address.region, address.postal_code, address.country_code) == (
        "13227 City Square Dr",
        "Jacksonville",
        "CA",
        "12901",
        "US",
    )


def test_envelope_is_accepted(example: JSON) -> None:
    assert map_order({"order": example}) == map_order(example)


def test_simulator_orders_map_with_consistent_decimal_money() -> None:
    for raw in sim_orders(60):
        order = map_order(raw)
        assert order.marketplace_order_id == raw["purchaseOrderId"]
        assert len(order.lines) == len(raw["orderLines"]["orderLine"])
        lines_total = sum((ln.unit_price.amount * ln.quantity for ln in order.lines), Decimal(0))
        assert lines_total == order.subtotal.amount
        assert sum((ln.tax.amount for ln in order.lines), Decimal(0)) == order.tax_total.amount
        expected = order.subtotal.amount + order.shipping.amount + order.tax_total.amount
        assert order.total.amount == expected
        assert order.created_at == datetime.fromtimestamp(raw["orderDate"] / 1000, UTC)
        assert order.fulfillment_status == "pending"


def test_charge_amount_is_for_the_whole_line(example: JSON) -> None:
    line = example["orderLines"]["orderLine"][0]
    line["orderLineQuantity"]["amount"] = "3"
    line["charges"]["charge"][0]["chargeAmount"]["amount"] = 104.97
    order = map_order(example)
    assert order.lines[0].quantity == 3 and order.lines[0].unit_price.amount == Decimal("34.99")
    assert order.subtotal.amount == Decimal("104.97")
    line["charges"]["charge"][0]["chargeAmount"]["amount"] = 10
    assert map_order(example).lines[0].unit_price.amount == Decimal("3.3333")  # 4 places when uneven
    assert map_order(example).subtotal.amount == Decimal("10")  # the line amount stays exact


def test_negative_product_charges_are_discounts(example: JSON) -> None:
    charges = example["orderLines"]["orderLine"][0]["charges"]["charge"]
    charges.append(
        {
            "chargeType": "PRODUCT",
            "chargeName": "SubscriptionDiscount",
            "chargeAmount": {"currency": "USD", "amount": -9.9},
        }
    )
    order = map_order(example)
    assert order.lines[0].discount.amount == Decimal("9.9") and order.discount_total.amount == Decimal("9.9")
    assert order.total.amount == Decimal("157.02")


# --- statuses ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("walmart", "canonical"), sorted(LINE_STATUS_TO_CANONICAL.items()))
def test_every_line_status_maps_both_ways(walmart: str, canonical: str) -> None:
    raw = sim_orders(1)[0]
    for line in raw["orderLines"]["orderLine"]:
        line["orderLineStatuses"]["orderLineStatus"][0]["status"] = walmart
    assert map_order(raw).fulfillment_status == canonical
    assert CANONICAL_TO_LINE_STATUS[canonical] == walmart
    assert canonical in ORDER_STATUSES


def test_status_tables_cover_the_spec_enum() -> None:
    spec = json.loads(spec_path("walmart", "us-mp-orders.openapi.json").read_text())
    enum = spec["components"]["schemas"]["OrderLineStatusType"]["properties"]["status"]["enum"]
    assert set(LINE_STATUS_TO_CANONICAL) == set(enum)


@pytest.mark.parametrize(
    ("statuses", "expected"),
    [
        (["shipped", "shipped"], "shipped"),
        (["shipped", "delivered"], "shipped"),
        (["shipped", "accepted"], "partially_shipped"),
        (["delivered", "pending"], "partially_shipped"),
        (["shipped", "cancelled"], "shipped"),
        (["cancelled", "cancelled"], "cancelled"),
        (["accepted", "pending"], "pending"),
        (["refunded", "delivered"], "partially_refunded"),
        (["refunded", "cancelled"], "refunded"),
    ],
)
def test_order_status_from_line_statuses(statuses: list[str], expected: str) -> None:
    assert order_status(statuses) == expected
    assert expected in ORDER_STATUSES


def test_a_line_split_across_statuses() -> None:
    line = {
        "lineNumber": "1",
        "orderLineStatuses": {
            "orderLineStatus": [
                {"status": "Shipped", "statusQuantity": {"unitOfMeasurement": "EACH", "amount": "1"}},
                {"status": "Acknowledged", "statusQuantity": {"unitOfMeasurement": "EACH", "amount": "1"}},
            ]
        },
    }
    assert line_status(line) == "partially_shipped"


# --- errors ------------------------------------------------------------------------------------


def _mutate(example: JSON, path: str, value: Any) -> JSON:
    broken = copy.deepcopy(example)
    *parents, last = path.split(".")
    target: Any = broken
    for key in parents:
        target = target[int(key)] if key.isdigit() else target[key]
    if value is KeyError:
        del target[last]
    else:
        target[last] = value
    return broken


LINE = "orderLines.orderLine.0"


@pytest.mark.parametrize(
    ("path", "value", "reason"),
    [
        (f"{LINE}.orderLineStatuses.orderLineStatus.0.status", "Pending", "unknown status 'Pending'"),
        (f"{LINE}.orderLineQuantity.amount", "1.5", "positive whole orderLineQuantity.amount"),
        (f"{LINE}.orderLineQuantity.amount", "0", "positive whole orderLineQuantity.amount"),
        (f"{LINE}.charges.charge.1.chargeAmount.currency", "CAD", "one currency, found ['CAD', 'USD']"),
        (f"{LINE}.charges.charge.0.chargeAmount.amount", "lots", "chargeAmount.amount is not a number"),
        (f"{LINE}.charges.charge.0.chargeType", "FEE", "charge type 'FEE'"),
        (f"{LINE}.item.sku", "", "has no item.sku"),
        ("orderLines.orderLine", [], "has no orderLines.orderLine"),
        ("orderDate", "yesterday", "orderDate is not epoch milliseconds"),
        ("purchaseOrderId", KeyError, "purchase order has no purchaseOrderId"),
    ],
)
def test_unmappable_orders_say_why(example: JSON, path: str, value: Any, reason: str) -> None:
    with pytest.raises(MappingError) as caught:
        map_order(_mutate(example, path, value))
    assert reason in str(caught.value)
    if path != "purchaseOrderId":
        assert str(caught.value).startswith("purchase order 4792982839409: ")


def test_not_an_object_is_unmappable() -> None:
    with pytest.raises(MappingError, match="expected a JSON object"):
        map_order(["not", "an", "order"])
