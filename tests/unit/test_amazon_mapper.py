"""Amazon Orders v0 order + items -> canonical Order: the spec's example, simulator orders, statuses."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from retail_sync.connectors.amazon.mapper import (
    CANONICAL_TO_STATUS,
    FINANCIAL_STATUS,
    STATUS_TO_CANONICAL,
    MappingError,
    PendingOrderError,
    map_order,
)
from retail_sync.connectors.shopify.mapper import MappingError as ShopifyMappingError
from retail_sync.simulators.amazon.orders import Market, OrderFactory, visible
from tests.fixture_orders import amazon_example

FIXTURES = Path(__file__).parent.parent / "fixtures"
NOW = datetime(2026, 3, 2, 9, 30, tzinfo=UTC)
CANONICAL_WORDS = {"pending", "accepted", "partially_shipped", "shipped", "cancelled", "unfulfillable"}


@pytest.fixture
def example() -> tuple[dict[str, Any], list[dict[str, Any]]]:
    data = amazon_example()  # placed in 2026, not 1970 (tests/fixture_orders.py)
    return data["order"], data["order_items"]


def simulated(status: str = "Unshipped", lines: list[dict[str, Any]] | None = None, seed: int = 5) -> Any:
    factory = OrderFactory(Market(), seed)
    record = factory.order("113-1234567-7654321", status, NOW, lines or factory.random_lines())
    return visible(record)


def usd(amount: str) -> Any:
    return {"CurrencyCode": "USD", "Amount": amount}


# --- the spec's own example ----------------------------------------------------------------------


def test_the_spec_sandbox_example_maps(example) -> None:
    order = map_order(*example)
    assert (order.channel, order.marketplace_order_id) == ("amazon", "902-1845936-5435065")
    assert order.order_key == "amazon:902-1845936-5435065"
    assert order.created_at == datetime(2026, 3, 2, 3, 58, 30, tzinfo=UTC)
    assert order.updated_at == datetime(2026, 3, 2, 3, 58, 32, tzinfo=UTC)
    assert order.currency == "USD" and order.total.amount == Decimal("11.01")
    assert (order.subtotal.amount, order.tax_total.amount, order.shipping.amount) == (
        Decimal("10.00"),
        Decimal("1.01"),
        Decimal("0"),
    )
    assert not order.taxes_included
    (line,) = order.lines
    assert (line.line_id, line.sku, line.quantity) == ("05015851154158", "NABetaASINB00551Q3CS", 1)
    assert line.unit_price.amount == Decimal("10.00") and line.tax.amount == Decimal("1.01")
    assert (order.fulfillment_status, order.financial_status) == ("accepted", "authorized")
    assert order.shipping_address is None  # DefaultShipFromLocationAddress is the seller's, not the buyer's


def test_mapping_error_is_the_shared_one() -> None:
    assert MappingError is ShopifyMappingError


# --- simulator-produced orders ------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(10))
def test_simulator_orders_map_and_add_up(seed: int) -> None:
    raw, items = simulated(seed=seed)
    order = map_order(raw, items)
    assert order.total.amount == Decimal(raw["OrderTotal"]["Amount"])
    assert order.total.amount == order.subtotal.amount + order.shipping.amount + order.tax_total.amount
    assert sum(line.discount.amount for line in order.lines) == order.discount_total.amount
    assert order.customer.email == raw["BuyerInfo"]["BuyerEmail"]
    assert order.shipping_address and order.shipping_address.country_code == "US"
    assert [line.sku for line in order.lines] == [i["SellerSKU"] for i in items]


def test_item_price_is_a_line_total() -> None:
    lines = [
        {"sku": "TWO", "quantity": 2, "unit_price": "10.00"},
        {"sku": "THREE", "quantity": 3, "unit_price": "3.3333", "tax": "0.80"},  # ItemPrice 10.00
    ]
    order = map_order(*simulated(lines=lines))
    two, three = order.lines
    assert two.unit_price.amount == Decimal("10.00") and two.quantity == 2
    assert three.unit_price.amount == Decimal("3.3333") and three.tax.amount == Decimal("0.80")
    assert order.subtotal.amount == Decimal("30.00")


def test_vat_inclusive_totals_set_taxes_included() -> None:
    raw, items = simulated(lines=[{"sku": "VAT", "quantity": 1, "unit_price": "12.00", "tax": "2.00"}])
    raw = {**raw, "OrderTotal": usd(str(Decimal(raw["OrderTotal"]["Amount"]) - 2))}  # tax inside price
    assert map_order(raw, items).taxes_included


# --- statuses -------------------------------------------------------------------------------------


def test_the_status_table_covers_the_spec_enum() -> None:
    spec = json.loads((FIXTURES / "amazon_orders_v0_definitions.json").read_text())
    assert set(STATUS_TO_CANONICAL) == set(spec["definitions"]["Order"]["properties"]["OrderStatus"]["enum"])
    assert set(STATUS_TO_CANONICAL.values()) == CANONICAL_WORDS == set(CANONICAL_TO_STATUS)
    assert set(FINANCIAL_STATUS) == CANONICAL_WORDS


@pytest.mark.parametrize("word", sorted(CANONICAL_WORDS))
def test_every_canonical_status_round_trips(word: str) -> None:
    assert STATUS_TO_CANONICAL[CANONICAL_TO_STATUS[word]] == word


@pytest.mark.parametrize("status", list(STATUS_TO_CANONICAL))
def test_every_amazon_status(status: str) -> None:
    raw, items = simulated(status)
    word = STATUS_TO_CANONICAL[status]
    if word == "pending":
        assert "OrderTotal" not in raw
        with pytest.raises(PendingOrderError, match=f"is {status}: Amazon withholds amounts until payment"):
            map_order(raw, items)
        return
    order = map_order(raw, items)
    assert order.fulfillment_status == word and order.financial_status == FINANCIAL_STATUS[word]


def test_pending_errors_are_mapping_errors(example) -> None:
    raw, items = example
    with pytest.raises(MappingError, match="902-1845936-5435065.*is Pending"):
        map_order({**raw, "OrderStatus": "Pending"}, items)


def test_unknown_status_is_a_mapping_error_naming_the_table(example) -> None:
    raw, items = example
    with pytest.raises(MappingError, match="unknown OrderStatus 'OnHold'.*STATUS_TO_CANONICAL") as info:
        map_order({**raw, "OrderStatus": "OnHold"}, items)
    assert not isinstance(info.value, PendingOrderError)


# --- payloads that cannot become orders ---------------------------------------------------------


def _broken(example: Any, change: Any) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    raw, items = copy.deepcopy(example)
    change(raw, items)
    return raw, items


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (lambda o, i: o.pop("OrderTotal"), "OrderTotal is missing"),
        (lambda o, i: o.update(PurchaseDate="1970-01-19T03:58:30"), "PurchaseDate has no UTC offset"),
        (lambda o, i: o.update(PurchaseDate="19/01/1970"), "PurchaseDate is not ISO 8601"),
        (lambda o, i: o.pop("AmazonOrderId"), "has no AmazonOrderId"),
        (lambda o, i: i[0].update(ItemTax={"CurrencyCode": "EUR", "Amount": "1.01"}), "is in EUR"),
        (lambda o, i: i[0].update(ItemPrice=usd("ten")), "ItemPrice.Amount is not a number"),
        (lambda o, i: i[0].pop("ItemPrice"), "has no ItemPrice"),
        (lambda o, i: i[0].update(QuantityOrdered=0), "no items with a quantity"),
        (lambda o, i: i[0].update(QuantityOrdered="1"), "no positive QuantityOrdered"),
        (lambda o, i: [i[0].pop("SellerSKU"), i[0].pop("ASIN")], "neither SellerSKU nor ASIN"),
        (lambda o, i: i.clear(), "no items with a quantity"),
    ],
)
def test_unmappable_payloads_say_why(example, change, reason) -> None:
    with pytest.raises(MappingError, match=reason):
        map_order(*_broken(example, change))


def test_cancelled_items_with_zero_quantity_are_skipped(example) -> None:
    raw, items = copy.deepcopy(example)
    items.append({**items[0], "OrderItemId": "cancelled-1", "QuantityOrdered": 0})
    assert [line.line_id for line in map_order(raw, items).lines] == ["05015851154158"]


def test_sku_falls_back_to_asin(example) -> None:
    raw, items = copy.deepcopy(example)
    items[0].pop("SellerSKU")
    assert map_order(raw, items).lines[0].sku == "asin-B00551Q3CS"


def test_not_an_object_is_a_mapping_error() -> None:
    with pytest.raises(MappingError, match="expected a JSON object"):
        map_order([], [])
