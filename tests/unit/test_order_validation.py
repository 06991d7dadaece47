"""Order validation (streams/validation.py, ARCHITECTURE §5f.4): plausible orders pass, implausible
ones are refused with an error naming the field — over the canonical model (hypothesis), through
each channel's mapper with real-shaped payloads, over every real example we have and over the
simulators' orders (no false rejections), and through the ingest step and its replay."""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from retail_sync.agents.ingest import ingest_one
from retail_sync.channels import channels
from retail_sync.connectors.amazon import mapper as amazon
from retail_sync.connectors.regional import mapper as regional
from retail_sync.connectors.shopify import mapper as shopify
from retail_sync.connectors.walmart import mapper as walmart
from retail_sync.exceptions_view import explain_replay
from retail_sync.settings import Settings
from retail_sync.simulators.amazon.orders import Market, OrderFactory, cancel_units, visible
from retail_sync.simulators.shopify.orders import ShopifyOrderFactory
from retail_sync.simulators.walmart.orders import WalmartOrderFactory
from retail_sync.streams import iso4217
from retail_sync.streams.events import OrderReceived
from retail_sync.streams.models import ExceptionKind, Order, RawOrderMessage, SyncException
from retail_sync.streams.validation import (
    InvalidOrder,
    MappingError,
    OrderRules,
    canonical_order,
    minor_units,
    tolerance,
    use_rules,
    validate_order,
)
from tests.fixture_orders import (
    amazon_example,
    amazon_example_verbatim,
    shopify_order,
    shopify_order_verbatim,
)
from tests.specs import needs_spec, spec_path

NOW = datetime(2026, 12, 4, 18, 0, tzinfo=UTC)
RULES = OrderRules()
ZONES = [UTC, ZoneInfo("America/New_York"), ZoneInfo("Asia/Tokyo"), ZoneInfo("Europe/Berlin")]


# --- the shipped ISO 4217 list -------------------------------------------------------------------


@needs_spec("fx", "iso4217", "codes-all.csv")
def test_shipped_iso4217_tables_are_the_specs_csv() -> None:
    text = spec_path("fx", "iso4217", "codes-all.csv").read_text(encoding="utf-8")
    current, no_minor, withdrawn = iso4217.tables(text)
    assert (current, no_minor, withdrawn) == (iso4217.CURRENT_MINOR_UNITS, iso4217.NO_MINOR_UNIT,
                                              iso4217.WITHDRAWN)


def test_iso4217_tables_know_the_usual_suspects() -> None:
    assert {"USD": 2, "EUR": 2, "GBP": 2, "JPY": 0, "KWD": 3, "CLF": 4}.items() <= \
        iso4217.CURRENT_MINOR_UNITS.items()
    assert {"XAU", "XTS", "XXX"} <= iso4217.NO_MINOR_UNIT
    assert iso4217.WITHDRAWN["DEM"] == "2002-03" and iso4217.WITHDRAWN["BGN"] == "2026-01"
    assert "ZZZ" not in iso4217.CURRENT_MINOR_UNITS and "ZZZ" not in iso4217.WITHDRAWN


# --- canonical orders: a strategy of plausible ones ---------------------------------------------

CURRENCIES = ["USD", "EUR", "GBP", "JPY", "KWD", "CLF", "CHF", "SEK"]
LINE_ID = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-", min_size=1, max_size=12)


@st.composite
def orders(draw: Any) -> Order:
    """A plausible order as a marketplace states it: per-line tax rounded to the currency, the
    order's tax either the sum of those or rounded once over the order (the rounding the
    tolerance is for), tax on top or included in prices."""
    currency = draw(st.sampled_from(CURRENCIES))
    q = Decimal(1).scaleb(-minor_units(currency))
    n = draw(st.integers(1, 30))
    ids = draw(st.lists(LINE_ID, min_size=n, max_size=n, unique=True))
    rate = draw(st.sampled_from([Decimal(0), Decimal("0.06"), Decimal("0.0725"), Decimal("0.19")]))
    included = draw(st.booleans())
    lines, nets = [], []
    for line_id in ids:
        qty = draw(st.integers(1, 500))
        unit = draw(st.integers(0, 10**6)) * q
        gross = unit * qty
        discount = draw(st.integers(0, int(gross / q))) * q
        net = gross - discount
        nets.append(net)
        tax = (net * rate).quantize(q, rounding=ROUND_HALF_UP)
        lines.append({"line_id": line_id, "sku": f"SKU-{line_id}", "quantity": qty,
                      "unit_price": money(unit, currency), "tax": money(tax, currency),
                      "discount": money(discount, currency)})
    line_tax = sum((Decimal(ln["tax"]["amount"]) for ln in lines), Decimal(0))
    once = (sum(nets, Decimal(0)) * rate).quantize(q, rounding=ROUND_HALF_UP)
    tax_total = draw(st.sampled_from([line_tax, once]))
    gross = sum((Decimal(ln["unit_price"]["amount"]) * ln["quantity"] for ln in lines), Decimal(0))
    discounts = sum((Decimal(ln["discount"]["amount"]) for ln in lines), Decimal(0))
    shipping = draw(st.integers(0, 10**5)) * q
    total = gross - discounts + shipping + (Decimal(0) if included else tax_total)
    created = draw(st.datetimes(min_value=datetime(2000, 1, 2), max_value=datetime(2026, 12, 3),
                                timezones=st.sampled_from(ZONES)))
    updated = created + timedelta(seconds=draw(st.integers(0, 86_400)))
    return Order.model_validate({
        "channel": draw(st.sampled_from(["shopify", "amazon", "walmart", "regional", "toy"])),
        "marketplace_order_id": draw(st.text(alphabet="0123456789-", min_size=1, max_size=20)),
        "created_at": created, "updated_at": updated, "currency": currency, "lines": lines,
        "subtotal": money(gross - discounts, currency), "shipping": money(shipping, currency),
        "tax_total": money(tax_total, currency), "discount_total": money(discounts, currency),
        "total": money(total, currency), "taxes_included": included,
    })


def money(amount: Decimal, currency: str) -> dict[str, Any]:
    return {"amount": str(amount), "currency": currency}


def validate(data: dict[str, Any], units: str = "1") -> Order:
    return canonical_order(data, rules=OrderRules(total_tolerance_units=Decimal(units)), now=NOW)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(orders())
def test_plausible_orders_pass(order: Order) -> None:
    assert validate(order.model_dump()) == order
    assert validate_order(order, rules=RULES, now=NOW) is order


@settings(max_examples=200, deadline=None)
@given(orders(), st.data())
def test_a_total_within_the_tolerance_passes_and_one_minor_unit_more_does_not(order: Order,
                                                                               data: Any) -> None:
    allowed = tolerance(order.currency, len(order.lines), RULES)
    q = Decimal(1).scaleb(-minor_units(order.currency))
    sign = data.draw(st.sampled_from([1, -1]))
    inside = order.model_dump()
    inside["total"]["amount"] = order.total.amount + sign * allowed
    validate(inside)
    outside = order.model_dump()
    outside["total"]["amount"] = order.total.amount + sign * (allowed + q)
    with pytest.raises(InvalidOrder) as err:
        validate(outside)
    assert err.value.field == "total" and "RETAIL_SYNC_ORDER_TOTAL_TOLERANCE_UNITS" in err.value.reason


# --- one corruption at a time: refused, naming the field ----------------------------------------

BAD_QUANTITIES = [True, False, 0, -1, -7, 1.5, 2.0, "2", None, 100_001]
BAD_DATES = [datetime(9999, 12, 31, 23, 59, tzinfo=UTC), datetime(1999, 12, 31, 23, 59, tzinfo=UTC),
             datetime(1970, 1, 19, 3, 58, 30, tzinfo=UTC), NOW + timedelta(days=1, minutes=1),
             datetime(2026, 1, 1, 12, 0)]  # the last one has no timezone
BAD_CURRENCIES = ["ZZZ", "XTS", "XXX", "XAU", "ABC", "QQQ"]


@st.composite
def corrupted(draw: Any) -> tuple[dict[str, Any], str]:
    """(canonical data of a plausible order with exactly one thing wrong, the field it names)."""
    order = draw(orders())
    data = order.model_dump()
    n = len(data["lines"])
    kind = draw(st.sampled_from(["total", "currency", "duplicate_id", "quantity", "date"]))
    if kind == "total":
        allowed = tolerance(order.currency, n, RULES)
        q = Decimal(1).scaleb(-minor_units(order.currency))
        off = allowed + q * draw(st.integers(1, 10**6))
        data["total"]["amount"] = order.total.amount + draw(st.sampled_from([1, -1])) * off
        return data, "total"
    if kind == "currency":
        code = draw(st.sampled_from(BAD_CURRENCIES) | st.text("ABCDEFGHIJKLMNOPQRSTUVWXYZ", min_size=3,
                                                              max_size=3).filter(_unknown_code))
        _recurrency(data, code)
        return data, "currency"
    if kind == "duplicate_id":
        if n == 1:
            data["lines"].append(copy.deepcopy(data["lines"][0]))
            j, i = 1, 0
        else:
            j = draw(st.integers(1, n - 1))
            i = draw(st.integers(0, j - 1))
        data["lines"][j]["line_id"] = data["lines"][i]["line_id"]
        return data, f"lines[{j}].line_id"
    if kind == "quantity":
        i = draw(st.integers(0, n - 1))
        data["lines"][i]["quantity"] = draw(st.sampled_from(BAD_QUANTITIES))
        return data, f"lines[{i}].quantity"
    name = draw(st.sampled_from(["created_at", "updated_at"]))
    data[name] = draw(st.sampled_from(BAD_DATES))
    return data, name


def _unknown_code(code: str) -> bool:
    return code not in iso4217.CURRENT_MINOR_UNITS and code not in iso4217.WITHDRAWN


def _recurrency(data: dict[str, Any], code: str) -> None:
    data["currency"] = code
    for name in ("subtotal", "shipping", "tax_total", "discount_total", "total"):
        data[name]["currency"] = code
    for line in data["lines"]:
        for name in ("unit_price", "tax", "discount"):
            line[name]["currency"] = code


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(corrupted())
def test_any_single_corruption_is_refused_naming_the_field(case: tuple[dict[str, Any], str]) -> None:
    data, field_name = case
    with pytest.raises(InvalidOrder) as err:
        validate(data)
    assert err.value.field == field_name
    assert f"{field_name}: " in str(err.value)
    assert isinstance(err.value, MappingError)  # what ingest records as a mapping exception


def test_withdrawn_currency_passes_only_for_orders_placed_before_it_went() -> None:
    data = shopify.map_order(shopify_order()).model_dump()
    _recurrency(data, "DEM")  # withdrawn 2002-03
    data["created_at"] = data["updated_at"] = datetime(2001, 6, 1, tzinfo=UTC)
    assert validate(data).currency == "DEM"
    data["created_at"] = data["updated_at"] = datetime(2002, 4, 1, tzinfo=UTC)
    with pytest.raises(InvalidOrder, match="withdrawn from ISO 4217 in 2002-03"):
        validate(data)


# --- Shopify: real-shaped payloads --------------------------------------------------------------


def shopify_payload(**changes: Any) -> dict[str, Any]:
    body = shopify_order()
    body.update(changes)
    return body


def refused(mapper: Any, *args: Any) -> InvalidOrder:
    with pytest.raises(InvalidOrder) as err:
        mapper(*args)
    return err.value


def test_shopify_real_sample_maps_and_the_verbatim_sample_is_refused_for_its_totals() -> None:
    assert shopify.map_order(shopify_payload()).total.amount == Decimal("608.94")
    err = refused(shopify.map_order, shopify_order_verbatim())  # totals count 2 of its 3 lines
    assert err.field == "total_price" and err.order == "shopify:450789469"
    assert "409.94" in str(err) and "lines 597.00" in str(err) and "off by 199.00" in str(err)


def test_shopify_the_issues_orders_are_refused_naming_the_field() -> None:
    big = shopify_payload()  # lines add to 597.00
    assert refused(shopify.map_order, {**big, "total_price": "0.01"}).field == "total_price"
    assert refused(shopify.map_order, {**big, "currency": "ZZZ"}).field == "currency"
    assert refused(shopify.map_order, {**big, "created_at": "9999-01-01T00:00:00Z"}).field == "created_at"
    twice = copy.deepcopy(big)
    twice["line_items"][2]["id"] = twice["line_items"][0]["id"]
    err = refused(shopify.map_order, twice)
    assert err.field == "line_items[2].id" and "line_items[0]" in err.reason
    for bad in (True, "2", 2.0, 0, -1, None):
        body = copy.deepcopy(big)
        body["line_items"][1]["quantity"] = bad
        err = refused(shopify.map_order, body)
        assert err.field == "line_items[1].quantity" and err.order == "shopify:450789469", bad


def test_shopify_totals_as_shopify_states_them() -> None:
    base = shopify_payload()
    # taxes included in the prices: the total is the lines (the tax is inside them)
    assert shopify.map_order({**base, "taxes_included": True, "total_price": "597.00"}).taxes_included
    # a tip is part of total_price
    assert shopify.map_order({**base, "total_tip_received": "5.00", "total_price": "613.94"})
    # a shipping discount: shipping_lines price 10.00, discounted_price 0.00
    ship = [{"code": "Std", "price": "10.00", "discounted_price": "0.00", "title": "Standard"}]
    assert shopify.map_order({**base, "shipping_lines": ship, "total_price": "608.94"})
    assert shopify.map_order({**base, "shipping_lines": ship, "total_price": "618.94"})
    # rounding of a cent per line is within the default tolerance; a dollar is not
    assert shopify.map_order({**base, "total_price": "608.97"})
    assert refused(shopify.map_order, {**base, "total_price": "609.94"}).field == "total_price"
    # ... unless the operator widened it
    with use_rules(OrderRules(total_tolerance_units=Decimal(25))):
        assert shopify.map_order({**base, "total_price": "609.94"})


# --- Amazon ---------------------------------------------------------------------------------------


def amazon_payload() -> tuple[dict[str, Any], list[dict[str, Any]]]:
    data = amazon_example()
    return data["order"], data["order_items"]


def test_amazon_sandbox_example_maps_and_its_1970_date_is_refused() -> None:
    order, items = amazon_payload()
    assert amazon.map_order(order, items).total.amount == Decimal("11.01")
    verbatim = amazon_example_verbatim()
    err = refused(amazon.map_order, verbatim["order"], verbatim["order_items"])
    assert err.field == "PurchaseDate" and "1970-01-19" in err.reason


def test_amazon_the_issues_orders_are_refused_naming_the_field() -> None:
    order, items = amazon_payload()
    low = {**order, "OrderTotal": {"CurrencyCode": "USD", "Amount": "0.01"}}
    assert refused(amazon.map_order, low, items).field == "OrderTotal"
    zzz = copy.deepcopy(items)
    for item in zzz:
        for name in ("ItemPrice", "ItemTax", "PromotionDiscount"):
            item[name]["CurrencyCode"] = "ZZZ"
    bad_currency = {**order, "OrderTotal": {"CurrencyCode": "ZZZ", "Amount": "11.01"}}
    assert refused(amazon.map_order, bad_currency, zzz).field == "OrderTotal.CurrencyCode"
    twice = [items[0], {**copy.deepcopy(items[0]), "SellerSKU": "OTHER"}]
    double = {**order, "OrderTotal": {"CurrencyCode": "USD", "Amount": "22.02"}}
    assert refused(amazon.map_order, double, twice).field == "OrderItems[1].OrderItemId"
    future = {**order, "PurchaseDate": "9999-01-01T00:00:00Z", "LastUpdateDate": "9999-01-01T00:00:00Z"}
    assert refused(amazon.map_order, future, items).field == "PurchaseDate"
    with pytest.raises(MappingError, match="QuantityOrdered"):
        amazon.map_order(order, [{**items[0], "QuantityOrdered": True}])


def test_amazon_totals_as_amazon_states_them() -> None:
    order, items = amazon_payload()
    # VAT marketplaces: OrderTotal without the tax (it is inside ItemPrice)
    vat = amazon.map_order({**order, "OrderTotal": {"CurrencyCode": "USD", "Amount": "10.00"}}, items)
    assert vat.taxes_included
    # the line total is ItemPrice itself: 3 units for 10.00 (unit 3.3333) is exact, not 9.9999
    three = [{**items[0], "QuantityOrdered": 3}]
    assert amazon.map_order(order, three).lines[0].unit_price.amount == Decimal("3.3333")
    # gift wrap and the discounts' own tax are part of what Amazon charges
    gift = [{**items[0], "BuyerInfo": {"GiftWrapPrice": {"CurrencyCode": "USD", "Amount": "2.99"}}}]
    assert amazon.map_order({**order, "OrderTotal": {"CurrencyCode": "USD", "Amount": "14.00"}}, gift)
    promo = [{**items[0], "PromotionDiscount": {"CurrencyCode": "USD", "Amount": "1.00"},
              "PromotionDiscountTax": {"CurrencyCode": "USD", "Amount": "0.10"}}]
    assert amazon.map_order({**order, "OrderTotal": {"CurrencyCode": "USD", "Amount": "9.91"}}, promo)


@needs_spec("amazon", "ordersV0.json")
def test_amazon_every_spec_example_with_amounts_is_refused_only_for_its_sandbox_date() -> None:
    spec = json.loads(spec_path("amazon", "ordersV0.json").read_text())
    listed = spec["paths"]["/orders/v0/orders"]["get"]["responses"]["200"]
    pages = [listed["examples"]["application/json"]["payload"]] + \
        [s["response"]["payload"] for s in listed["x-amzn-api-sandbox"]["static"]]
    item_pages = spec["paths"]["/orders/v0/orders/{orderId}/orderItems"]["get"]["responses"]["200"]
    items = {p["AmazonOrderId"]: p["OrderItems"] for p in
             [s["response"]["payload"] for s in item_pages["x-amzn-api-sandbox"]["static"]]}
    checked = 0
    for order in (o for page in pages for o in page["Orders"]):
        if "OrderTotal" not in order:
            continue  # Pending: no amounts yet (PendingOrderError, not validation)
        its = items.get(order["AmazonOrderId"], items["902-1845936-5435065"])
        assert refused(amazon.map_order, order, its).field == "PurchaseDate"
        moved = {**order, "PurchaseDate": "2026-03-02T03:58:30Z", "LastUpdateDate": "2026-03-02T03:58:32Z"}
        assert amazon.map_order(moved, its)
        checked += 1
    assert checked >= 2


# --- Walmart --------------------------------------------------------------------------------------


def walmart_payload() -> dict[str, Any]:
    return json.loads((Path(__file__).parent.parent / "fixtures" / "walmart_order_example.json").read_text())


def test_walmart_the_issues_orders_are_refused_naming_the_field() -> None:
    assert walmart.map_order(walmart_payload()).total.amount == Decimal("166.92")
    two = walmart_payload()
    two["orderLines"]["orderLine"].append(copy.deepcopy(two["orderLines"]["orderLine"][0]))
    err = refused(walmart.map_order, two)
    assert err.field == "orderLines.orderLine[1].lineNumber" and err.order == "walmart:4792982839409"
    zzz = walmart_payload()
    for charge in zzz["orderLines"]["orderLine"][0]["charges"]["charge"]:
        charge["chargeAmount"]["currency"] = "ZZZ"
        if charge.get("tax"):
            charge["tax"]["taxAmount"]["currency"] = "ZZZ"
    assert refused(walmart.map_order, zzz).field == "charges.charge[].chargeAmount.currency"
    late = {**walmart_payload(), "orderDate": 253370764800000}  # 9999-01-01
    assert refused(walmart.map_order, late).field == "orderDate"
    for bad in (True, "1.5", "0", "-1", 1.0):
        body = walmart_payload()
        body["orderLines"]["orderLine"][0]["orderLineQuantity"]["amount"] = bad
        with pytest.raises(MappingError, match="orderLineQuantity.amount"):
            walmart.map_order(body)


@needs_spec("walmart", "us-mp-orders.openapi.json")
def test_walmart_every_spec_example_order_still_maps() -> None:
    spec = json.loads(spec_path("walmart", "us-mp-orders.openapi.json").read_text())
    found: list[dict[str, Any]] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("purchaseOrderId"), str) and isinstance(node.get("orderLines"), dict) \
                    and any("charges" in ln for ln in node["orderLines"].get("orderLine", [])):
                found.append(node)
                return
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(spec)
    assert len(found) >= 20
    for order in found:
        assert walmart.map_order(order).currency == "USD"


# --- regional CSV ---------------------------------------------------------------------------------


def regional_rows(*changes: dict[str, str]) -> dict[str, Any]:
    base = {"order_ref": "R-1", "order_date": "2026-11-27 10:15:00+01:00", "status": "PAID",
            "sku": "RG-1", "qty": "2", "unit_price": "12,50", "currency": "EUR",
            "buyer_email": "a@example.com"}
    return {"file": "batch-7.csv", "rows": [{**base, "line_no": str(i + 1), "_row": i + 1, **c}
                                             for i, c in enumerate(changes)]}


def test_regional_the_issues_orders_are_refused_naming_the_file_row_and_field() -> None:
    assert regional.map_order(regional_rows({}, {"sku": "RG-2"})).total.amount == Decimal("50.00")
    err = refused(regional.map_order, regional_rows({}, {"line_no": "1"}))
    assert err.field == "batch-7.csv row 2.line_no" and "batch-7.csv row 1" in err.reason
    assert refused(regional.map_order, regional_rows({"currency": "ZZZ"})).field == "currency"
    late = regional_rows({"order_date": "01/01/2099 10:00"})
    assert refused(regional.map_order, late).field == "order_date"
    with pytest.raises(MappingError, match="qty"):
        regional.map_order(regional_rows({"qty": "1.5"}))


# --- the simulators' orders are plausible (the demo must not make false exceptions) --------------


def test_simulated_shopify_orders_all_pass() -> None:
    for seed in range(20):
        factory = ShopifyOrderFactory(seed=seed, max_quantity=6)
        for _ in range(25):
            shopify.map_order(factory.order())


def test_simulated_amazon_orders_all_pass_also_after_partial_cancellation() -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    for seed in range(20):
        factory = OrderFactory(Market(), seed)
        for n in range(10):
            record = factory.order(factory.order_id(), "Unshipped", now, factory.random_lines())
            amazon.map_order(*visible(record))
            if n % 2 and len(record.items) > 1:
                item = record.items[0]
                cancel_units(record, item["OrderItemId"], max(1, item["QuantityOrdered"] - 1), now)
                amazon.map_order(*visible(record))


def test_amazon_order_cancelled_in_steps_still_maps_so_the_cancellation_is_not_lost() -> None:
    """Seen in the demo: after a partial and then a full cancellation the simulator (like Amazon)
    lists the items as ordered next to the OrderTotal left before the last step. The order is
    cancelled, goes nowhere near the ERP as an order, and refusing it would lose the cancel."""
    now = datetime.now(UTC).replace(microsecond=0)
    factory = OrderFactory(Market(), 3)
    record = factory.order(factory.order_id(), "Unshipped", now,
                           [{**factory.random_lines()[0], "quantity": 2}])
    item = record.items[0]
    assert item["QuantityOrdered"] == 2
    cancel_units(record, item["OrderItemId"], 1, now)
    assert amazon.map_order(*visible(record)).total.amount == Decimal(record.order["OrderTotal"]["Amount"])
    cancel_units(record, item["OrderItemId"], 2, now)
    order = amazon.map_order(*visible(record))
    assert order.fulfillment_status == "cancelled" and order.lines[0].quantity == 2


def test_walmart_line_partly_shipped_next_to_a_cancelled_line_maps() -> None:
    """Seen in the demo: one line with a unit shipped and one open, another line cancelled."""
    body = walmart_payload()
    first = body["orderLines"]["orderLine"][0]
    first["orderLineQuantity"]["amount"] = "2"
    first["orderLineStatuses"]["orderLineStatus"] = [
        {"status": "Shipped", "statusQuantity": {"unitOfMeasurement": "EACH", "amount": "1"}},
        {"status": "Acknowledged", "statusQuantity": {"unitOfMeasurement": "EACH", "amount": "1"}}]
    second = {**copy.deepcopy(first), "lineNumber": "4"}
    second["orderLineStatuses"]["orderLineStatus"] = [
        {"status": "Cancelled", "statusQuantity": {"unitOfMeasurement": "EACH", "amount": "2"}}]
    body["orderLines"]["orderLine"].append(second)
    assert walmart.map_order(body).fulfillment_status == "partially_shipped"
    second["orderLineStatuses"]["orderLineStatus"] = [
        {"status": "Refund", "statusQuantity": {"unitOfMeasurement": "EACH", "amount": "2"}}]
    assert walmart.map_order(body).fulfillment_status == "partially_refunded"


def test_simulated_walmart_orders_all_pass() -> None:
    now_ms = int(datetime.now(UTC).timestamp() * 1000)
    for seed in range(20):
        factory = WalmartOrderFactory(seed=seed, max_lines=5, max_quantity=7)
        for _ in range(25):
            walmart.map_order(factory.order(now_ms))


# --- ingest: a mapping exception that names the field, and its replay once fixed ------------------


@dataclass
class _Topic:
    name: str
    sent: list[tuple[Any, Any]] = field(default_factory=list)

    def get_topic_name(self) -> str:
        return f"rs-test.{self.name}"

    async def send(self, key: Any = None, value: Any = None) -> None:
        self.sent.append((key, value))


class _Counter:
    def labels(self, **_: Any) -> _Counter:
        return self

    def inc(self, *_: Any) -> None:
        return None


@dataclass
class _Ctx:
    """What ingest_one touches of the worker's Context: settings, channels, three topics, two
    counters (the topics record what was sent)."""

    settings: Settings
    channels: dict[str, Any] = field(default_factory=dict)
    topics: Any = None
    metrics: Any = None

    def __post_init__(self) -> None:
        self.channels = channels(self.settings)
        self.topics = type("T", (), {})()
        for name in ("raw_orders", "order_events", "sync_exceptions"):
            setattr(self.topics, name, _Topic(name.replace("_", "-")))
        self.metrics = type("M", (), {"sync_exceptions": _Counter(), "orders_ingested": _Counter()})()


async def test_ingest_records_the_field_and_a_replay_after_the_fix_maps_the_order() -> None:
    body = shopify_payload(total_price="608.64")  # 30 cents short: a marketplace's rounding
    raw = RawOrderMessage(channel="shopify", topic="orders/create", delivery_id="d-9",
                          received_at=NOW, body=orjson.dumps(body).decode())
    strict = _Ctx(Settings())
    await ingest_one(strict, "shopify:450789469", raw)
    assert strict.topics.order_events.sent == []  # nothing goes on towards the ERP
    [(key, record)] = strict.topics.sync_exceptions.sent
    assert isinstance(record, SyncException) and record.kind is ExceptionKind.MAPPING
    assert key == "shopify:450789469"
    assert record.reason.startswith("order shopify:450789469 rejected: total_price: 608.64 USD")
    # replayable: the whole raw message was kept, back to orders-raw under its key
    plan = explain_replay(record)
    assert (plan.suffix, plan.key) == ("orders-raw", "shopify:450789469"), plan.reason
    replayed = RawOrderMessage.model_validate_json(plan.value)
    assert replayed == raw

    still = _Ctx(Settings())  # replaying before the fix: the same exception again
    assert await ingest_one(still, plan.key, replayed) is None
    assert still.topics.order_events.sent == [] and len(still.topics.sync_exceptions.sent) == 1

    fixed = _Ctx(Settings(order_total_tolerance_units=10))  # the operator widened the tolerance
    event = await ingest_one(fixed, plan.key, replayed)
    assert fixed.topics.sync_exceptions.sent == []
    # the record's key is the order key: the order agent applies the event itself (no extra hop)
    assert fixed.topics.order_events.sent == []
    assert isinstance(event, OrderReceived) and event.order_key == "shopify:450789469"
    assert event.order.total.amount == Decimal("608.64")


async def test_ingest_sends_an_event_keyed_otherwise_on_to_its_order_key() -> None:
    """A delivery whose record key is not its order key (the webhook's channel:delivery:<id> when
    the body had no order id) belongs to another partition: it goes on to order-events under its
    order key, and nothing is applied under the record's key."""
    body = shopify_payload()
    raw = RawOrderMessage(channel="shopify", topic="orders/create", delivery_id="d-10",
                          received_at=NOW, body=orjson.dumps(body).decode())
    ctx = _Ctx(Settings())
    assert await ingest_one(ctx, "shopify:delivery:d-10", raw) is None
    assert ctx.topics.sync_exceptions.sent == []
    [(key, event)] = ctx.topics.order_events.sent
    assert isinstance(event, OrderReceived) and key == event.order_key == "shopify:450789469"
